"""Reading ONNX files users hand us: one-line errors for missing or corrupt files."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.export_settings import METADATA_MODEL_KEY, PRECISION_KEY


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """The model at `path` (with any external data beside it), or a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise HgDeployError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
    except (DecodeError, OSError, ValueError, RuntimeError, onnx.checker.ValidationError) as exc:
        reason = first_line(exc)
        raise HgDeployError(f"cannot read ONNX {path}: {reason}") from None
    if not model.graph.node:
        raise HgDeployError(f"cannot read ONNX {path}: the graph has no nodes (corrupt file?)")
    return model


def input_dims(model: onnx.ModelProto, name: str) -> list[int | str]:
    """The declared dims of graph input `name`: ints, or the symbolic name of a dynamic axis."""
    for value in model.graph.input:
        if value.name == name:
            return [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in value.type.tensor_type.shape.dim
            ]
    raise HgDeployError(f"the ONNX model has no input named {name!r}")


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def check_fp32_source(model_name: str, model: onnx.ModelProto, path: Path) -> None:
    """Refuse an ONNX exported from another model, or one already converted from fp32: every
    build (TensorRT, ONNX Runtime, OpenVINO) starts from the fp32 export."""
    props = metadata(model)
    made_for = props.get(METADATA_MODEL_KEY)
    if made_for is not None and made_for != model_name:
        raise HgDeployError(f"{path} was exported from {made_for!r}, not {model_name!r}")
    if props.get(PRECISION_KEY, "fp32") != "fp32":
        raise HgDeployError(f"{path} is already {props[PRECISION_KEY]}; start from the fp32 ONNX")


def set_metadata_props(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Add or replace ONNX metadata entries, keeping the others (model name, corner-pool form)."""
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
