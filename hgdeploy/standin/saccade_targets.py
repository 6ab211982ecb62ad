"""CornerNet-Saccade's attention targets (CornerNet-Lite `sample/cornernet_saccade.py`
`create_attention_mask`, with `db/detection.py`'s defaults), for the Saccade stand-in.

Saccade predicts, besides the corners, three attention maps at 1/16, 1/8 and 1/4 of the input
(coarsest first, the order of the model's outputs and of the test pipeline's `att_ranges`):
where objects are whose larger side falls in that level's range. Each object marks one cell,
its centre divided by the level's ratio (truncated), with 1; every other cell is 0. The ranges
are closed at both ends, as upstream's `size[0] <= max_hw <= size[1]`, so a 32 or 96 pixel
object marks two levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

# (smallest, largest) larger box side in input pixels per level, and the level's stride.
ATTENTION_RANGES = ((96, 256), (32, 96), (0, 32))
ATTENTION_RATIOS = (16, 8, 4)
GAUSSIAN_IOU = 0.5  # configs/CornerNet_Saccade.json (the other CornerNets use 0.3)
MIN_SCALE = 16  # its db "min_scale": smaller objects get no corner targets


def attention_hws(input_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """Each level's map size at `input_hw` (a 255x255 input: 16, 32 and 64 cells a side)."""
    return [((input_hw[0] + 1) // r, (input_hw[1] + 1) // r) for r in ATTENTION_RATIOS]


def attention_targets(boxes: Sequence[np.ndarray], input_hw: tuple[int, int]) -> list[Tensor]:
    """One (B, 1, h, w) 0/1 map per level for images whose boxes[i] are (N, 4: x1, y1, x2,
    y2) in input pixels (clipped, after any flip)."""
    maps = [np.zeros((len(boxes), 1, h, w), np.float32) for h, w in attention_hws(input_hw)]
    for b, image_boxes in enumerate(boxes):
        for x1, y1, x2, y2 in np.asarray(image_boxes, np.float64).reshape(-1, 4):
            larger = max(x2 - x1, y2 - y1)
            centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
            for level, ((low, high), ratio) in enumerate(
                zip(ATTENTION_RANGES, ATTENTION_RATIOS, strict=True)
            ):
                if low <= larger <= high:
                    maps[level][b, 0, int(centre_y / ratio), int(centre_x / ratio)] = 1
    return [torch.from_numpy(m) for m in maps]
