"""Seeded stand-ins for network outputs and boxes, shared by the upstream recorder and the tests.

`tests/data/pipelines/*.json` holds what upstream's post-processing code returned for these
exact arrays (recorded by running the upstream repositories, see tests/data/pipelines/README.md),
so a test regenerates the same arrays from the seed and feeds them to hgdeploy's post-processing:
each stage is checked alone, on identical inputs, without committing large arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

PHOTOS = ("astronaut", "coffee")
"""scikit-image's bundled photographs the end-to-end goldens were recorded on (RGB arrays;
upstream reads BGR with cv2.imread, so the recorder fed `rgb[..., ::-1]`)."""


def normal(shape: tuple[int, ...], seed: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """float32 N(shift, scale^2) from numpy's default generator."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape, dtype=np.float32)
    return (values * np.float32(scale) + np.float32(shift)).astype(np.float32)


def uniform(shape: tuple[int, ...], seed: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """float32 U(low, high) from numpy's default generator (drawn in float64, then cast)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=shape).astype(np.float32)


def corner_heads(batch: int, size: int, seed: int, classes: int = 80) -> dict[str, np.ndarray]:
    """CornerNet-family raw heads (logits, tags, offsets) for `batch` images at size x size.

    Heat logits are N(-4, 1), so after the sigmoid a few corners stand out; tags N(0, 0.5^2),
    so some pairs fall within the embedding thresholds (0.3 / 0.5); offsets U(0, 1)."""
    return {
        "tl_heat": normal((batch, classes, size, size), seed, 1.0, -4.0),
        "br_heat": normal((batch, classes, size, size), seed + 1, 1.0, -4.0),
        "tl_tag": normal((batch, 1, size, size), seed + 2, 0.5),
        "br_tag": normal((batch, 1, size, size), seed + 3, 0.5),
        "tl_off": uniform((batch, 2, size, size), seed + 4),
        "br_off": uniform((batch, 2, size, size), seed + 5),
    }


def attention_maps(seed: int, sizes: tuple[int, ...] = (16, 32, 64)) -> list[np.ndarray]:
    """Saccade attention maps (already sigmoid), one (1, 1, s, s) per size: U(0, 0.4), so a few
    cells pass the 0.3 threshold."""
    return [uniform((1, 1, s, s), seed + i, 0.0, 0.4) for i, s in enumerate(sizes)]


def boxes(count: int, seed: int, extent: float = 200.0, classes: int = 3) -> np.ndarray:
    """(count, 8) float32 detection rows x1, y1, x2, y2, score, tl_score, br_score, class:
    clustered boxes (so soft-NMS has overlaps to decay) inside [0, extent]."""
    centres = uniform((count, 2), seed, 0.2 * extent, 0.8 * extent)
    sizes = uniform((count, 2), seed + 1, 0.05 * extent, 0.3 * extent)
    rows = np.zeros((count, 8), np.float32)
    rows[:, 0:2] = centres - sizes / 2
    rows[:, 2:4] = centres + sizes / 2
    rows[:, 4] = uniform((count,), seed + 2, 0.0, 1.0)
    rows[:, 5] = uniform((count,), seed + 3, 0.0, 1.0)
    rows[:, 6] = uniform((count,), seed + 4, 0.0, 1.0)
    rows[:, 7] = np.floor(uniform((count,), seed + 5, 0.0, float(classes)))
    return rows


def pose_heatmaps(batch: int, joints: int, height: int, width: int, seed: int) -> np.ndarray:
    """Pose heatmaps: N(0.1, 0.1^2) noise plus one Gaussian bump per joint at a seeded place,
    peak height U(0.3, 1.0); a few joints get an all-negative map (the maxval <= 0 branch)."""
    maps = normal((batch, joints, height, width), seed, 0.1, 0.1)
    centre_x = uniform((batch, joints), seed + 1, 0.0, float(width - 1))
    centre_y = uniform((batch, joints), seed + 2, 0.0, float(height - 1))
    heights = uniform((batch, joints), seed + 3, 0.3, 1.0)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for b in range(batch):
        for j in range(joints):
            cx, cy = centre_x[b, j], centre_y[b, j]
            bump = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 1.5**2))
            maps[b, j] += (heights[b, j] * bump).astype(np.float32)
    maps[:, 0] = -np.abs(maps[:, 0]) - 0.01  # joint 0: no positive value anywhere
    return maps.astype(np.float32)


def detector_test_weights(model: torch.nn.Module, att_shift: float = -6.0) -> torch.nn.Module:
    """Make a CornerNet-family model with synthetic weights detect something, deterministically.

    Random weights pair almost no corners (80 classes, unrelated embeddings), so upstream's
    pipeline returns nothing to compare. In place: the last conv of every tag head is scaled by
    0.02 (embeddings nearly agree), classes 0-2 get +4 on their heat bias (the top corners share
    a class) and Saccade's attention logits are shifted by `att_shift` (a handful of zoom crops
    instead of 30: 12 on coffee, 24 on astronaut). The upstream goldens were recorded on these weights.
    """
    import torch

    state = model.state_dict()
    with torch.no_grad():
        for key, tensor in state.items():
            head, _, rest = key.partition(".")
            if head in ("tl_tags", "br_tags") and rest.endswith(".1.weight"):
                tensor.mul_(0.02)
            elif head in ("tl_heats", "br_heats") and rest.endswith(".1.bias"):
                tensor[0:3] += 4.0
            elif head == "att_modules" and rest.endswith(".1.bias"):
                tensor += att_shift
    return model
