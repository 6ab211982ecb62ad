"""INT8 to an accuracy target (`build --int8 --max-ap-drop X`): which layers to keep in high
precision so that the int8 deployment's AP on a held-out set is within X points of eager fp32.

Every candidate is scored by the same pipeline and COCOeval as `evaluate`. How a candidate is
made depends on the backend (`CANDIDATE_MAKERS`, one entry per backend that takes the flag):

* TensorRT: the Q/DQ graph is ours, so a layer is kept out of int8 by `int8.quantize_int8`'s
  `keep`; the graph is scored on ONNX Runtime (its numerics; the engine needs a GPU).
* ONNX Runtime U8S8 and OpenVINO (NNCF): the backend's own int8 build into a scratch directory
  with `BuildRequest.keep_layers` (ONNX Runtime's quantizer takes them as `nodes_to_exclude`,
  NNCF as its ignored scope), scored as the artifact it is; candidates reuse the first build's
  calibration cache where the backend says it serves kept layers (ONNX Runtime; NNCF's
  statistics do not: `Backend.cache_serves_kept_layers`).

NNCF's own `quantize_with_accuracy_control` is not used: it ranks by its own criterion and
calls a validation function on in-memory compiled models, which hgdeploy's pipelines (built on
artifacts) would need a second way to run; this way the three backends share one ranking, one
search and one metric.

The layers are ranked by `precision.sensitivity` (each conv/Add alone in hgdeploy's symmetric
int8, output error on the calibration images) only if plain int8 misses, and
`precision.fallback` bisects on how many of them to keep. The ranking is the same for every
backend: the layer names are the fp32 export's node names, which the lowering and ONNX
Runtime's pre-processing keep. Candidates live in a scratch directory; the build then runs as
usual with the chosen layers (recalibrating on the same images: every method is deterministic
on them), so a missed target writes nothing.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from hgdeploy.backends.base import BuildRequest
from hgdeploy.backends.build_job import check_build_outputs
from hgdeploy.backends.registry import get_backend
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.onnx_files import load_onnx
from hgdeploy.base.zoo import get_spec
from hgdeploy.evaluation.labeled_set import load_labeled_set
from hgdeploy.evaluation.run import Deployment, score_deployment
from hgdeploy.exporters.onnx_export import fp32_onnx_for
from hgdeploy.precision.calibration import (
    calibrate,
    calibration_feeds,
    read_calibration_cache,
    sized_for,
)
from hgdeploy.precision.calibration_methods import CalibrationChoice
from hgdeploy.precision.calibration_source import calibration_images, unpack
from hgdeploy.precision.fallback import fall_back_to_target
from hgdeploy.precision.sensitivity import layer_sensitivity
from hgdeploy.precision.tensorrt_graphs import feed_batch, prepare_precision

Step = Callable[[str], None]
# Images the ranking runs each layer on (its ranges come from every calibration image): every
# layer (HRNet has 418) is a graph of its own, run on each of them.
RANKING_IMAGES = 4


class CandidateMaker(Protocol):
    """Makes the int8 candidates of one backend inside a scratch directory."""

    scored_on: str  # what runs the candidates (the sidecar records it)

    def make(self, kept: Sequence[str]) -> Deployment:
        """The candidate with `kept` layers in high precision (the first call calibrates)."""

    def ranges(self, feeds: Sequence[dict[str, Any]]) -> Mapping[str, float]:
        """hgdeploy's amax per tensor for ranking the layers on `feeds` (after a `make`)."""


def int8_request_to_target(
    request: BuildRequest,
    annotations: Path,
    images: Path,
    max_ap_drop: float,
    on_step: Step = lambda text: None,
) -> BuildRequest:
    """`request` (an int8 build) with the layers to keep and the accuracy record, or a one-line
    error: a backend without the fallback, a set without labels, a target no fallback meets."""
    if request.backend not in CANDIDATE_MAKERS or request.precision != "int8":
        raise HgDeployError(
            f"--max-ap-drop applies to --int8 builds for --backend {' / '.join(CANDIDATE_MAKERS)}"
        )
    if not math.isfinite(max_ap_drop) or max_ap_drop < 0:
        raise HgDeployError(
            f"--max-ap-drop must be a finite number >= 0 AP points, got {max_ap_drop}"
        )
    backend = get_backend(request.backend)
    if request.calib_cache is not None and not backend.cache_serves_kept_layers:
        raise HgDeployError(
            f"--max-ap-drop on {backend.name} needs --calib-dir, not --calib-cache: its cache "
            "cannot serve a build that keeps layers in float"
        )
    spec = get_spec(request.model)
    labeled = load_labeled_set(annotations, images, spec)
    # The held-out set is read by every step of the search: the output may replace none of it,
    # and that is refused now, not after the search.
    held_out = [("--annotations", annotations), ("--images", images)]
    held_out += [("--images image", image.path) for image in labeled.images]
    request = dataclasses.replace(request, extra_inputs=(*request.extra_inputs, *held_out))
    check_build_outputs(request)
    fp32 = fp32_onnx_for(request.model, request.onnx, request.checkpoint)
    on_step("scoring eager fp32 on the held-out set")
    reference = _ap(score_deployment(spec, labeled, Deployment(), request.checkpoint, 0, None))
    target = reference - max_ap_drop / 100
    batches = request.calib_batches or backend.default_calib_batches
    with tempfile.TemporaryDirectory(prefix="hgdeploy-ap-target-") as scratch:
        maker = CANDIDATE_MAKERS[request.backend](
            dataclasses.replace(request, onnx=fp32, calib_batches=batches), Path(scratch), on_step
        )

        def score(kept: Sequence[str]) -> float:
            candidate = maker.make(kept)
            on_step(f"scoring int8 with {len(kept)} layers kept in high precision")
            return _ap(score_deployment(spec, labeled, candidate, request.checkpoint, 0, None))

        def rank() -> list[str]:
            on_step("ranking layers by int8 sensitivity")
            source = load_onnx(fp32)
            _, pixels = unpack(calibration_images(request.calib_dir, batches)[0])
            feeds = calibration_feeds(sized_for(spec, source), pixels, feed_batch(source))
            amax = maker.ranges(feeds)
            ranked = layer_sensitivity(source, amax, feeds[:RANKING_IMAGES], spec.output_names,
                                       spec=spec)  # fmt: skip
            return [s.layer for s in ranked]

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
        "scored_on": maker.scored_on,
    }
    return dataclasses.replace(request, keep_layers=tuple(result.kept_layers), accuracy=record)


class TensorRtGraphs:
    """TensorRT: the Q/DQ ONNX its engine would be built from, run on ONNX Runtime."""

    scored_on = "ONNX Runtime CPU running the Q/DQ graph"

    def __init__(self, request: BuildRequest, work: Path, on_step: Step) -> None:
        self._request, self._work, self._on_step = request, work, on_step
        self._cache: Path | None = None
        self._common: dict[str, Any] = {
            "calib_batches": request.calib_batches,
            "calib_choice": CalibrationChoice.from_options(
                request.calib_method, request.calib_percentile
            ),
            "high_precision": request.high_precision,
            "measure_quality": False,
        }

    def make(self, kept: Sequence[str]) -> Deployment:
        request, path = self._request, self._work / f"keep{len(kept)}.onnx"
        assert request.onnx is not None
        if self._cache is None:
            self._on_step("calibrating")
            prepared = prepare_precision(request.model, request.onnx, "int8", path,
                                         calib_dir=request.calib_dir,
                                         calib_cache=request.calib_cache, keep=kept,
                                         **self._common)  # fmt: skip
            self._cache = prepared.calibration_cache
        else:
            prepare_precision(request.model, request.onnx, "int8", path,
                              calib_cache=self._cache, keep=kept, **self._common)  # fmt: skip
        return Deployment("onnxruntime", path)

    def ranges(self, feeds: Sequence[dict[str, Any]]) -> Mapping[str, float]:
        """The build's own ranges (its method), from the cache the first `make` wrote."""
        assert self._cache is not None, "make() calibrates first"
        return read_calibration_cache(self._cache)["amax"]


class BackendBuilds:
    """A CPU backend's own int8 build (its tool's quantizer, `keep_layers` excluded from
    int8), scored as the artifact it is."""

    def __init__(self, request: BuildRequest, work: Path, on_step: Step) -> None:
        self._request, self._work, self._on_step = request, work, on_step
        self._backend = get_backend(request.backend)
        self._cache: Path | None = None
        self.scored_on = f"{request.backend} (the artifact itself)"

    def make(self, kept: Sequence[str]) -> Deployment:
        output = self._work / f"keep{len(kept)}{self._backend.artifact_suffix}"
        request = dataclasses.replace(
            self._request, output=output, keep_layers=tuple(kept), accuracy=None, force=False
        )
        if self._cache is not None:
            request = dataclasses.replace(request, calib_dir=None, calib_cache=self._cache)
        self._on_step(f"building int8 with {len(kept)} layers kept in high precision")
        result = self._backend.build(request, on_step=self._on_step)
        if self._cache is None and self._backend.cache_serves_kept_layers:
            self._cache = result.calibration_cache
        assert result.artifact is not None
        return Deployment(self._request.backend, result.artifact)

    def ranges(self, feeds: Sequence[dict[str, Any]]) -> Mapping[str, float]:
        """hgdeploy's own max calibration on the same images (the tool's cache has its own
        format and method; the ranking only needs each layer's int8 error)."""
        assert self._request.onnx is not None
        return calibrate(load_onnx(self._request.onnx), feeds)


CANDIDATE_MAKERS: dict[str, Callable[[BuildRequest, Path, Step], CandidateMaker]] = {
    "tensorrt": TensorRtGraphs,
    "onnxruntime": BackendBuilds,
    "openvino": BackendBuilds,
}


def _ap(run: Any) -> float:
    if "AP" not in run.metrics:
        raise HgDeployError(f"the held-out set gives no AP for {run.label}")
    return float(run.metrics["AP"])
