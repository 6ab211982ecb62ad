"""ONNX Runtime as a Polygraphy runner; plugin-form models are lowered on the fly.

ONNX Runtime has no kernels for the TensorRT corner-pool plugin ops, so a plugin-form model is
rewritten with the exact standard-op lowering before the session is built. Same weights, same
tensor names: what runs is the graph TensorRT would see, minus the plugin implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import onnxruntime as ort
from polygraphy.backend.onnxrt import OnnxrtRunner

from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.onnx_files import load_onnx
from hgdeploy.exporters.lowering import runnable_model


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build and machine have it, always with the CPU fallback."""
    available = ort.get_available_providers()
    preferred = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in preferred if p in available]


# ONNX Runtime's WeightBiasQuantization rewrites a Q/DQ Conv's float bias to int32 with scale
# x_scale * w_scale, computed in the graph's float type. With fp16 scales that product leaves
# fp16's range (1e-3 * 1e-4 < 2**-24) and the biases are destroyed: on the hourglass int8 graph
# with fp16 layers it measured relative L2 0.80 vs fp32 where the same graph without the pass
# gives 0.086 (0.088 with fp32 layers). TensorRT keeps biases in float, so the pass is off: ORT
# then runs the Q/DQ graphs as TensorRT reads them. Models that already carry int32 biases (ORT's
# own U8S8 quantization) are not affected.
DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


def session_builder(
    onnx_model: str | Path | onnx.ModelProto,
    providers: list[str] | None = None,
    threads: int | None = None,
) -> Callable[[], ort.InferenceSession]:
    """A lazy loader (Polygraphy style): builds the session when the runner activates."""

    def build() -> ort.InferenceSession:
        model = onnx_model if isinstance(onnx_model, onnx.ModelProto) else load_onnx(onnx_model)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Errors only: an fp16 Q/DQ graph makes the CPU provider warn once per scale it cannot
        # constant-fold (hundreds of lines); failures still raise.
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            return ort.InferenceSession(
                runnable_model(model).SerializeToString(),
                sess_options=options,
                providers=providers or default_providers(),
                disabled_optimizers=DISABLED_OPTIMIZERS,
            )
        except (ort.capi.onnxruntime_pybind11_state.Fail, RuntimeError) as exc:
            first = first_line(exc)
            raise HgDeployError(f"ONNX Runtime cannot load the model: {first}") from None

    return build


def onnxruntime_runner(
    onnx_model: str | Path | onnx.ModelProto,
    providers: list[str] | None = None,
    threads: int | None = None,
    name: str = "onnxruntime",
) -> OnnxrtRunner:
    return OnnxrtRunner(session_builder(onnx_model, providers, threads), name=name)
