"""hgdeploy: hourglass-family vision models (CornerNet family, Stacked Hourglass, HRNet) from
eager PyTorch to ONNX, ONNX Runtime and TensorRT, with parity checks and benchmarks."""

from hgdeploy.errors import HgDeployError
from hgdeploy.loader import load_model
from hgdeploy.zoo import ZOO, ModelSpec, get_spec

__version__ = "0.1.0"
__all__ = ["ZOO", "HgDeployError", "ModelSpec", "__version__", "get_spec", "load_model"]
