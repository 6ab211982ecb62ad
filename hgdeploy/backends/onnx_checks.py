"""Checks an ONNX artifact passes before a runtime loads it, shared by the ONNX-reading backends."""

from __future__ import annotations

from pathlib import Path

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.onnx_files import INPUT_NAME, METADATA_MODEL_KEY, input_dims, load_onnx, metadata
from hgdeploy.base.zoo import ModelSpec


def check_onnx_fits(spec: ModelSpec, onnx_path: Path, batch: int) -> None:
    """Refuse an ONNX of another model, or one whose static batch is not `batch`."""
    model = load_onnx(onnx_path)
    recorded = metadata(model).get(METADATA_MODEL_KEY)
    if recorded is not None and recorded != spec.name:
        raise HgDeployError(f"{onnx_path} holds model {recorded!r}, not {spec.name!r}")
    dims = input_dims(model, INPUT_NAME)
    if isinstance(dims[0], int) and dims[0] != batch:
        raise HgDeployError(
            f"{onnx_path} has a static batch of {dims[0]}; use --batch {dims[0]} or export "
            "with --dynamic-batch"
        )
