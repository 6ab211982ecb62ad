"""How an activation's int8 range (amax, scale = amax / 127) is chosen from what calibration saw.

One registry entry per method, as TensorRT's and ModelOpt's calibrators name them:

* ``max``: the largest |x| seen. Exact, needs no histogram.
* ``percentile``: the |x| below which `percentile` % of the values lie (the histogram edge
  where the cumulative share first reaches it).
* ``entropy``: TensorRT's classic entropy calibrator (GTC 2017, "8-bit inference with
  TensorRT"): over candidate thresholds (histogram edge i >= 128), the KL divergence between
  the clipped histogram (outliers added to its last bin) and its quantization into 128 levels
  expanded back over the non-empty bins; the last threshold of least divergence wins.
* ``mse``: the threshold minimising the mean squared error of symmetric int8 fake
  quantization (round to nearest, clip to +-127) over the histogram's bin centres.

Histograms are of |x| with `HISTOGRAM_BINS` equal bins over [0, max|x|] (TensorRT's 2048);
zero values are counted in bin 0 like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hgdeploy.base.errors import HgDeployError

HISTOGRAM_BINS = 2048
QUANTIZED_LEVELS = 128  # int8's non-negative levels: what the entropy method quantizes into
DEFAULT_PERCENTILE = 99.99
INT8_MAX = 127


@dataclass(frozen=True)
class CalibrationMethod:
    name: str
    needs_histogram: bool
    choose: Callable[[np.ndarray, np.ndarray, float], float]  # (hist, edges, percentile) -> amax
    summary: str


def percentile_amax(hist: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    """The first upper bin edge at which the cumulative share of values reaches `percentile`."""
    if not 0 < percentile <= 100:
        raise HgDeployError(f"percentile must be in (0, 100], got {percentile}")
    total = hist.sum()
    if total == 0:
        return float(edges[-1])
    share = np.cumsum(hist, dtype=np.float64) / total
    index = int(np.searchsorted(share, percentile / 100 - 1e-12))
    return float(edges[min(index, len(hist) - 1) + 1])


def entropy_amax(hist: np.ndarray, edges: np.ndarray, _: float = 0.0) -> float:
    """TensorRT's entropy threshold (see the module doc), vectorised over the bins of each
    candidate; the candidates are edges QUANTIZED_LEVELS .. len(hist)."""
    counts = hist.astype(np.float64)
    if len(counts) <= QUANTIZED_LEVELS or counts.sum() == 0:
        return float(edges[-1])
    best_i, best_divergence = len(counts), np.inf
    for i in range(QUANTIZED_LEVELS, len(counts) + 1):
        reference = counts[:i].copy()
        reference[-1] += counts[i:].sum()
        level = np.minimum((np.arange(i) * QUANTIZED_LEVELS) // i, QUANTIZED_LEVELS - 1)
        used = counts[:i] > 0
        level_sum = np.bincount(level, weights=counts[:i], minlength=QUANTIZED_LEVELS)
        level_used = np.bincount(level, weights=used, minlength=QUANTIZED_LEVELS)
        expanded = np.where(used, level_sum[level] / np.maximum(level_used[level], 1), 0.0)
        divergence = _kl(reference, expanded)
        if divergence <= best_divergence:  # ties: the last (largest) threshold, as TensorRT
            best_i, best_divergence = i, divergence
    return float(edges[best_i])


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two unnormalised histograms; inf where p has mass and q none."""
    p = p / p.sum()
    total_q = q.sum()
    if total_q == 0:
        return np.inf
    q = q / total_q
    mass = p > 0
    if np.any(q[mass] == 0):
        return np.inf
    return float(np.sum(p[mass] * np.log(p[mass] / q[mass])))


def mse_amax(hist: np.ndarray, edges: np.ndarray, _: float = 0.0) -> float:
    """The candidate (every 8th edge from the 128th, then the last) of least histogram-weighted
    squared error of x -> clip(round(x / s), 127) * s with s = candidate / 127."""
    centres = (edges[:-1] + edges[1:]) / 2
    counts = hist.astype(np.float64)
    candidates = np.unique(np.append(edges[QUANTIZED_LEVELS::8], edges[-1]))
    candidates = candidates[candidates > 0]
    if len(candidates) == 0:
        return float(edges[-1])
    scales = candidates[:, None] / INT8_MAX
    quantized = np.clip(np.round(centres[None, :] / scales), 0, INT8_MAX) * scales
    errors = ((quantized - centres[None, :]) ** 2 * counts[None, :]).sum(axis=1)
    return float(candidates[int(np.argmin(errors))])


def _max_amax(hist: np.ndarray, edges: np.ndarray, _: float = 0.0) -> float:
    return float(edges[-1])


CALIBRATION_METHODS: dict[str, CalibrationMethod] = {
    m.name: m
    for m in (
        CalibrationMethod("max", False, _max_amax, "largest |x| seen"),
        CalibrationMethod("percentile", True, percentile_amax, "|x| below which p % lie"),
        CalibrationMethod("entropy", True, entropy_amax, "TensorRT's KL-divergence threshold"),
        CalibrationMethod("mse", True, mse_amax, "least int8 fake-quantization MSE"),
    )
}


def get_method(name: str) -> CalibrationMethod:
    if name not in CALIBRATION_METHODS:
        raise HgDeployError(
            f"unknown calibration method {name!r}: use one of {', '.join(CALIBRATION_METHODS)}"
        )
    return CALIBRATION_METHODS[name]


def method_label(name: str, percentile: float = DEFAULT_PERCENTILE) -> str:
    """What caches and sidecars record: the method, with its percentile where it has one."""
    return f"percentile {percentile:g}" if name == "percentile" else name


def absolute_histogram(values: np.ndarray, amax: float, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Counts of |values| in `bins` equal bins over [0, amax] (amax 0: everything in bin 0)."""
    magnitudes = np.abs(np.asarray(values, np.float32).ravel())
    if amax <= 0:
        return np.bincount(np.zeros(magnitudes.size, np.int64), minlength=bins)
    index = np.minimum((magnitudes * (bins / amax)).astype(np.int64), bins - 1)
    return np.bincount(index, minlength=bins)
