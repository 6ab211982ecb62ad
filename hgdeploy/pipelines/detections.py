"""The CornerNet family's shared last steps: per-class soft-NMS and the per-image cut."""

from __future__ import annotations

import numpy as np

from hgdeploy.pipelines.soft_nms import soft_nms

NUM_CLASSES = 80
MAX_PER_IMAGE = 100


def per_class_soft_nms(
    dets: np.ndarray, sigma: float, keep_all_rows: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (N, 8) -> (M, 5) boxes+scores and (M,) classes, class by class in class order.

    CornerNet (`keep_all_rows`) ignores soft-NMS's return value and keeps every row, decayed,
    including the stale copies past the live count (core/test/cornernet.py); Saccade keeps the
    live rows only (core/test/cornernet_saccade.py). Both are upstream's behaviour."""
    classes = dets[:, 7]
    kept_rows, kept_classes = [], []
    for j in range(NUM_CLASSES):
        rows = np.ascontiguousarray(dets[classes == j][:, 0:7], dtype=np.float32)
        live = soft_nms(rows, sigma=sigma)
        rows = rows if keep_all_rows else rows[:live]
        kept_rows.append(rows[:, 0:5])
        kept_classes.append(np.full(len(rows), j, np.int64))
    return np.concatenate(kept_rows), np.concatenate(kept_classes)


def cut_per_image(
    rows: np.ndarray, classes: np.ndarray, limit: int = MAX_PER_IMAGE
) -> tuple[np.ndarray, np.ndarray]:
    """Keep scores >= the `limit`-th best (upstream's np.partition threshold: ties keep more)."""
    scores = rows[:, 4]
    if len(scores) <= limit:
        return rows, classes
    kth = len(scores) - limit
    threshold = np.partition(scores, kth)[kth]
    keep = scores >= threshold
    return rows[keep], classes[keep]
