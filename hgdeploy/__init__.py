"""hgdeploy: hourglass-family vision models (CornerNet family, Stacked Hourglass, HRNet) from
eager PyTorch to ONNX, ONNX Runtime, OpenVINO and TensorRT, with parity checks and benchmarks.

`load_model` is imported on first use, so `import hgdeploy` (and the CLI's `--help`) does not
load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import ZOO, ModelSpec, get_spec

if TYPE_CHECKING:
    from hgdeploy.models.loader import load_model

__version__ = "0.1.0"
__all__ = ["ZOO", "HgDeployError", "ModelSpec", "__version__", "get_spec", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from hgdeploy.models.loader import load_model

        return load_model
    raise AttributeError(f"module 'hgdeploy' has no attribute {name!r}")
