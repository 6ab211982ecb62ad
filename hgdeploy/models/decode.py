"""Test-mode decoding of CornerNet-family heads into boxes.

This reproduces upstream CornerNet-Lite's ``_decode`` (core/models/py_utils/utils.py) number for
number, so that detections from an exported engine's heads can be compared with, or substituted
for, the eager model's. The steps, per image:

1. ``sigmoid`` the two corner heatmaps and keep only local maxima of a ``kernel`` x ``kernel``
   window (``heat * (maxpool(heat) == heat)``); everything else becomes exactly 0.
2. Take the ``K`` best top-left and the ``K`` best bottom-right corners over all
   classes x positions. A flat index ``i`` into (C, H, W) gives class ``i // (H*W)``,
   row ``(i % (H*W)) // W`` and column ``i % W``.
3. Pair every top-left corner with every bottom-right corner (K x K boxes). A box's score is the
   mean of its two corner scores; it is rejected (score -1) when the corners' classes differ,
   their embeddings are more than ``ae_threshold`` apart, the box is inverted, or (with
   ``no_border``) a corner lies on the image border.
4. Keep the ``num_dets`` best pairs.

The output rows are ``(tl_x, tl_y, br_x, br_y, score, tl_score, br_score, cls)`` with corner
coordinates in heatmap pixels (sub-pixel offsets added) and ``cls`` as a float, exactly as
upstream concatenates them. Rejected pairs are not removed: they fill the tail with score -1,
which is what upstream's callers filter on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from hgdeploy.base.zoo import DecodeSettings

__all__ = ["decode_corners", "decode_with"]

REJECTED_SCORE = -1.0
"""Score upstream writes into a rejected pair; it sorts below every real score (which are >= 0)."""

_NUM_HEADS = 6


class _Corners(NamedTuple):
    """The K best corners of one kind (top-left or bottom-right) per image, each (B, K)."""

    scores: Tensor  # sigmoid heat after NMS
    flat_positions: Tensor  # int64 index into H*W, for gathering tags and offsets
    classes: Tensor  # int64
    ys: Tensor  # float32 row, before offsets
    xs: Tensor  # float32 column, before offsets


def _keep_local_maxima(heat: Tensor, kernel: int) -> Tensor:
    """Zero every value that is not the maximum of its ``kernel`` x ``kernel`` neighbourhood.

    Upstream multiplies by the equality mask rather than using ``where`` so that ties with a
    neighbour survive on both sides; we do the same, which keeps the result bit-identical.
    """
    neighbourhood_max = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    return heat * (neighbourhood_max == heat).to(heat.dtype)


def _top_corners(heat: Tensor, k: int) -> _Corners:
    """The ``k`` highest-scoring (class, y, x) cells of ``heat`` (B, C, H, W), jointly over classes.

    Upstream computes the class and row with true division followed by ``.int()``; for the
    non-negative indices here that truncation is exactly floor division, which we use directly.
    """
    batch, _, height, width = heat.shape
    plane = height * width
    scores, flat_indices = torch.topk(heat.reshape(batch, -1), k)
    classes = flat_indices // plane
    flat_positions = flat_indices % plane
    ys = (flat_positions // width).float()
    xs = (flat_positions % width).float()
    return _Corners(scores, flat_positions, classes, ys, xs)


def _gather_at(feature: Tensor, flat_positions: Tensor) -> Tensor:
    """Values of ``feature`` (B, D, H, W) at ``flat_positions`` (B, K) into H*W, as (B, K, D)."""
    batch, depth = feature.shape[:2]
    per_position = feature.reshape(batch, depth, -1)
    index = flat_positions.unsqueeze(1).expand(batch, depth, flat_positions.shape[1])
    return per_position.gather(2, index).transpose(1, 2)


def _check_inputs(
    tl_heat: Tensor,
    br_heat: Tensor,
    tl_tag: Tensor,
    br_tag: Tensor,
    tl_off: Tensor,
    br_off: Tensor,
    *,
    K: int,
    num_dets: int,
    kernel: int,
) -> None:
    """Fail early with a readable message instead of a shape error deep inside ``gather``."""
    if tl_heat.dim() != 4:
        raise ValueError(f"tl_heat must be (B, C, H, W); got shape {tuple(tl_heat.shape)}")
    batch, classes, height, width = tl_heat.shape
    expected = {
        "br_heat": (br_heat, (batch, classes, height, width)),
        "tl_tag": (tl_tag, (batch, 1, height, width)),
        "br_tag": (br_tag, (batch, 1, height, width)),
        "tl_off": (tl_off, (batch, 2, height, width)),
        "br_off": (br_off, (batch, 2, height, width)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} to match tl_heat; got {tuple(tensor.shape)}"
            )
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd number (a centred window); got {kernel}")
    candidates = classes * height * width
    if not 1 <= K <= candidates:
        raise ValueError(
            f"K={K} must be between 1 and the number of heatmap cells C*H*W={candidates}"
        )
    if not 1 <= num_dets <= K * K:
        raise ValueError(
            f"num_dets={num_dets} must be between 1 and the number of corner pairs K*K={K * K}"
        )


def decode_corners(
    tl_heat: Tensor,
    br_heat: Tensor,
    tl_tag: Tensor,
    br_tag: Tensor,
    tl_off: Tensor,
    br_off: Tensor,
    *,
    K: int,
    ae_threshold: float,
    num_dets: int,
    kernel: int = 3,
    no_border: bool = False,
) -> Tensor:
    """Decode raw CornerNet heads into ``num_dets`` scored boxes per image.

    Args:
        tl_heat, br_heat: corner heatmap logits, (B, C, H, W).
        tl_tag, br_tag: associative embeddings, (B, 1, H, W).
        tl_off, br_off: sub-pixel offsets, (B, 2, H, W); channel 0 is x, channel 1 is y.
        K: corners of each kind kept per image (over all classes and positions).
        ae_threshold: largest embedding distance at which two corners still form a box.
        num_dets: pairs returned per image, best first.
        kernel: side of the NMS window.
        no_border: also reject pairs with a corner on the border of the heatmap. As upstream,
            the border test uses the integer cell, before the offset is added.

    Returns:
        (B, num_dets, 8): ``tl_x, tl_y, br_x, br_y, score, tl_score, br_score, cls``; rejected
        pairs carry score -1.

    Raises:
        ValueError: on mismatched shapes, an even kernel, ``K > C*H*W`` or ``num_dets > K*K``.
    """
    _check_inputs(
        tl_heat, br_heat, tl_tag, br_tag, tl_off, br_off, K=K, num_dets=num_dets, kernel=kernel
    )
    batch, _, height, width = tl_heat.shape

    tl = _top_corners(_keep_local_maxima(torch.sigmoid(tl_heat), kernel), K)
    br = _top_corners(_keep_local_maxima(torch.sigmoid(br_heat), kernel), K)

    # Pair axes: top-left corners run along dim 1 (rows), bottom-right along dim 2 (columns).
    def as_rows(values: Tensor) -> Tensor:
        return values.reshape(batch, K, 1).expand(batch, K, K)

    def as_columns(values: Tensor) -> Tensor:
        return values.reshape(batch, 1, K).expand(batch, K, K)

    tl_offsets = _gather_at(tl_off, tl.flat_positions)  # (B, K, 2)
    br_offsets = _gather_at(br_off, br.flat_positions)
    tl_xs = as_rows(tl.xs) + tl_offsets[..., 0].reshape(batch, K, 1)
    tl_ys = as_rows(tl.ys) + tl_offsets[..., 1].reshape(batch, K, 1)
    br_xs = as_columns(br.xs) + br_offsets[..., 0].reshape(batch, 1, K)
    br_ys = as_columns(br.ys) + br_offsets[..., 1].reshape(batch, 1, K)
    boxes = torch.stack((tl_xs, tl_ys, br_xs, br_ys), dim=3)  # (B, K, K, 4)

    tl_scores = as_rows(tl.scores)
    br_scores = as_columns(br.scores)
    scores = (tl_scores + br_scores) / 2
    tl_classes = as_rows(tl.classes)

    tag_distance = torch.abs(
        _gather_at(tl_tag, tl.flat_positions).reshape(batch, K, 1)
        - _gather_at(br_tag, br.flat_positions).reshape(batch, 1, K)
    )
    rejected = (
        (tl_classes != as_columns(br.classes))
        | (tag_distance > ae_threshold)
        | (br_xs < tl_xs)
        | (br_ys < tl_ys)
    )
    if no_border:
        rejected = (
            rejected
            | (as_rows(tl.ys) == 0)
            | (as_rows(tl.xs) == 0)
            | (as_columns(br.ys) == height - 1)
            | (as_columns(br.xs) == width - 1)
        )
    scores = scores.masked_fill(rejected, REJECTED_SCORE)

    best_scores, best_pairs = torch.topk(scores.reshape(batch, K * K), num_dets)

    def pick(per_pair: Tensor) -> Tensor:
        """Select the chosen pairs from a (B, K, K[, D]) tensor, as (B, num_dets, D)."""
        flat = per_pair.reshape(batch, K * K, -1)
        index = best_pairs.unsqueeze(2).expand(batch, num_dets, flat.shape[2])
        return flat.gather(1, index)

    return torch.cat(
        (
            pick(boxes),
            best_scores.unsqueeze(2),
            pick(tl_scores).float(),
            pick(br_scores).float(),
            pick(tl_classes).float(),
        ),
        dim=2,
    )


def decode_with(settings: DecodeSettings, heads: Sequence[Tensor]) -> Tensor:
    """Decode the six corner heads with a model's upstream test settings (``ModelSpec.decode``).

    ``heads`` is ``(tl_heat, br_heat, tl_tag, br_tag, tl_off, br_off)``; models with extra
    outputs (CornerNet-Saccade's attention maps) pass only these first six.
    """
    if len(heads) != _NUM_HEADS:
        raise ValueError(
            f"expected the {_NUM_HEADS} corner heads (tl_heat, br_heat, tl_tag, br_tag, tl_off, "
            f"br_off); got {len(heads)} tensors"
        )
    return decode_corners(
        *heads,
        K=settings.K,
        ae_threshold=settings.ae_threshold,
        num_dets=settings.num_dets,
        kernel=settings.kernel,
        no_border=settings.no_border,
    )
