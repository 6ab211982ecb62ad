"""ONNX Runtime: runs any hgdeploy ONNX on the CPU (CUDA when its build has the provider), and
builds the CPU artifacts: the plugin-free fp32 ONNX and int8 as U8S8 Q/DQ (uint8 activations,
int8 per-channel weights: the form ONNX Runtime's x86 kernels run fast).

Why no fp16 build: ONNX Runtime's CPU provider has no fp16 convolution (it would insert casts
and run fp32). It still *runs* TensorRT's fp16 and int8 ONNX graphs, so parity can judge their
numerics on the CPU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hgdeploy.backends.base import SkipCell, quiet
from hgdeploy.backends.cpu_artifacts import (
    CpuArtifactBackend,
    calibration_feeds_or_none,
    describe,
    set_metadata,
)

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


ARTIFACT_TAGS = {"fp32": "ort-fp32", "int8": "ort-u8s8"}


class OnnxRuntimeBackend(CpuArtifactBackend):
    name = "onnxruntime"
    summary = "an ONNX for ONNX Runtime (CPU; CUDA provider when installed)"
    runs = ("fp32", "int8")
    builds = ("fp32", "int8")
    default_build = "fp32"
    artifact_suffix = ".onnx"
    cache_suffix = ".calib.json"
    sidecar_kind = "onnx"
    build_options = frozenset({"--max-ap-drop"})  # int8: layers kept in float (keep_layers)

    def artifact_tag(self, precision: str) -> str:
        return ARTIFACT_TAGS[precision]

    def calibration_methods(self) -> Mapping[str, object]:
        from hgdeploy.precision.onnxruntime_int8 import ORT_METHODS

        return ORT_METHODS

    def calibration_label(self, choice: CalibrationChoice) -> str:
        from hgdeploy.precision.onnxruntime_int8 import method_label

        return method_label(choice)

    def unavailable_reason(self) -> str | None:
        return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"

    def runner(self, request: RunRequest) -> BaseRunner:
        from hgdeploy.backends.onnx_checks import check_onnx_fits
        from hgdeploy.runners.onnxrt_runner import onnxruntime_runner

        artifact = Path(str(request.artifact))
        check_onnx_fits(request.spec, artifact, request.batch)
        return onnxruntime_runner(artifact, threads=request.threads)

    def bench_runner(self, context: RunContext, batch: int, precision: str) -> BaseRunner:
        import onnxruntime as ort

        from hgdeploy.runners.onnxrt_runner import onnxruntime_runner

        providers: list[Any] = ["CPUExecutionProvider"]
        if precision == "int8":
            if context.device != "cpu":
                raise SkipCell("the ONNX Runtime int8 (U8S8) model is a CPU target")
            path = context.built_artifact(self, "int8")
        else:
            if context.device == "cuda":
                if "CUDAExecutionProvider" not in ort.get_available_providers():
                    raise SkipCell(
                        "this onnxruntime build has no CUDAExecutionProvider (pip install "
                        "onnxruntime-gpu), so it would silently run on the CPU"
                    )
                # fp32 means IEEE fp32: the CUDA provider would otherwise run convs in TF32.
                providers.insert(0, ("CUDAExecutionProvider", {"use_tf32": "0"}))
            path = context.onnx()
        context.used[(self.name, precision)] = path
        return onnxruntime_runner(
            path, providers=providers, threads=context.threads, name=self.name
        )

    def build(self, request: BuildRequest, on_step: StepCallback = quiet) -> BuildResult:
        import onnx

        from hgdeploy.base.artifacts import artifact_files, sidecar_path

        precision = self.check_precision(request.precision)
        source = self.lowered(request, precision, on_step)
        fields: dict[str, Any] = {}
        model = source.lowered
        calibration = None
        if precision == "int8":
            from hgdeploy.precision import onnxruntime_int8
            from hgdeploy.precision.calibration import sized_for

            calibration = self.calibration(source, request)
            feeds = calibration_feeds_or_none(
                calibration, sized_for(source.spec, source.lowered), onnxruntime_int8.check_cache
            )
            on_step(
                "calibrating and quantizing (ONNX Runtime U8S8)" if feeds else "quantizing (cache)"
            )
            method, cache_format = calibration.method, onnxruntime_int8.CACHE_FORMAT
            with calibration.cache_to_write(method, cache_format) as cache:
                model = onnxruntime_int8.quantize_u8s8(
                    source.lowered,
                    feeds=feeds,
                    cache=cache,
                    write_cache=feeds is not None,
                    choice=calibration.choice,
                    keep=request.keep_layers or (),
                )
            fields["calibration"] = calibration.describe(method)
            fields["quantization"] = {
                "scheme": onnxruntime_int8.SCHEME,
                **onnxruntime_int8.qdq_summary(model),
                "kept_in_high_precision": list(request.keep_layers or ()),
            }
            if request.accuracy is not None:
                fields["accuracy_target"] = dict(request.accuracy)
        set_metadata(model, source.provenance, fields.get("quantization", {}).get("scheme"))
        with artifact_files(source.output) as pending:
            onnx.save_model(model, str(pending.tmp()))
            pending.describe({**source.provenance, **fields, "sha256": pending.sha256()})
        sidecar = sidecar_path(source.output)
        return describe(source.output, sidecar, calibration.cache if calibration else None)
