"""OpenVINO IR files for the CPU: fp32, bf16 (a recorded compile hint) and int8 (NNCF, made by
`hgdeploy.precision.nncf_int8`).

* fp32 / bf16: the plugin-free ONNX converted to IR with fp32 weights (``compress_to_fp16``
  off: the CPU plugin would decompress them anyway, and fp32 parity wants exact weights). bf16
  is not a different graph but OpenVINO's inference-precision hint; the IR (rt_info
  ``hgdeploy/precision``) and its sidecar record the precision it was built for, and `parity`
  compiles with the hint the sidecar names.
* int8: the IR of NNCF's quantized model (see `hgdeploy.precision.nncf_int8`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import onnx
import openvino as ov

from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.exporters.lowering import runnable_model

RT_INFO_PRECISION = ["hgdeploy", "precision"]


def ov_model_from_onnx(model: onnx.ModelProto) -> ov.Model:
    """The plugin-free graph as an OpenVINO model (corner pools lowered, names kept)."""
    try:
        return ov.Core().read_model(runnable_model(model).SerializeToString())
    except RuntimeError as exc:
        first = first_line(exc)
        raise HgDeployError(f"OpenVINO cannot read the model: {first}") from None


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def save_ir(model: ov.Model, xml: Path, weights: Path, precision: str) -> None:
    """Write the IR to ``xml`` + ``weights`` (temporary paths the caller commits with the
    sidecar), with fp32 weights kept and the target precision recorded in the IR's rt_info."""
    model.set_rt_info(precision, RT_INFO_PRECISION)
    work = Path(tempfile.mkdtemp(prefix=".hgdeploy-ir.", dir=xml.parent))
    try:
        ov.save_model(model, str(work / "model.xml"), compress_to_fp16=False)
        os.replace(work / "model.bin", weights)
        os.replace(work / "model.xml", xml)
    except (OSError, RuntimeError) as exc:
        raise HgDeployError(f"cannot write {xml}: {first_line(exc)}") from None
    finally:
        _remove_tree(work)
