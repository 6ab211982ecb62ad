"""Checks an ONNX artifact passes before a runtime loads it, shared by the ONNX-reading backends."""

from __future__ import annotations

from pathlib import Path

import onnx

from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.export_settings import INPUT_NAME
from hgdeploy.base.onnx_files import METADATA_MODEL_KEY, input_dims, load_onnx, metadata
from hgdeploy.base.zoo import ModelSpec


def check_onnx_fits(spec: ModelSpec, onnx_path: Path, batch: int) -> None:
    """Refuse an ONNX of another model, or one whose static batch is not `batch`."""
    model = load_onnx(onnx_path)
    try:  # a broken graph fails here in a second, not in the runtime after the eager run
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise HgDeployError(f"{onnx_path} is not a valid ONNX graph: {first_line(exc)}") from None
    recorded = metadata(model).get(METADATA_MODEL_KEY)
    if recorded is not None and recorded != spec.name:
        raise HgDeployError(f"{onnx_path} holds model {recorded!r}, not {spec.name!r}")
    dims = input_dims(model, INPUT_NAME)
    if isinstance(dims[0], int) and dims[0] != batch:
        raise HgDeployError(
            f"{onnx_path} has a static batch of {dims[0]}; use --batch {dims[0]} or export "
            "with --dynamic-batch"
        )
