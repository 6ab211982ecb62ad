"""What the served pipeline model does with one request, apart from Triton: encoded image bytes
(+ a person box for the pose models) in, the upstream pipeline's result out as named tensors.

Kept free of `triton_python_backend_utils` so it is tested in-process against `hgdeploy
predict`'s own code path; `python_pipeline` only moves tensors in and out of Triton.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.images import decode_image, image_id_for
from hgdeploy.base.zoo import ModelSpec
from hgdeploy.pipelines.pose_boxes import check_box_numbers, clip_box
from hgdeploy.pipelines.results import Detections, Pose

# The pipeline model's tensors (the config and the client both read these names).
IMAGE_INPUT = "image_bytes"
BOX_INPUT = "box"  # pose models: x, y, w, h of the person; absent: the whole image
DETECTION_OUTPUTS = ("boxes", "scores", "category_ids", "count", "coco_json")
POSE_OUTPUTS = ("keypoints", "score", "coco_json")
NETWORK_INPUT = "network_input"  # an ensemble's pre-processing -> the network
STATE_TENSOR = "state"  # an ensemble's pre-processing -> post-processing: JSON bytes
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # a larger photo is refused from its header


def output_names(spec: ModelSpec) -> tuple[str, ...]:
    return DETECTION_OUTPUTS if spec.decode is not None else POSE_OUTPUTS


def answer(
    pipeline: Any,
    spec: ModelSpec,
    image: bytes,
    box: np.ndarray | None = None,
    request_id: str = "",
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> dict[str, np.ndarray]:
    """The pipeline on one encoded image: output name -> tensor. The COCO records' image_id
    is the request id read as `predict` reads a file name ("397133" -> 397133), "" -> 0."""
    pixels = decode_image(image, max_pixels)
    image_id = image_id_for(request_id) if request_id else 0
    if spec.decode is not None:
        _refuse_box(spec, box)
        return detection_tensors(pipeline([pixels])[0], image_id)
    return pose_tensors(pipeline([pixels], [_person(pixels, box)])[0], image_id)


def prepare(
    pipeline: Any,
    spec: ModelSpec,
    image: bytes,
    box: np.ndarray | None = None,
    request_id: str = "",
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[np.ndarray, bytes]:
    """`answer`'s first half, for a served ensemble: the network's input batch for one image
    and the state `finish` needs, as JSON bytes (a tensor the ensemble carries across)."""
    if not hasattr(pipeline, "prepare"):
        raise HgDeployError(f"{spec.name}'s pipeline calls its network more than once")
    pixels = decode_image(image, max_pixels)
    if spec.decode is not None:
        _refuse_box(spec, box)
        inputs, state = pipeline.prepare([pixels])
    else:
        inputs, state = pipeline.prepare([pixels], [_person(pixels, box)])
    state["image_id"] = image_id_for(request_id) if request_id else 0
    return inputs, json.dumps(state).encode()


def finish(
    pipeline: Any, spec: ModelSpec, outputs: dict[str, np.ndarray], state: bytes
) -> dict[str, np.ndarray]:
    """`answer`'s second half: the network's outputs and `prepare`'s state -> the tensors."""
    fields = json.loads(state)
    image_id = fields.pop("image_id")
    (found,) = pipeline.finish(outputs, fields)
    if spec.decode is not None:
        return detection_tensors(found, image_id)
    return pose_tensors(found, image_id)


def _refuse_box(spec: ModelSpec, box: np.ndarray | None) -> None:
    if box is not None:
        raise HgDeployError(f"{spec.name} finds its own boxes; send no '{BOX_INPUT}' input")


def _person(pixels: np.ndarray, box: np.ndarray | None) -> tuple[float, float, float, float]:
    """The person box a pose request names, cut to the image; none: the whole image."""
    height, width = pixels.shape[:2]
    if box is None:
        return (0.0, 0.0, float(width), float(height))
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.shape != (4,):
        raise HgDeployError(f"'{BOX_INPUT}' must be 4 numbers x, y, w, h; got {values.size}")
    given = (float(values[0]), float(values[1]), float(values[2]), float(values[3]))
    check_box_numbers(given)
    return clip_box(given, height, width)


def detection_tensors(found: Detections, image_id: int | str) -> dict[str, np.ndarray]:
    records = found.to_coco(image_id)
    return {
        "boxes": np.asarray(found.boxes, dtype=np.float32).reshape(-1, 4),
        "scores": np.asarray(found.scores, dtype=np.float32),
        "category_ids": np.array([r["category_id"] for r in records], dtype=np.int32),
        "count": np.array([len(found)], dtype=np.int32),
        "coco_json": np.array([json.dumps(records).encode()], dtype=object),
    }


def pose_tensors(found: Pose, image_id: int | str) -> dict[str, np.ndarray]:
    return {
        "keypoints": np.asarray(found.keypoints, dtype=np.float32),
        "score": np.array([found.score], dtype=np.float32),
        "coco_json": np.array([json.dumps(found.to_coco(image_id)).encode()], dtype=object),
    }
