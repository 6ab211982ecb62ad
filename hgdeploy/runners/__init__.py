"""Backends behind one interface: Polygraphy runners (named inputs -> named outputs).

Parity and bench only ever call `activate()`, `infer(feed_dict)` and `deactivate()`, so adding
a backend never touches them.
"""

from __future__ import annotations

import importlib.util

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")


def backend_unavailable_reason(backend: str) -> str | None:
    """None if `backend` can run on this machine, else a short reason why not."""
    if backend == "torch":
        return None
    if backend == "onnxruntime":
        return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"
    if backend == "openvino":
        return None if importlib.util.find_spec("openvino") else "openvino is not installed"
    if backend == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            return (
                "TensorRT is not installed (needs an NVIDIA GPU machine: pip install -e '.[gpu]')"
            )
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is available"
        return None
    return f"unknown backend {backend!r}"
