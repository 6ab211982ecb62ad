"""Per-layer int8 sensitivity on the ONNX graph (ONNX Runtime, CPU), before any build.

TensorRT 11 has no per-layer precision flags, so a search for the layers that int8 hurts runs
on the Q/DQ graph instead: for each quantizable layer (a convolution or residual Add, as
`int8.layer_names` lists them) the graph with *only that layer* in int8 (everything else in
fp32) is run on the same inputs as the fp32 graph, and the layer is scored by the output
error it causes alone: the worst relative L2 over the outputs, and for heatmap outputs the peak
agreement of `quality`. Layers are ranked by that error, largest first: the order in which an
accuracy target falls them back to high precision (ModelOpt's sensitivity ranking; NNCF's
accuracy control ranks the same way by a metric).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from hgdeploy.base.zoo import ModelSpec
from hgdeploy.exporters.lowering import runnable_model
from hgdeploy.precision.int8 import layer_names, quantize_int8
from hgdeploy.precision.quality import heatmap_peak_agreement, run_all

LayerProgress = Callable[[int, int, str], None]  # (layers done, layers in all, the last one)


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    op_type: str
    relative_l2: float  # worst over the outputs, with only this layer in int8
    peak_agreement: float | None  # the heatmap output's, where the model has one

    def to_dict(self) -> dict:
        return asdict(self)


def layer_sensitivity(
    source: onnx.ModelProto,
    amax: Mapping[str, float],
    feeds: Sequence[dict[str, np.ndarray]],
    outputs: Sequence[str],
    *,
    spec: ModelSpec | None = None,
    layers: Sequence[str] | None = None,
    progress: LayerProgress | None = None,
    threads: int | None = None,
) -> list[LayerSensitivity]:
    """Each layer's error alone in int8 (default: every quantizable layer), largest first."""
    names = list(layers) if layers is not None else layer_names(source)
    everything = set(layer_names(source))
    op_types = {node.name: node.op_type for node in source.graph.node}
    reference = _outputs(runnable_model(source), feeds, outputs, threads)
    scores = []
    for done, layer in enumerate(names, start=1):
        alone = quantize_int8(source, amax, "fp32", keep=everything - {layer})
        candidate = _outputs(runnable_model(alone), feeds, outputs, threads)
        errors, agreement = [], None
        for name, ref, cand in zip(outputs, reference, candidate, strict=True):
            errors.append(float(np.linalg.norm(ref - cand) / max(np.linalg.norm(ref), 1e-30)))
            if spec is not None and agreement is None:
                agreement = heatmap_peak_agreement(spec, name, ref, cand)[0]
        scores.append(LayerSensitivity(layer, op_types.get(layer, "?"), max(errors), agreement))
        if progress is not None:
            progress(done, len(names), layer)
    return sorted(scores, key=lambda s: s.relative_l2, reverse=True)


def _outputs(
    model: onnx.ModelProto,
    feeds: Sequence[dict[str, np.ndarray]],
    outputs: Sequence[str],
    threads: int | None,
) -> list[np.ndarray]:
    """Each output over every feed, concatenated, as float64."""
    runs = run_all(model, feeds, list(outputs), threads)
    return [
        np.concatenate([run[i] for run in runs]).astype(np.float64) for i in range(len(outputs))
    ]
