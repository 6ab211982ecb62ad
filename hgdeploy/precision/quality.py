"""How far a reduced-precision model is from its fp32 source, in terms that matter downstream.

Elementwise tolerances say little about int8 (every element moves a bit); what users see is
whether the detector/pose decoder still finds the same peaks. So the report gives, per output,
the relative L2 error ``||ref - cand|| / ||ref||`` and, for heatmap outputs, peak agreement:

* CornerNet-family corner heatmaps (``tl_heat``/``br_heat``): the decoder's view. A 3x3
  max-pool NMS (the model's ``decode.kernel``), then the top-K (class, y, x) peaks per image
  with K the model's own ``decode.K`` (20 for Squeeze); agreement is the fraction of the
  reference's top-K found among the candidate's top-K.
* pose heatmaps (``heatmaps``): the per-joint argmax (every leading axis - image, stack,
  joint - is one heatmap); agreement is the fraction of heatmaps whose argmax pixel is equal.

Both models run on ONNX Runtime's CPU provider, plugin nodes lowered to standard ops. ORT CPU
has no fp16 kernels for most ops here (Conv included) and inserts Cast nodes around them, so an
fp16 model is measured with fp16 weights and fp16 tensors between ops but fp32 arithmetic inside
each op; TensorRT's fp16 kernels accumulate in fp32 as well, so this is close to what the
engine does. A Q/DQ model runs as fake quantization (DequantizeLinear to fp32, fp32 Conv): the
same rounding of weights and activations an int8 engine applies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.zoo import ModelSpec
from hgdeploy.runners.onnxrt_runner import session_builder

CORNER_HEATS = ("tl_heat", "br_heat")
POSE_HEATMAPS = ("heatmaps",)
DEFAULT_TOP_K = 20  # CornerNet-family models without decode settings (none today)


@dataclass(frozen=True)
class QualityRow:
    """One output's distance from the reference, over all the feeds."""

    output: str
    relative_l2: float  # ||ref - cand|| / ||ref||, over every element of every feed
    max_abs_error: float
    reference_max_abs: float
    peak_agreement: float | None = None  # None: not a heatmap output
    peak_metric: str | None = None  # how peak_agreement was computed


@dataclass
class QualityReport:
    model: str
    reference: str  # e.g. "fp32"
    candidate: str  # e.g. "int8"
    samples: int  # images compared
    rows: list[QualityRow] = field(default_factory=list)

    def row(self, output: str) -> QualityRow:
        for row in self.rows:
            if row.output == output:
                return row
        raise KeyError(output)

    def worst_relative_l2(self) -> float:
        return max(row.relative_l2 for row in self.rows)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def precision_quality(
    spec: ModelSpec,
    reference_model: onnx.ModelProto,
    candidate_model: onnx.ModelProto,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    reference: str = "fp32",
    candidate: str = "candidate",
    threads: int | None = None,
    count: int | None = None,
) -> QualityReport:
    """Run both models on every feed (ORT CPU) and compare each of the spec's outputs.

    ``count`` keeps only the first ``count`` images of the concatenated feeds: a static-batch
    model's last batch may be padded with repeated images, which would count twice.
    """
    if not feeds:
        raise HgDeployError("no inputs to compare the precisions on")
    outputs = list(spec.output_names)
    reference_runs = run_all(reference_model, feeds, outputs, threads)
    candidate_runs = run_all(candidate_model, feeds, outputs, threads)
    samples = sum(next(iter(feed.values())).shape[0] for feed in feeds)
    samples = min(samples, count) if count is not None else samples
    report = QualityReport(spec.name, reference, candidate, samples)
    for i, name in enumerate(outputs):
        ref = np.concatenate([run[i] for run in reference_runs])[:samples].astype(np.float64)
        cand = np.concatenate([run[i] for run in candidate_runs])[:samples].astype(np.float64)
        agreement, metric = heatmap_peak_agreement(spec, name, ref, cand)
        report.rows.append(
            QualityRow(
                output=name,
                relative_l2=float(np.linalg.norm(ref - cand) / max(np.linalg.norm(ref), 1e-30)),
                max_abs_error=float(np.abs(ref - cand).max()),
                reference_max_abs=float(np.abs(ref).max()),
                peak_agreement=agreement,
                peak_metric=metric,
            )
        )
    return report


def run_all(
    model: onnx.ModelProto,
    feeds: Sequence[dict[str, np.ndarray]],
    outputs: list[str],
    threads: int | None,
) -> list[list[np.ndarray]]:
    session = session_builder(model, ["CPUExecutionProvider"], threads)()
    try:
        return [session.run(outputs, dict(feed)) for feed in feeds]
    except (ort.capi.onnxruntime_pybind11_state.Fail, RuntimeError) as exc:
        first = first_line(exc)
        raise HgDeployError(f"ONNX Runtime cannot run the model: {first}") from None


def heatmap_peak_agreement(
    spec: ModelSpec, output: str, ref: np.ndarray, cand: np.ndarray
) -> tuple[float | None, str | None]:
    """(agreement, how it was computed) for a heatmap output; (None, None) for the others."""
    if output in CORNER_HEATS:
        k = spec.decode.K if spec.decode else DEFAULT_TOP_K
        kernel = spec.decode.kernel if spec.decode else 3
        return top_k_agreement(ref, cand, k, kernel), f"top-{k} corners after {kernel}x{kernel} NMS"
    if output in POSE_HEATMAPS:
        return argmax_agreement(ref, cand), "per-joint argmax"
    return None, None


def top_k_agreement(reference: np.ndarray, candidate: np.ndarray, k: int, kernel: int = 3) -> float:
    """Mean over images of |topk(ref) & topk(cand)| / k, on NMS-ed (N, C, H, W) heatmaps."""
    scores = []
    for ref, cand in zip(reference, candidate, strict=True):
        ref_top = set(_top_k(_nms(ref, kernel), k).tolist())
        cand_top = set(_top_k(_nms(cand, kernel), k).tolist())
        scores.append(len(ref_top & cand_top) / k)
    return float(np.mean(scores))


def argmax_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of heatmaps (every leading axis) whose argmax pixel matches."""
    h, w = reference.shape[-2:]
    ref = reference.reshape(-1, h * w).argmax(axis=1)
    cand = candidate.reshape(-1, h * w).argmax(axis=1)
    return float(np.mean(ref == cand))


def _top_k(heat: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the k largest values (ties broken by index, so the result is stable)."""
    flat = heat.ravel()
    k = min(k, flat.size)
    order = np.lexsort((np.arange(flat.size), -flat))
    return order[:k]


def _nms(heat: np.ndarray, kernel: int) -> np.ndarray:
    """Upstream `_nms`: keep values equal to their kernel x kernel max, zero the rest.

    Padding is -inf like max_pool2d's, on a (C, H, W) map of logits; the kept values stay
    logits, which rank the same as upstream's sigmoid scores.
    """
    pad = (kernel - 1) // 2
    h, w = heat.shape[-2:]
    padded = np.pad(heat, ((0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    pooled = np.full_like(heat, -np.inf)
    for dy in range(kernel):
        for dx in range(kernel):
            np.maximum(pooled, padded[:, dy : dy + h, dx : dx + w], out=pooled)
    return np.where(heat == pooled, heat, -np.inf)
