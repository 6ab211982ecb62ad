"""Upstream CornerNet-Lite's Gaussian soft-NMS (`core/external/nms.pyx`), vectorized per pass.

Upstream's Cython works greedily and in place: pass i swaps the highest remaining score to row i,
decays every later live row by exp(-IoU^2 / sigma) (IoU with the +1 pixel convention), and a
row that falls below `threshold` is overwritten by the last live row and the live count shrinks.
Rows past the live count keep stale values and are still in the array. CornerNet ignores the
return value and keeps every row; Saccade keeps the live rows. Both quirks are reproduced, so
callers get the array upstream's callers see. Each pass is one numpy expression over the live
rows; only removals (each row at most once) are walked one by one, which is what the in-place
swap order needs. Arithmetic follows the Cython's types: float32 boxes, a float64 exp.
"""

from __future__ import annotations

import numpy as np

_F = np.float32


def soft_nms(boxes: np.ndarray, sigma: float = 0.5, threshold: float = 0.001) -> int:
    """Decay `boxes` (N, >=5 float32: x1, y1, x2, y2, score, ...) in place; return the live
    count (upstream's `keep` is range(count)). Only columns 0..4 move, as upstream."""
    if boxes.dtype != np.float32 or boxes.ndim != 2 or boxes.shape[1] < 5:
        raise ValueError("soft_nms takes an (N, >=5) float32 array")
    live = boxes.shape[0]
    sigma32, threshold32 = _F(sigma), _F(threshold)
    i = 0
    while i < live:
        best = i + int(np.argmax(boxes[i:live, 4]))  # first maximum, as the strict '<' scan
        if best != i:
            boxes[[i, best], :5] = boxes[[best, i], :5]
        if i + 1 < live:
            live = _decay_pass(boxes, i, live, sigma32, threshold32)
        i += 1
    return live


def _decay_pass(boxes: np.ndarray, i: int, live: int, sigma: np.float32, thr: np.float32) -> int:
    """Decay rows i+1..live-1 against row i and drop those below `thr` the way the Cython does."""
    tx1, ty1, tx2, ty2 = boxes[i, :4]
    rest = boxes[i + 1 : live]
    x1, y1, x2, y2 = rest[:, 0], rest[:, 1], rest[:, 2], rest[:, 3]
    # The Cython's literal 1 is a C double: the +1 sums are double, stored back as float.
    area = ((x2 - x1).astype(np.float64) + 1.0) * ((y2 - y1).astype(np.float64) + 1.0)
    area = area.astype(_F)
    iw = (np.minimum(tx2, x2) - np.maximum(tx1, x1)).astype(np.float64) + 1.0
    ih = (np.minimum(ty2, y2) - np.maximum(ty1, y1)).astype(np.float64) + 1.0
    iw, ih = iw.astype(_F), ih.astype(_F)
    overlaps = (iw > 0) & (ih > 0)
    box_area = (np.float64(tx2 - tx1) + 1.0) * (np.float64(ty2 - ty1) + 1.0)
    inter = (iw * ih).astype(_F)
    union = (box_area + area.astype(np.float64) - inter.astype(np.float64)).astype(_F)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = (inter / union).astype(_F)
        exponent = (-(iou * iou) / sigma).astype(_F)
    weight = np.exp(exponent.astype(np.float64)).astype(_F)
    decayed = np.where(overlaps, (weight * rest[:, 4]).astype(_F), rest[:, 4])
    dropped = overlaps & (decayed < thr)
    original = rest[:, :5].copy()
    rest[:, 4] = decayed
    if not dropped.any():
        return live
    # The Cython's scan: a dropped row's place gets the (not yet decayed) last live row, which is
    # then decayed there; the cut-off place keeps its old values, still in the array (stale).
    order = np.arange(len(rest))
    end = len(order)
    decayed_in_place: list[int] = []  # a row that was last itself: it stays decayed, cut off
    for pos in np.flatnonzero(dropped).tolist():
        if pos >= end:
            break
        while pos < end and dropped[order[pos]]:
            end -= 1
            if end == pos:
                decayed_in_place.append(pos)
                break
            order[pos] = order[end]
    new_rows = original.copy()
    new_rows[:, 4] = decayed
    result = original[order]
    result[:end] = new_rows[order[:end]]
    for pos in decayed_in_place:
        result[pos] = new_rows[order[pos]]
    rest[:, :5] = result
    return i + 1 + end
