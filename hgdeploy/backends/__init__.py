"""Backends: where a model runs (torch | onnxruntime | openvino | tensorrt), one module each.

* `base`: the `Backend` interface, `BuildRequest`/`BuildResult`, the benchmark `RunContext`;
* `registry`: name -> backend; every command's `--backend` choices and precision checks;
* `pytorch`, `onnxruntime`, `openvino`, `tensorrt`: the backends;
* `build_job`: `hgdeploy build` (checks a request against its backend, then builds);
* helpers: `cpu_artifacts` (the CPU backends' shared build steps), `onnx_checks`,
  `openvino_ir`; for TensorRT `profile`, `tensorrt_build`, `tensorrt_engine`, `tensorrt_runner`.
"""

from hgdeploy.backends.base import Backend, BuildRequest, BuildResult, RunContext, SkipCell
from hgdeploy.backends.registry import (
    backend_choices,
    backend_names,
    get_backend,
    register_backend,
    unregister_backend,
)

__all__ = [
    "Backend",
    "BuildRequest",
    "BuildResult",
    "RunContext",
    "SkipCell",
    "backend_choices",
    "backend_names",
    "get_backend",
    "register_backend",
    "unregister_backend",
]
