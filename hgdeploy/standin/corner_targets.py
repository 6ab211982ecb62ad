"""CornerNet's training targets (CornerNet-Lite `sample/cornernet.py`), for detector stand-ins.

Each box puts a Gaussian bump on its class's top-left and bottom-right heatmaps at the corner's
truncated output cell, with the radius that keeps a box of corners within it at IoU >=
`gaussian_iou` of the truth (CornerNet paper, section 3.2); the fraction the truncation drops
is the offset target, and the flat cell index is where the tag and offset heads are read.

CornerNet-Saccade's sampler (`sample/cornernet_saccade.py`) adds `min_scale`: an object whose
larger side (in truncated input pixels) is below it gets no target; its bumps go into the
`*_valid` masks instead, which take the loss off the cells around its corners (neither a
positive nor a negative: the detector is not asked about objects that small).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

MAX_OBJECTS = 128  # upstream's max_tag_len: tag/offset slots per image
GAUSSIAN_IOU = 0.3  # every CornerNet-Lite config's gaussian_iou


def gaussian_radius(height: float, width: float, min_overlap: float = GAUSSIAN_IOU) -> float:
    """The largest corner displacement r for which a box of size (height, width) still
    overlaps the truth at IoU >= min_overlap, in the worst of CornerNet's three cases (both
    corners inside, both outside, one in one out): the smallest root of each quadratic."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 - math.sqrt(b1**2 - 4 * a1 * c1)) / (2 * a1)
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 - math.sqrt(b2**2 - 4 * a2 * c2)) / (2 * a2)
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / (2 * a3)
    return min(r1, r2, r3)


def gaussian_bump(radius: int) -> np.ndarray:
    """(2r+1)^2 peak-1 Gaussian with sigma = diameter / 6, values below eps x peak set to 0."""
    diameter = 2 * radius + 1
    sigma = diameter / 6
    offsets = np.arange(diameter) - radius
    bump = np.exp(-(offsets[None, :] ** 2 + offsets[:, None] ** 2) / (2 * sigma * sigma))
    bump[bump < np.finfo(bump.dtype).eps * bump.max()] = 0
    return bump


def draw_bump(heatmap: np.ndarray, x: int, y: int, radius: int) -> None:
    """heatmap = max(heatmap, bump centred on (x, y)), cut at the map's edges, in place."""
    bump = gaussian_bump(radius)
    height, width = heatmap.shape
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    window = heatmap[y - top : y + bottom, x - left : x + right]
    np.maximum(window, bump[radius - top : radius + bottom, radius - left : radius + right],
               out=window)  # fmt: skip


@dataclass
class CornerTargets:
    """One batch's targets, upstream's `ys` in its order."""

    tl_heat: Tensor  # (B, C, h, w)
    br_heat: Tensor
    mask: Tensor  # (B, MAX_OBJECTS) bool: which slots hold an object
    tl_off: Tensor  # (B, MAX_OBJECTS, 2) x, y fractions dropped by the truncation
    br_off: Tensor
    tl_index: Tensor  # (B, MAX_OBJECTS) int64: y * w + x of the corner's cell
    br_index: Tensor
    tl_valid: Tensor | None = None  # (B, C, h, w) 0 near a too-small object's corner, else 1
    br_valid: Tensor | None = None  # (None: every cell counts, as in CornerNet's loss)


def corner_targets(
    boxes: list[np.ndarray],
    classes: list[np.ndarray],
    input_hw: tuple[int, int],
    output_hw: tuple[int, int],
    categories: int,
    min_overlap: float = GAUSSIAN_IOU,
    min_scale: int | None = None,
) -> CornerTargets:
    """Targets for images whose boxes[i] (N, 4: x1, y1, x2, y2 input pixels, clipped) carry
    class indices classes[i] (N,), on heatmaps of `categories` channels at `output_hw`;
    with `min_scale`, Saccade's valid masks as well (see module doc)."""
    batch, (out_h, out_w) = len(boxes), output_hw
    ratio_h, ratio_w = out_h / input_hw[0], out_w / input_hw[1]
    tl_heat = np.zeros((batch, categories, out_h, out_w), np.float32)
    br_heat = np.zeros_like(tl_heat)
    mask = np.zeros((batch, MAX_OBJECTS), bool)
    offsets = np.zeros((2, batch, MAX_OBJECTS, 2), np.float32)
    indices = np.zeros((2, batch, MAX_OBJECTS), np.int64)
    small = np.zeros((2, *tl_heat.shape), np.float32)  # bumps of objects below min_scale
    for b, (image_boxes, image_classes) in enumerate(zip(boxes, classes, strict=True)):
        slot = 0
        for box, kind in zip(image_boxes, image_classes, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            kept = min_scale is None or max(int(y2) - int(y1), int(x2) - int(x1)) >= min_scale
            if kept and slot == MAX_OBJECTS:
                continue
            height = math.ceil((y2 - y1) * ratio_h)
            width = math.ceil((x2 - x1) * ratio_w)
            radius = max(0, int(gaussian_radius(height, width, min_overlap)))
            for corner, (fx, fy), heat in (
                (0, (x1 * ratio_w, y1 * ratio_h), tl_heat),
                (1, (x2 * ratio_w, y2 * ratio_h), br_heat),
            ):
                x, y = int(fx), int(fy)
                draw_bump((heat if kept else small[corner])[b, int(kind)], x, y, radius)
                if kept:
                    offsets[corner, b, slot] = (fx - x, fy - y)
                    indices[corner, b, slot] = y * out_w + x
            if kept:
                mask[b, slot] = True
                slot += 1
    valid = [None, None] if min_scale is None else [torch.from_numpy(v == 0) for v in small]
    return CornerTargets(
        *(torch.from_numpy(t) for t in (tl_heat, br_heat, mask)),
        *(torch.from_numpy(o) for o in offsets),
        *(torch.from_numpy(i) for i in indices),
        *(v.float() if v is not None else None for v in valid),
    )
