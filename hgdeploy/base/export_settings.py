"""What an ONNX export can be asked for (read by the exporter and by the CLI's choices, which
must not import torch to list them)."""

from __future__ import annotations

from typing import Literal

CornerPoolForm = Literal["plugin", "onnx"]
# plugin: one TopPool/LeftPool/BottomPool/RightPool node per pool (TensorRT plugins);
# onnx: lowered to standard ONNX ops (any runtime).
CORNER_POOL_FORMS: tuple[str, ...] = ("plugin", "onnx")
DEFAULT_OPSET = 20  # torch 2.13's default; TensorRT 10/11 parse opsets up to 22 or newer
MIN_OPSET = 18  # the dynamo exporter's lowest supported opset
INPUT_NAME = "image"  # the one input of every exported graph
# Metadata every hgdeploy ONNX carries: the zoo model it holds and its numeric precision.
METADATA_MODEL_KEY = "hgdeploy.model"
PRECISION_KEY = "hgdeploy.precision"
