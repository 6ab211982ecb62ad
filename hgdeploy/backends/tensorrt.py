"""TensorRT 11 on a CUDA GPU: strongly typed engines at fp32, fp16 and int8 (symmetric Q/DQ, the
form TensorRT fuses, over an fp16 graph by default), with the corner pools as plugins.

Why no bf16: the TensorRT path decides precision in the ONNX (TensorRT 11 has no builder
precision flags), where only fp16 and int8 conversions are implemented. The build's CPU half
(`tensorrt_build`, `precision.tensorrt_graphs`) runs anywhere; the engine build and the runner
need TensorRT and a GPU (`tensorrt_engine`, `tensorrt_runner`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from hgdeploy.backends.base import Backend, BuildRequest, BuildResult, SkipCell, quiet

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner

    from hgdeploy.backends.base import RunContext, RunRequest, StepCallback


class TensorRtBackend(Backend):
    name = "tensorrt"
    summary = "a TensorRT 11 engine (NVIDIA GPU)"
    runs = ("fp32", "fp16", "int8")
    builds = ("fp32", "fp16", "int8")
    default_build = "fp16"  # TensorRT's fastest accurate precision
    default_calib_batches = 4
    build_options = frozenset(
        {
            "--batch",
            "--min-batch",
            "--opt-batch",
            "--max-batch",
            "--workspace",
            "--timing-cache",
            "--high-precision",
            "--max-ap-drop",
            "--prepare-only",
        }
    )
    artifact_suffixes = (".engine", ".plan", ".trt")
    artifact_kinds = {".engine": "a TensorRT engine", ".plan": "a TensorRT engine"}

    def companions(self, request: BuildRequest) -> tuple[Path, ...]:
        """The prepared ONNX (with --prepare-only it is --output itself; otherwise beside a
        given --onnx) and, for int8 without --calib-cache, its calibration cache."""
        from hgdeploy.backends.tensorrt_build import prepared_onnx_path
        from hgdeploy.precision.tensorrt_graphs import calibration_cache_path

        precision = request.precision or str(self.default_build)
        written: list[Path] = []
        if request.prepare_only and request.output is not None:
            prepared = request.output
        elif request.onnx is not None:
            prepared = prepared_onnx_path(request.onnx, precision, request.high_precision)
            written.append(prepared)
        else:
            return ()
        if precision == "int8" and request.calib_cache is None:
            written.append(calibration_cache_path(prepared))
        return tuple(written)

    def unavailable_reason(self) -> str | None:
        from hgdeploy.backends.tensorrt_engine import tensorrt_unavailable_reason

        return tensorrt_unavailable_reason()

    def runner(self, request: RunRequest) -> BaseRunner:
        from hgdeploy.backends.tensorrt_runner import tensorrt_runner

        artifact = Path(str(request.artifact))
        return tensorrt_runner(artifact, model=request.spec.name, batch=request.batch)

    def bench_runner(self, context: RunContext, batch: int, precision: str) -> BaseRunner:
        """The engine at --engine or the default path, if it was built at this precision for a
        profile holding this batch (otherwise the cell is skipped, saying how to build one)."""
        from hgdeploy.backends.profile import BatchProfile
        from hgdeploy.backends.tensorrt_runner import engine_record, tensorrt_runner

        if context.device != "cuda":
            raise SkipCell("TensorRT runs on a CUDA GPU only (--device cpu was asked for)")
        spec = context.spec
        path = context.engine or default_engine_path(spec.name, precision)
        context.used[(self.name, precision)] = path
        build = f"hgdeploy build-engine --model {spec.name} --{precision}"
        if not path.is_file():
            where = "--engine" if context.engine else "the default path"
            raise SkipCell(f"no engine: run {build} (nothing at {where} {path})")
        record = engine_record(path)
        built = record.get("precision", precision)
        if built != precision:
            raise SkipCell(f"{path} is a {built} engine, not {precision}")
        profile = BatchProfile(**record["profile"])
        if not profile.contains(batch):
            bound = "--max-batch" if batch > profile.max else "--min-batch"
            raise SkipCell(
                f"batch {batch} is outside {path}'s profile ({profile.min}..{profile.max}): "
                f"run {build} {bound} {batch}"
            )
        return tensorrt_runner(path, model=spec.name, batch=batch)

    def build(self, request: BuildRequest, on_step: StepCallback = quiet) -> BuildResult:
        from hgdeploy.backends.tensorrt_build import build_settings, run_build_engine
        from hgdeploy.base.artifacts import sidecar_path

        precision = self.check_precision(request.precision)
        settings = build_settings(request)
        result = run_build_engine(
            dataclasses.replace(request, precision=precision), settings, on_step
        )
        prepared = result.prepared
        lines = [f"prepared {precision} ONNX: {prepared.path} (sidecar {prepared.sidecar})"]
        if prepared.calibration_cache is not None:
            lines.append(f"calibration cache: {prepared.calibration_cache}")
        profile = settings.profile
        closing = ()
        if result.engine is not None:
            span = f"profile {profile.min}..{profile.max}, opt {profile.opt}"
            closing = (f"engine: {result.engine} ({span})",)
        return BuildResult(
            result.engine,
            None if result.engine is None else sidecar_path(result.engine),
            prepared.calibration_cache,
            prepared=prepared.path,
            quality=prepared.quality,
            summary=tuple(lines),
            closing=closing,
            precision=precision,
        )


def default_engine_path(name: str, precision: str) -> Path:
    """Where `hgdeploy build` puts an engine built from the default export:
    artifacts/NAME/NAME_<precision>.engine."""
    from hgdeploy.backends.tensorrt_build import default_engine_path as engine_beside
    from hgdeploy.exporters.onnx_export import SHARED_EXPORT, default_output

    return engine_beside(default_output(name, SHARED_EXPORT), precision)
