"""Backends: where a model runs (torch | onnxruntime | openvino | tensorrt), one module each.

* `base`: the `Backend` interface, `BuildRequest`/`BuildResult`, the benchmark `RunContext`;
* `registry`: name -> backend; every command's `--backend` choices and precision checks;
* `pytorch`, `onnxruntime`, `openvino`, `tensorrt`: the backends;
* helpers of one backend: `cpu_artifacts` (the CPU builds' shared steps), `openvino_ir`,
  `profile`, `tensorrt_engine`, `tensorrt_runner`; `build`: the TensorRT build job.
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
