"""Person boxes for top-down pose: the box -> (centre, scale) conventions of each upstream."""

from __future__ import annotations

import math

import numpy as np

from hgdeploy.base.errors import HgDeployError

PIXEL_STD = 200.0


def _named(box: tuple[float, float, float, float]) -> str:
    return "--box " + ",".join(f"{v:g}" for v in box)


def check_box_numbers(box: tuple[float, float, float, float]) -> None:
    """A box (x, y, w, h) must be finite with a positive size (checked before any model loads)."""
    if not all(math.isfinite(v) for v in box):
        raise HgDeployError(f"{_named(box)}: every number must be finite")
    if box[2] <= 0 or box[3] <= 0:
        raise HgDeployError(f"{_named(box)}: width and height must be > 0")


def check_box(box: tuple[float, float, float, float], height: int, width: int) -> None:
    """A box (x, y, w, h) must be finite, have a positive size and overlap the image."""
    check_box_numbers(box)
    x, y, w, h = box
    named = _named(box)
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise HgDeployError(f"{named} lies outside the {width}x{height} image")


def clip_box(
    box: tuple[float, float, float, float], height: int, width: int
) -> tuple[float, float, float, float]:
    """`box` (checked by `check_box`) cut to the image, as HRNet's COCO loader cuts its
    ground-truth boxes before it makes a centre and scale of them."""
    check_box(box, height, width)
    x, y, w, h = box
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(width), x + w), min(float(height), y + h)
    return (x1, y1, x2 - x1, y2 - y1)


def hrnet_centre_scale(
    box: tuple[float, float, float, float], aspect_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """HRNet `_xywh2cs`: float32 centre, the box widened to the input's aspect, /200, x1.25."""
    x, y, w, h = box
    centre = np.zeros(2, dtype=np.float32)
    centre[0] = x + w * 0.5
    centre[1] = y + h * 0.5
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w * 1.0 / PIXEL_STD, h * 1.0 / PIXEL_STD], dtype=np.float32)
    return centre, scale * 1.25


def hourglass_centre_scale(box: tuple[float, float, float, float]) -> tuple[np.ndarray, float]:
    """The stacked hourglass's (MPII) convention: the box centre and max side / 200, no margin
    (for the whole image this is what upstream's `inference()` uses on its own input)."""
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2]), max(w, h) / PIXEL_STD
