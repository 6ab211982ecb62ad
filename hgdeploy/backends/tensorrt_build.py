"""`hgdeploy build --backend tensorrt`: fp32 ONNX -> precision-prepared ONNX -> TensorRT engine.

Every step before the TensorRT build runs on any CPU machine, so `--prepare-only` (and a build
attempted without TensorRT) still leaves the prepared ONNX, its sidecar and, for INT8, the
calibration cache ready to copy to a GPU machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hgdeploy.backends.base import BuildRequest, StepCallback, quiet
from hgdeploy.backends.profile import batch_profile
from hgdeploy.backends.tensorrt_engine import BuildSettings, build_engine, require_tensorrt
from hgdeploy.base.artifacts import read_sidecar
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import get_spec
from hgdeploy.exporters.onnx_export import fp32_onnx_for
from hgdeploy.precision.calibration_methods import CalibrationChoice
from hgdeploy.precision.calibration_source import check_calibration_options
from hgdeploy.precision.int8 import DEFAULT_HIGH_PRECISION, check_high_precision
from hgdeploy.precision.tensorrt_graphs import PreparedModel, prepare_precision


@dataclass(frozen=True)
class EngineResult:
    prepared: PreparedModel
    engine: Path | None  # None with --prepare-only


def file_tag(precision: str, high_precision: str | None) -> str:
    """``int8`` for the default int8 graph, ``int8-fp32`` for one with fp32 layers."""
    if high_precision in (None, DEFAULT_HIGH_PRECISION):
        return precision
    return f"{precision}-{high_precision}"


def prepared_onnx_path(fp32: Path, precision: str, high_precision: str | None) -> Path:
    """Where the precision-prepared ONNX of `fp32` is written (beside it) unless --prepare-only
    names it: ``model.onnx`` -> ``model_int8.onnx``."""
    return fp32.with_name(f"{fp32.stem}_{file_tag(precision, high_precision)}.onnx")


def default_engine_path(prepared_onnx: Path, tag: str) -> Path:
    return prepared_onnx.with_name(f"{prepared_onnx.stem.split('_dyn')[0]}_{tag}.engine")


def build_settings(request: BuildRequest) -> BuildSettings:
    """The profile and builder settings `request` asks for (zoo defaults where it is silent)."""
    profile = batch_profile(
        get_spec(request.model),
        request.batch,
        request.min_batch,
        request.opt_batch,
        request.max_batch,
    )
    return BuildSettings(profile, request.workspace_gib, request.timing_cache)


def _check_static_batch(fp32: Path, settings: BuildSettings) -> None:
    """A static-batch ONNX builds only a profile of exactly that batch (say so on the CPU,
    not after TensorRT parses it on a GPU machine)."""
    from hgdeploy.base.export_settings import INPUT_NAME
    from hgdeploy.base.onnx_files import input_dims, load_onnx

    batch = input_dims(load_onnx(fp32), INPUT_NAME)[0]
    profile = settings.profile
    if isinstance(batch, int) and batch > 0 and (profile.min, profile.max) != (batch, batch):
        raise HgDeployError(
            f"{fp32} has a static batch of {batch}, so its profile can only be {batch}..{batch} "
            f"(asked {profile.min}..{profile.max}): use --batch {batch} or export with "
            "--dynamic-batch"
        )


def run_build_engine(
    request: BuildRequest,
    settings: BuildSettings | None = None,
    on_step: StepCallback = quiet,
) -> EngineResult:
    """Prepare the precision-specific ONNX, then build the engine unless `prepare_only`."""
    from hgdeploy.backends.tensorrt import TensorRtBackend

    backend = TensorRtBackend()
    precision = backend.check_precision(request.precision)
    # Before any export: flags that cannot apply, as every build refuses them.
    choice = CalibrationChoice.from_options(request.calib_method, request.calib_percentile)
    check_calibration_options(
        precision, request.calib_dir, request.calib_cache, request.calib_batches, choice
    )
    check_high_precision(precision, request.high_precision)
    settings = settings or build_settings(request)
    spec = get_spec(request.model)
    fp32 = fp32_onnx_for(request.model, request.onnx, request.checkpoint, on_step)
    sidecar = read_sidecar(fp32)  # the model itself is checked by prepare_precision
    if sidecar is not None and sidecar.get("corner_pool") == "onnx":
        raise HgDeployError(f"{fp32} has lowered corner pools; build engines from the plugin form")
    _check_static_batch(fp32, settings)
    tag = file_tag(precision, request.high_precision)
    prepared_path = prepared_onnx_path(fp32, precision, request.high_precision)
    if request.prepare_only and request.output is not None:
        if request.output.suffix != ".onnx":
            raise HgDeployError(
                f"with --prepare-only, --output names the prepared ONNX (NAME.onnx), not "
                f"{request.output.name}"
            )
        prepared_path = request.output
    on_step(f"preparing the {precision} ONNX")
    prepared = prepare_precision(
        spec.name,
        fp32,
        precision,  # type: ignore[arg-type]
        prepared_path,
        calib_dir=request.calib_dir,
        calib_cache=request.calib_cache,
        calib_batches=(
            backend.default_calib_batches
            if request.calib_batches is None
            else request.calib_batches
        ),
        high_precision=request.high_precision,
        calib_choice=choice,
        keep=request.keep_layers or (),
        accuracy=request.accuracy,
    )
    if request.prepare_only:
        return EngineResult(prepared, None)
    require_tensorrt(prepared.path)
    output = request.output or default_engine_path(fp32, tag)
    on_step(f"building the TensorRT engine {output} (this takes minutes)")
    engine = build_engine(
        spec,
        prepared.path,
        output,
        precision,
        settings,
        sidecar_extra={"source_onnx": str(fp32)},
    )
    return EngineResult(prepared, engine)
