"""Where benchmark numbers come from: the device a run uses and the host it ran on."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from hgdeploy.base.errors import HgDeployError
from hgdeploy.bench.timing import available_cores


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise HgDeployError("--device cuda: no CUDA GPU is available to torch here")
    return device


def host_info(device: str, threads: int) -> dict[str, Any]:
    """Where the numbers come from: the CPU, the cores and threads used, the GPU if any."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores_available": available_cores(),
        "threads": threads,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
    }
    if device == "cuda":
        info["fp32_math"] = (
            "IEEE fp32 in fp32 cells: TF32 off for torch (cudnn/matmul "
            "fp32_precision 'ieee') and ONNX Runtime (use_tf32=0)"
        )
        info["torch_default_conv_fp32_precision"] = _conv_precision()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _conv_precision() -> str:
    import torch

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return str(conv.fp32_precision)
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
