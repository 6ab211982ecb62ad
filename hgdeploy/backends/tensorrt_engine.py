"""TensorRT's identity (version, GPU) and the strongly typed engine build, with Polygraphy's
loaders.

This is the only place that drives the TensorRT builder, and it is deliberately thin: the
precision is already decided in the ONNX (TensorRT 11 has no FP16/INT8 builder flags), the
corner-pool plugins are registered first, and Polygraphy's loaders do the rest.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hgdeploy.backends.profile import BatchProfile
from hgdeploy.base.artifacts import artifact_files, sha256_file
from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.export_settings import INPUT_NAME
from hgdeploy.base.zoo import ModelSpec


@dataclass(frozen=True)
class BuildSettings:
    profile: BatchProfile
    workspace_gib: float | None = None  # None: TensorRT's default (the device memory)
    timing_cache: Path | None = None


def tensorrt_unavailable_reason() -> str | None:
    """None if TensorRT and a CUDA GPU are both here, else what is missing."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (needs an NVIDIA GPU machine: pip install -e '.[gpu]')"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    return None


def gpu_identity() -> dict[str, Any]:
    """What an engine is tied to: the GPU model and its compute capability."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {"name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


def require_tensorrt(prepared_onnx: Path) -> None:
    """One-line refusal naming what is missing and where the prepared ONNX is."""
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise HgDeployError(
            f"cannot build a TensorRT engine: {reason}; the prepared ONNX is {prepared_onnx} "
            "(build it on a GPU machine with the same command)"
        )


def build_engine(
    spec: ModelSpec,
    onnx_path: Path,
    output: Path,
    precision: str,
    settings: BuildSettings,
    sidecar_extra: dict[str, Any] | None = None,
) -> Path:
    """Parse `onnx_path` as a strongly typed network, build, and write the engine atomically."""
    require_tensorrt(onnx_path)
    import tensorrt as trt
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        Profile,
    )

    from hgdeploy.plugins.tensorrt_plugins import register_corner_pool_plugins

    plugins = register_corner_pool_plugins()
    low, opt, high = settings.profile.shapes(spec)
    pools = {}
    if settings.workspace_gib is not None:
        pools[trt.MemoryPoolType.WORKSPACE] = int(settings.workspace_gib * 2**30)
    timing_cache = str(settings.timing_cache) if settings.timing_cache else None
    config = CreateConfig(
        profiles=[Profile().add(INPUT_NAME, min=low, opt=opt, max=high)],
        memory_pool_limits=pools or None,
        load_timing_cache=timing_cache,
    )
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    build = EngineBytesFromNetwork(network, config=config, save_timing_cache=timing_cache)
    try:
        serialized = build()
    except Exception as exc:  # Polygraphy raises PolygraphyException with TensorRT's log
        first = first_line(exc)
        raise HgDeployError(f"TensorRT engine build failed: {first}") from None
    with artifact_files(output) as pending:
        pending.tmp().write_bytes(bytes(serialized))
        record = {
            "kind": "tensorrt-engine",
            "model": spec.name,
            "precision": precision,
            "tensorrt": trt.__version__,
            "gpu": gpu_identity(),
            "profile": settings.profile.to_json(),
            "input": INPUT_NAME,
            "onnx": str(onnx_path),
            "onnx_sha256": sha256_file(onnx_path),
            "plugins": plugins,
            "sha256": pending.sha256(),
            **(sidecar_extra or {}),
        }
        pending.describe(record)
    return output
