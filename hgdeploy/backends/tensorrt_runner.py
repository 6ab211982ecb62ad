"""A TensorRT engine as a Polygraphy runner, refusing engines it cannot run correctly.

A serialized engine is only valid for the TensorRT version and GPU model that built it, and only
for batches inside its optimization profile; each mismatch is a one-line error up front instead
of a deserialization failure or a shape error deep inside TensorRT.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hgdeploy.backends.profile import BatchProfile
from hgdeploy.backends.tensorrt_engine import gpu_identity, tensorrt_unavailable_reason
from hgdeploy.base.artifacts import verify_sidecar
from hgdeploy.base.errors import HgDeployError

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner


def engine_record(engine: Path) -> dict[str, Any]:
    if not engine.is_file():
        raise HgDeployError(f"engine not found: {engine}")
    record = verify_sidecar(engine)
    if record is None or record.get("kind") != "tensorrt-engine":
        raise HgDeployError(
            f"{engine} has no engine sidecar ({engine}.json); rebuild it with hgdeploy build-engine"
        )
    return record


def check_engine_compatible(
    record: dict[str, Any],
    engine: Path,
    *,
    model: str,
    batch: int,
    tensorrt_version: str,
    gpu_name: str,
) -> None:
    """Pure checks (testable without TensorRT): model, TensorRT version, GPU, batch profile."""
    if record.get("model") != model:
        raise HgDeployError(f"{engine} was built for {record.get('model')!r}, not {model!r}")
    if record.get("tensorrt") != tensorrt_version:
        raise HgDeployError(
            f"{engine} was built by TensorRT {record.get('tensorrt')}, this is TensorRT "
            f"{tensorrt_version}; rebuild it with hgdeploy build-engine"
        )
    built_on = record.get("gpu", {}).get("name")
    if built_on != gpu_name:
        raise HgDeployError(
            f"{engine} was built on {built_on}, this GPU is {gpu_name}; rebuild it here"
        )
    profile = BatchProfile(**record["profile"])
    if not profile.contains(batch):
        raise HgDeployError(
            f"batch {batch} is outside {engine}'s profile (min {profile.min}, max {profile.max})"
        )


def tensorrt_runner(engine: str | Path, *, model: str, batch: int) -> BaseRunner:
    """Polygraphy's TrtRunner over the engine, after the compatibility checks."""
    engine = Path(engine)
    record = engine_record(engine)
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise HgDeployError(f"cannot run {engine}: {reason}")
    import tensorrt as trt
    from polygraphy.backend.trt import EngineFromPath, TrtRunner

    from hgdeploy.plugins.tensorrt_plugins import register_corner_pool_plugins

    check_engine_compatible(
        record,
        engine,
        model=model,
        batch=batch,
        tensorrt_version=trt.__version__,
        gpu_name=gpu_identity()["name"],
    )
    register_corner_pool_plugins()
    return TrtRunner(EngineFromPath(str(engine)), name="tensorrt")
