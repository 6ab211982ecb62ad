"""Build a pipeline from a model name and (optionally) a backend + artifact: the Python API.

    pipeline = build_pipeline("squeeze", backend="onnxruntime", artifact="squeeze_b1.onnx")
    detections = pipeline([image_rgb])  # list of Detections in image pixels

Without an artifact the eager model runs (synthetic weights of `seed`, or `checkpoint`), at
upstream's native input size where upstream has one. The network stage is the backend's own
runner (the one parity checks), so one pipeline serves every backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hgdeploy.backends.base import RunRequest
from hgdeploy.backends.registry import get_backend, reference_backend
from hgdeploy.base.artifacts import verify_sidecar
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.export_settings import INPUT_NAME
from hgdeploy.base.onnx_files import METADATA_MODEL_KEY
from hgdeploy.base.zoo import ModelSpec, get_spec
from hgdeploy.pipelines.network import Network

EAGER_BATCH = 8  # the eager model takes any batch; this bounds one call's memory


def build_pipeline(
    name: str,
    *,
    backend: str | None = None,
    artifact: str | Path | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    flip: bool | None = None,
    threads: int | None = None,
) -> Any:
    """The model's test-time pipeline with its network on `backend` running `artifact`.

    `flip`: None keeps upstream's setting (flip test on for cornernet, hrnet, hourglass)."""
    spec = get_spec(name)
    network = make_network(spec, backend, artifact, checkpoint, seed, threads)
    return pipeline_for(spec, network, flip)


# model -> (pipeline module:class, upstream's flip test default; None: the pipeline has none)
PIPELINES: dict[str, tuple[str, bool | None]] = {
    "cornernet": ("cornernet:CornerNetPipeline", True),
    "squeeze": ("cornernet:CornerNetPipeline", False),
    "saccade": ("saccade:SaccadePipeline", None),
    "hrnet": ("hrnet:HrnetPipeline", True),
    "hourglass": ("hourglass:HourglassPipeline", True),
}


def pipeline_for(spec: ModelSpec, network: Network, flip: bool | None = None) -> Any:
    """The model's pipeline around `network`; `flip` None keeps upstream's setting."""
    cls = pipeline_class(spec)
    if upstream_flip(spec) is None:
        return cls(spec, network)
    return cls(spec, network, flip=upstream_flip(spec) if flip is None else flip)


def pipeline_class(spec: ModelSpec) -> type:
    """The class of the model's test-time pipeline (imported on demand)."""
    import importlib

    if spec.name not in PIPELINES:
        raise HgDeployError(f"{spec.name} has no test-time pipeline")
    module, attr = PIPELINES[spec.name][0].split(":")
    return getattr(importlib.import_module(f"hgdeploy.pipelines.{module}"), attr)


def upstream_flip(spec: ModelSpec) -> bool | None:
    """Whether upstream's test adds the flipped image (None: the pipeline has no flip test)."""
    if spec.name not in PIPELINES:
        raise HgDeployError(f"{spec.name} has no test-time pipeline")
    return PIPELINES[spec.name][1]


def make_network(
    spec: ModelSpec,
    backend: str | None,
    artifact: str | Path | None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> Network:
    """The network stage: the eager model, or `backend`'s runner for `artifact`."""
    if artifact is None:
        if backend not in (None, reference_backend().name):
            raise HgDeployError(f"--backend {backend} needs --artifact PATH")
        request = RunRequest(Path(checkpoint) if checkpoint else None, spec, 1, seed=seed)
        runner = reference_backend().runner(request)
        return Network(runner, EAGER_BATCH, False, None, spec.layout, reference_backend().name)
    artifact = Path(artifact)
    if not artifact.exists():
        raise HgDeployError(f"artifact not found: {artifact}")
    chosen = get_backend(backend or _backend_for(artifact))
    if chosen.is_reference:
        raise HgDeployError(f"--backend {chosen.name} runs the eager model; omit --artifact")
    reason = chosen.unavailable_reason()
    if reason is not None:
        raise HgDeployError(f"--backend {chosen.name} cannot run here: {reason}")
    chosen.check_artifact_suffix(artifact)
    record = verify_sidecar(artifact) if artifact.is_file() else None
    _check_model(spec, artifact, record)
    precision = (record or {}).get("precision", "fp32")
    batch = _static_onnx_batch(artifact) or 1
    runner = chosen.runner(RunRequest(artifact, spec, batch, precision, threads=threads))
    runner.activate()
    batch, static, input_hw = _input_geometry(spec, runner.get_input_metadata(), artifact)
    return Network(runner, batch, static, input_hw, spec.layout, chosen.name)


def _static_onnx_batch(artifact: Path) -> int | None:
    """An ONNX's static batch (the runners check a request against it), else None."""
    if artifact.suffix != ".onnx":
        return None
    import onnx

    from hgdeploy.base.onnx_files import input_dims

    try:
        dims = input_dims(onnx.load(str(artifact), load_external_data=False), INPUT_NAME)
    except Exception:  # unreadable or foreign: the backend's runner says why, in one line
        return None
    return dims[0] if isinstance(dims[0], int) else None


def _backend_for(artifact: Path) -> str:
    from hgdeploy.backends.registry import backend_for_suffix

    owner = backend_for_suffix(artifact.suffix)
    if owner is None:
        raise HgDeployError(f"cannot tell which backend runs {artifact}; pass --backend")
    return owner


def _check_model(spec: ModelSpec, artifact: Path, record: dict | None) -> None:
    """Refuse an artifact made from another zoo model (its sidecar or ONNX metadata says)."""
    made_from = (record or {}).get("model")
    if made_from is None and artifact.suffix == ".onnx":
        import onnx

        try:
            proto = onnx.load(str(artifact), load_external_data=False)
        except Exception:  # the runner reports an unreadable file in its own words
            return
        made_from = {p.key: p.value for p in proto.metadata_props}.get(METADATA_MODEL_KEY)
    if made_from is not None and made_from != spec.name:
        raise HgDeployError(f"{artifact} was made from {made_from!r}, not {spec.name!r}")


def _input_geometry(
    spec: ModelSpec, metadata: Any, artifact: Path
) -> tuple[int, bool, tuple[int, int]]:
    """(batch per call, whether that batch is fixed, input H x W) from the runner's input."""
    if INPUT_NAME not in metadata:
        raise HgDeployError(f"{artifact} has no input named {INPUT_NAME!r}; is it a {spec.name}?")
    shape = list(metadata[INPUT_NAME].shape)
    if len(shape) != 4:
        raise HgDeployError(f"{artifact}: input {INPUT_NAME} has rank {len(shape)}, not 4")
    dims = shape[2:4] if spec.layout == "NCHW" else shape[1:3]
    channels = shape[1] if spec.layout == "NCHW" else shape[3]
    if channels != 3 or not all(isinstance(d, int) and d > 0 for d in dims):
        raise HgDeployError(
            f"{artifact}: input shape {shape} is not a {spec.layout} image batch of {spec.name}"
        )
    batch = shape[0]
    if isinstance(batch, int) and batch > 0:
        return batch, True, (int(dims[0]), int(dims[1]))
    return spec.default_batch, False, (int(dims[0]), int(dims[1]))
