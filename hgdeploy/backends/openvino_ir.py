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

from hgdeploy.base.artifacts import prepare_output_dir
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


def save_ir(model: ov.Model, xml: Path, precision: str) -> Path:
    """Write ``xml`` + ``.bin`` atomically (both renamed into place only once complete), with
    fp32 weights kept and the target precision recorded in the IR's rt_info."""
    model.set_rt_info(precision, RT_INFO_PRECISION)
    prepare_output_dir(xml)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{xml.stem}.", dir=xml.parent))
    try:
        ov.save_model(model, str(tmp_dir / xml.name), compress_to_fp16=False)
        # .bin first: an .xml in place always has its weights beside it.
        os.replace(tmp_dir / xml.with_suffix(".bin").name, xml.with_suffix(".bin"))
        os.replace(tmp_dir / xml.name, xml)
    except (OSError, RuntimeError) as exc:
        raise HgDeployError(f"cannot write {xml}: {exc}") from None
    finally:
        _remove_tree(tmp_dir)
    return xml
