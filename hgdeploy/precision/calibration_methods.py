"""How an activation's int8 range (amax, scale = amax / 127) is chosen from what calibration saw.

One registry entry per method, as TensorRT's and ModelOpt's calibrators name them:

* ``max``: the largest |x| seen. Exact, needs no histogram.
* ``percentile``: the |x| below which `percentile` % of the values lie (the histogram edge
  where the cumulative share first reaches it).
* ``entropy``: TensorRT's classic entropy calibrator (GTC 2017, "8-bit inference with
  TensorRT"): over candidate thresholds (histogram edge i >= 128), the KL divergence between
  the clipped histogram (outliers added to its last bin) and its quantization into 128 levels
  expanded back over the non-empty bins; the last threshold of least divergence wins. Bin 0
  takes bin 1's count first (as ModelOpt does): with the zeros of a ReLU output counted, the
  trained HRNet stand-in's entropy ranges clipped so hard that its keypoint AP fell to 0.
* ``mse``: the threshold minimising the mean squared error of symmetric int8 fake
  quantization (round to nearest, clip to +-127) over the histogram's bin centres.

Histograms are of |x| with `HISTOGRAM_BINS` equal bins over [0, max|x|] (TensorRT's 2048);
zero values are counted in bin 0 like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    """TensorRT's entropy threshold (see the module doc) for candidates i = 128 .. len(hist),
    all at once. For candidate i with T values in all, O of them at or beyond edge i:
    p_j = c_j / T (the last bin also takes the O outliers); level k holds bins j with
    floor(128 j / i) = k, L_k values in U_k non-empty bins, and q_j = L_k / (U_k S) on those,
    S = T - O. So KL(p || q) = sum_j p_j log p_j - sum_k P_k log(L_k / (U_k S)) with P_k the
    p-mass of level k, from prefix sums; infinite where the last bin is empty but O is not."""
    counts = hist.astype(np.float64)
    if len(counts) > 1:  # as ModelOpt's entropy calibrator: zeros (post-ReLU) do not count
        counts[0] = counts[1]
    bins, levels = len(counts), QUANTIZED_LEVELS
    total = counts.sum()
    if bins <= levels or total == 0:
        return float(edges[-1])
    candidates = np.arange(levels, bins + 1)
    prefix = np.concatenate([[0.0], np.cumsum(counts)])
    used_prefix = np.concatenate([[0.0], np.cumsum(counts > 0)])
    xlogx = np.where(counts > 0, counts * np.log(np.where(counts > 0, counts, 1)), 0.0)
    xlogx_prefix = np.concatenate([[0.0], np.cumsum(xlogx)])
    # start of level k for candidate i: ceil(k i / 128); (candidates, levels + 1)
    starts = -(-(np.arange(levels + 1)[None, :] * candidates[:, None]) // levels)
    level_sum = np.diff(prefix[starts], axis=1)
    level_used = np.diff(used_prefix[starts], axis=1)
    inside = prefix[candidates]
    outliers = total - inside
    last = counts[candidates - 1] + outliers
    last_log = np.where(last > 0, last * np.log(np.where(last > 0, last, 1)), 0.0)
    p_log_p = (xlogx_prefix[candidates - 1] + last_log) / total - np.log(total)
    mass = level_sum.copy()
    mass[:, -1] += outliers
    filled = level_sum > 0
    safe = np.where(filled, level_sum / np.maximum(level_used, 1), 1.0)
    q_log = np.where(filled, np.log(safe) - np.log(inside)[:, None], 0.0)
    divergence = p_log_p - (mass * q_log).sum(axis=1) / total
    divergence[(outliers > 0) & (counts[candidates - 1] == 0)] = np.inf
    best = len(candidates) - 1 - int(np.argmin(divergence[::-1]))  # ties: the last, as TensorRT
    return float(edges[candidates[best]])


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


@dataclass(frozen=True)
class CalibrationChoice:
    """A build's `--calib-method` / `--calib-percentile`; `given` tells a default from a
    choice (a cache made by another method is refused only when a method was asked for)."""

    method: str = "max"
    percentile: float = DEFAULT_PERCENTILE
    given: bool = False

    @property
    def label(self) -> str:
        return method_label(self.method, self.percentile)

    @classmethod
    def from_options(cls, method: str | None, percentile: float | None) -> CalibrationChoice:
        """Check the flags together: one-line refusals for an unknown method, a percentile
        without the percentile method, or one outside (0, 100]."""
        if method is not None:
            get_method(method)
        if percentile is not None and method != "percentile":
            raise HgDeployError("--calib-percentile only applies to --calib-method percentile")
        if percentile is not None and not 0 < percentile <= 100:
            raise HgDeployError(f"--calib-percentile must be in (0, 100], got {percentile}")
        return cls(method or "max", DEFAULT_PERCENTILE if percentile is None else percentile,
                   method is not None)  # fmt: skip

    def check_supported(self, backend: str, supported: Mapping[str, object]) -> None:
        if self.method not in supported:
            raise HgDeployError(
                f"--calib-method {self.method} is not available for {backend} (it offers "
                f"{', '.join(supported)})"
            )
