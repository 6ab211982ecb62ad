"""INT8 to an accuracy target (`build --int8 --max-ap-drop X`): which layers to keep in high
precision so that the int8 deployment's AP on a held-out set is within X points of eager fp32.

The TensorRT Q/DQ graph is ours, so a layer can be kept out of int8 (`int8.quantize_int8`'s
`keep`); every candidate graph is scored by the same pipeline and COCOeval as `evaluate`, run
on ONNX Runtime (the graph's numerics; the engine itself needs a GPU). The layers are ranked by
`precision.sensitivity` only if plain int8 misses, and `precision.fallback` bisects on how many
of them to keep. Candidates live in a scratch directory; the build then runs as usual with the
chosen layers (recalibrating on the same images: every method is deterministic on them), so a
missed target writes nothing.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hgdeploy.backends.base import BuildRequest
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.onnx_files import load_onnx
from hgdeploy.base.zoo import get_spec
from hgdeploy.evaluation.labeled_set import load_labeled_set
from hgdeploy.evaluation.run import Deployment, score_deployment
from hgdeploy.exporters.onnx_export import fp32_onnx_for
from hgdeploy.precision.calibration import calibration_feeds, read_calibration_cache, sized_for
from hgdeploy.precision.calibration_methods import CalibrationChoice
from hgdeploy.precision.calibration_source import calibration_images, unpack
from hgdeploy.precision.fallback import fall_back_to_target
from hgdeploy.precision.sensitivity import layer_sensitivity
from hgdeploy.precision.tensorrt_graphs import feed_batch, prepare_precision

Step = Callable[[str], None]


def int8_request_to_target(
    request: BuildRequest,
    annotations: Path,
    images: Path,
    max_ap_drop: float,
    on_step: Step = lambda text: None,
) -> BuildRequest:
    """`request` (a TensorRT int8 build) with the layers to keep and the accuracy record, or a
    one-line error: a set without labels, a target no fallback meets (with how close)."""
    if request.backend != "tensorrt" or request.precision != "int8":
        raise HgDeployError("--max-ap-drop applies to --backend tensorrt --int8 builds")
    if max_ap_drop < 0:
        raise HgDeployError(f"--max-ap-drop must be >= 0 AP points, got {max_ap_drop}")
    spec = get_spec(request.model)
    labeled = load_labeled_set(annotations, images, spec)
    fp32 = fp32_onnx_for(request.model, request.onnx, request.checkpoint)
    on_step("scoring eager fp32 on the held-out set")
    reference = _ap(score_deployment(spec, labeled, Deployment(), request.checkpoint, 0, None))
    target = reference - max_ap_drop / 100
    choice = CalibrationChoice.from_options(request.calib_method, request.calib_percentile)
    batches = request.calib_batches or 4
    with tempfile.TemporaryDirectory(prefix="hgdeploy-ap-target-") as scratch:
        work = Path(scratch)
        common: dict[str, Any] = {"calib_batches": batches, "calib_choice": choice,
                                  "high_precision": request.high_precision,
                                  "measure_quality": False}  # fmt: skip
        on_step("calibrating")
        plain = prepare_precision(spec.name, fp32, "int8", work / "keep0.onnx",
                                  calib_dir=request.calib_dir, calib_cache=request.calib_cache,
                                  **common)  # fmt: skip
        cache = plain.calibration_cache

        def score(kept: Sequence[str]) -> float:
            path = work / f"keep{len(kept)}.onnx"
            if kept:
                prepare_precision(spec.name, fp32, "int8", path, calib_cache=cache, keep=kept,
                                  **common)  # fmt: skip
            on_step(f"scoring int8 with {len(kept)} layers kept in high precision")
            run = score_deployment(spec, labeled, Deployment("onnxruntime", path),
                                   request.checkpoint, 0, None)  # fmt: skip
            return _ap(run)

        def rank() -> list[str]:
            on_step("ranking layers by int8 sensitivity")
            source = load_onnx(fp32)
            amax = read_calibration_cache(cache)["amax"]
            _, pixels = unpack(calibration_images(request.calib_dir, batches)[0])
            feeds = calibration_feeds(sized_for(spec, source), pixels, feed_batch(source))
            return [s.layer for s in layer_sensitivity(source, amax, feeds, spec.output_names,
                                                       spec=spec)]  # fmt: skip

        result = fall_back_to_target(rank, score, target)
    record = {
        "metric": "AP",
        "annotations": str(annotations),
        "images": str(images),
        "eager_fp32": reference,
        "max_drop_points": max_ap_drop,
        "target": target,
        "reached": result.score,
        "drop_points": (reference - result.score) * 100,
        "kept_layers": result.kept_layers,
        "steps": [dataclasses.asdict(step) for step in result.steps],
        "scored_on": "ONNX Runtime CPU running the Q/DQ graph",
    }
    return dataclasses.replace(request, keep_layers=tuple(result.kept_layers), accuracy=record)


def _ap(run: Any) -> float:
    if "AP" not in run.metrics:
        raise HgDeployError(f"the held-out set gives no AP for {run.label}")
    return float(run.metrics["AP"])
