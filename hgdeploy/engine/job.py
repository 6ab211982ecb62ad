"""`hgdeploy build-engine`: fp32 ONNX -> precision-prepared ONNX -> TensorRT engine.

Every step before the TensorRT build runs on any CPU machine, so `--prepare-only` (and a build
attempted without TensorRT) still leaves the prepared ONNX, its sidecar and, for INT8, the
calibration cache ready to copy to a GPU machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hgdeploy.artifacts import read_sidecar
from hgdeploy.engine.build import BuildSettings, build_engine, require_tensorrt
from hgdeploy.errors import HgDeployError
from hgdeploy.exporters.onnx_export import fp32_onnx_for
from hgdeploy.precision.int8 import DEFAULT_HIGH_PRECISION
from hgdeploy.precision.prepare import PreparedModel, prepare_precision
from hgdeploy.zoo import get_spec

PRECISIONS = ("fp32", "fp16", "int8")
StepCallback = Callable[[str], None]


@dataclass(frozen=True)
class EngineRequest:
    model: str
    precision: str
    settings: BuildSettings
    onnx: Path | None = None  # an fp32 plugin-form ONNX; default: exported on demand
    checkpoint: Path | None = None
    output: Path | None = None
    calib_dir: Path | None = None
    calib_cache: Path | None = None
    calib_batches: int = 4
    high_precision: str | None = None  # int8: type of the unquantized layers (default fp16)
    prepare_only: bool = False

    @property
    def file_tag(self) -> str:
        """``int8`` for the default int8 graph, ``int8-fp32`` for one with fp32 layers."""
        if self.high_precision in (None, DEFAULT_HIGH_PRECISION):
            return self.precision
        return f"{self.precision}-{self.high_precision}"


@dataclass(frozen=True)
class EngineResult:
    prepared: PreparedModel
    engine: Path | None  # None with --prepare-only


def default_engine_path(prepared_onnx: Path, precision: str) -> Path:
    return prepared_onnx.with_name(f"{prepared_onnx.stem.split('_dyn')[0]}_{precision}.engine")


def run_build_engine(request: EngineRequest, on_step: StepCallback | None = None) -> EngineResult:
    """Prepare the precision-specific ONNX, then build the engine unless `prepare_only`."""
    step = on_step or (lambda _: None)
    if request.precision not in PRECISIONS:
        raise HgDeployError(f"precision must be one of {', '.join(PRECISIONS)}")
    spec = get_spec(request.model)
    fp32 = fp32_onnx_for(request.model, request.onnx, request.checkpoint, step)
    sidecar = read_sidecar(fp32)  # the model itself is checked by prepare_precision
    if sidecar is not None and sidecar.get("corner_pool") == "onnx":
        raise HgDeployError(f"{fp32} has lowered corner pools; build engines from the plugin form")
    prepared_path = fp32.with_name(f"{fp32.stem}_{request.file_tag}.onnx")
    step(f"preparing the {request.precision} ONNX")
    prepared = prepare_precision(
        spec.name,
        fp32,
        request.precision,
        prepared_path,
        calib_dir=request.calib_dir,
        calib_cache=request.calib_cache,
        calib_batches=request.calib_batches,
        high_precision=request.high_precision,
    )
    if request.prepare_only:
        return EngineResult(prepared, None)
    require_tensorrt(prepared.path)
    output = request.output or default_engine_path(fp32, request.file_tag)
    step(f"building the TensorRT engine {output} (this takes minutes)")
    engine = build_engine(
        spec,
        prepared.path,
        output,
        request.precision,
        request.settings,
        sidecar_extra={"source_onnx": str(fp32)},
    )
    return EngineResult(prepared, engine)
