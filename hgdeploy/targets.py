"""Deployment targets and the precisions each one builds: the single table `build-engine`,
`parity` and `bench` consult, so an impossible combination fails the same way everywhere.

* ``tensorrt`` (GPU): fp32, fp16 and int8 engines (int8 = symmetric Q/DQ, the form TensorRT fuses,
  over an fp16 graph by default).
* ``openvino`` (CPU): an OpenVINO IR at fp32, bf16 (OpenVINO's inference-precision hint, recorded
  with the IR) or int8 (post-training quantization with NNCF).
* ``onnxruntime`` (CPU): the plugin-free ONNX at fp32, or int8 as a Q/DQ model with uint8
  activations and int8 per-channel weights (U8S8), the form ONNX Runtime's x86 kernels run fast.

Why no fp16 on the CPU targets and no bf16 on TensorRT: ONNX Runtime's CPU provider has no fp16
convolution (it would insert casts and run fp32), OpenVINO's CPU fp16 needs AVX512-FP16/AMX-FP16
hardware, and the TensorRT path decides precision in the ONNX (see the TensorRT 11 notes), where
only fp16 and int8 conversions are implemented.
"""

from __future__ import annotations

from hgdeploy.errors import HgDeployError

TARGET_PRECISIONS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
    "onnxruntime": ("fp32", "int8"),
}
TARGETS: tuple[str, ...] = tuple(TARGET_PRECISIONS)
CPU_TARGETS: tuple[str, ...] = ("openvino", "onnxruntime")
# The precision a bare `build-engine --target T` builds: TensorRT's fastest accurate one; on the
# CPU, the one that needs neither calibration nor particular hardware.
DEFAULT_PRECISION: dict[str, str] = {"tensorrt": "fp16", "openvino": "fp32", "onnxruntime": "fp32"}
# TensorRT int8: the type of the layers the Q/DQ graph leaves unquantized (the first is the
# default, as in NVIDIA ModelOpt); see hgdeploy/precision/int8.py.
TENSORRT_INT8_HIGH_PRECISIONS: tuple[str, ...] = ("fp16", "fp32")
# The artifact-name tag of each CPU build, distinct per target so an ONNX Runtime U8S8 model is
# never mistaken for TensorRT's symmetric int8 Q/DQ ONNX (``*_int8.onnx``).
CPU_ARTIFACT_TAGS: dict[tuple[str, str], str] = {
    ("onnxruntime", "fp32"): "ort-fp32",
    ("onnxruntime", "int8"): "ort-u8s8",
    ("openvino", "fp32"): "openvino-fp32",
    ("openvino", "bf16"): "openvino-bf16",
    ("openvino", "int8"): "openvino-int8",
}


def check_target(target: str, precision: str | None = None) -> str:
    """The precision to build (the target's default if None); a one-line error if unsupported."""
    if target not in TARGET_PRECISIONS:
        raise HgDeployError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if precision is None:
        return DEFAULT_PRECISION[target]
    supported = TARGET_PRECISIONS[target]
    if precision not in supported:
        others = [t for t, p in TARGET_PRECISIONS.items() if precision in p]
        hint = f" ({precision} is built by --target {' / '.join(others)})" if others else ""
        raise HgDeployError(
            f"--target {target} builds {', '.join(supported)}, not {precision}{hint}"
        )
    return precision
