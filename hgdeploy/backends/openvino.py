"""OpenVINO on the CPU: runs an ONNX (plugin form lowered) or an IR, and builds IR at fp32, bf16
(OpenVINO's inference-precision hint, recorded with the IR) or int8 (NNCF post-training
quantization, `precision.nncf_int8`).

Why no fp16: OpenVINO's CPU fp16 needs AVX512-FP16/AMX-FP16 hardware. "default" runs with no
precision hint (OpenVINO's own choice for this CPU): the peer every CPU cell is compared with.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hgdeploy.backends.base import SkipCell, quiet
from hgdeploy.backends.cpu_artifacts import (
    CpuArtifactBackend,
    calibration_feeds_or_none,
    describe,
)
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.precisions import get_precision

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner

    from hgdeploy.backends.base import (
        BuildRequest,
        BuildResult,
        RunContext,
        RunRequest,
        StepCallback,
    )
    from hgdeploy.precision.calibration_methods import CalibrationChoice


class OpenVinoBackend(CpuArtifactBackend):
    name = "openvino"
    summary = "an OpenVINO IR for the CPU"
    runs = ("fp32", "bf16", "int8", "default")
    builds = ("fp32", "bf16", "int8")
    default_build = "fp32"
    artifact_suffixes = (".onnx", ".xml")
    artifact_kinds = {".onnx": "an ONNX model", ".xml": "an OpenVINO IR"}
    peer_precision = "default"
    artifact_suffix = ".xml"
    cache_suffix = ".nncf-stats"
    sidecar_kind = "openvino-ir"
    build_options = frozenset({"--max-ap-drop"})  # int8: layers kept in float (keep_layers)
    # NNCF's statistics depend on what is quantized: with layers ignored it asks for points a
    # plain build never collected ("Not found statistics for ..._ConvolutionBackpropData",
    # squeeze with 4 layers kept), so a build that keeps layers collects its own.
    cache_serves_kept_layers = False

    def artifact_tag(self, precision: str) -> str:
        return f"openvino-{precision}"

    def companions(self, request: BuildRequest) -> tuple[Path, ...]:
        """The IR's weights (``.bin``) besides the statistics cache."""
        if request.output is None:
            return ()
        return (request.output.with_suffix(".bin"), *super().companions(request))

    def calibration_label(self, choice: CalibrationChoice) -> str:
        """NNCF's MinMax statistics (its range estimators are not passed through yet, so
        `calibration_methods` keeps the default: max only)."""
        from hgdeploy.precision.nncf_int8 import METHOD

        return METHOD

    def unavailable_reason(self) -> str | None:
        return None if importlib.util.find_spec("openvino") else "openvino is not installed"

    def runner(self, request: RunRequest) -> BaseRunner:
        """bf16 is a compile hint; int8 (an NNCF IR) and fp16 live in the artifact, whose
        non-quantized ops run at fp32."""
        from hgdeploy.backends.onnx_checks import check_onnx_fits
        from hgdeploy.runners.openvino_runner import openvino_runner

        artifact = Path(str(request.artifact))
        if artifact.suffix != ".xml":  # an IR keeps the export's dynamic batch
            check_onnx_fits(request.spec, artifact, request.batch)
        hint = "bf16" if request.precision == "bf16" else "fp32"
        return openvino_runner(artifact, precision=hint, threads=request.threads)

    def bench_runner(self, context: RunContext, batch: int, precision: str) -> BaseRunner:
        """The dynamic-batch ONNX at fp32 / bf16 (a compile hint) / default (no hint), or the
        NNCF int8 IR."""
        from hgdeploy.runners.openvino_runner import cpu_supports_bf16, openvino_runner

        if context.device != "cpu":
            raise SkipCell(f"OpenVINO runs on the CPU only here (--device {context.device})")
        if precision == "bf16" and not cpu_supports_bf16():
            raise SkipCell("this CPU has no native bf16 (AVX512_BF16 or AMX) for OpenVINO")
        path = context.built_artifact(self, "int8") if precision == "int8" else context.onnx()
        context.used[(self.name, precision)] = path
        return openvino_runner(path, precision=precision, threads=context.threads, name=self.name)

    def judged_precision(self, runner: BaseRunner, precision: str) -> str:
        """ "default" is judged by what OpenVINO compiled to (bf16 on a CPU with bf16)."""
        compiled = getattr(runner, "compiled_precision", None)
        if get_precision(precision).tolerance is not None or compiled is None:
            return precision
        return {"bf16": "bf16", "f16": "fp16"}.get(compiled, "fp32")

    def build(self, request: BuildRequest, on_step: StepCallback = quiet) -> BuildResult:
        from hgdeploy.backends import openvino_ir
        from hgdeploy.base.artifacts import artifact_files, sidecar_path

        precision = self.check_precision(request.precision)
        source = self.lowered(request, precision, on_step)
        on_step("converting to OpenVINO IR")
        model = openvino_ir.ov_model_from_onnx(source.lowered)
        hint = "bf16" if precision == "bf16" else "f32"
        fields: dict[str, Any] = {"inference_precision_hint": hint}
        calibration = None
        if precision == "int8":
            from hgdeploy.precision import nncf_int8
            from hgdeploy.precision.calibration import sized_for

            calibration = self.calibration(source, request)
            feeds = calibration_feeds_or_none(
                calibration, sized_for(source.spec, source.lowered), nncf_int8.check_cache
            )
            on_step(
                "collecting statistics and quantizing (NNCF)" if feeds else "quantizing (cache)"
            )
            method, cache_format = calibration.method, nncf_int8.STATISTICS_FORMAT
            kept = list(request.keep_layers or ())
            if kept and calibration.from_cache:
                raise HgDeployError(
                    "an NNCF statistics cache cannot serve a build that keeps layers in float "
                    "(its statistics depend on what is quantized): give --calib-dir instead"
                )
            ops = nncf_int8.ov_ops_for_layers(source.lowered, model, kept)
            with calibration.cache_to_write(method, cache_format, directory=True) as statistics:
                model = nncf_int8.quantize_nncf(
                    model,
                    feeds=feeds,
                    statistics=statistics,
                    write_statistics=feeds is not None,
                    keep=ops,
                )
            fields["calibration"] = calibration.describe(method)
            fields["quantization"] = {"scheme": nncf_int8.SCHEME, "kept_in_high_precision": kept}
            if request.accuracy is not None:
                fields["accuracy_target"] = dict(request.accuracy)
        output = source.output
        bin_path = output.with_suffix(".bin")
        # The .bin before the .xml: an .xml in place always has its weights beside it.
        with artifact_files(output, bin_path) as pending:
            openvino_ir.save_ir(model, pending.tmp(output), pending.tmp(bin_path), precision)
            record = {
                **source.provenance,
                **fields,
                "weights_file": bin_path.name,
                "sha256": pending.sha256(output),
                "weights_sha256": pending.sha256(bin_path),
            }
            pending.describe(record)
        sidecar = sidecar_path(output)
        return describe(output, sidecar, calibration.cache if calibration else None)
