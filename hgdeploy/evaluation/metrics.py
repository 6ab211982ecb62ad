"""Task metrics: COCO AP through pycocotools' COCOeval (boxes, keypoint OKS) and MPII's PCKh.

COCOeval is the metric's definition, so hgdeploy never re-implements it: results go in as the
COCO results list `predictions.json` holds, and the summary numbers are read from `stats`.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from hgdeploy.base.errors import HgDeployError

# COCOeval.stats order for each iouType.
_BOX_STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
_KEYPOINT_STATS = ("AP", "AP50", "AP75", "AP_medium", "AP_large")

# OKS sigmas of the MPII joints (stacked-hourglass order), taken from the COCO joint each one
# corresponds to (pycocotools' 17 sigmas): ankles .089, knees .087, hips .107, wrists .062,
# elbows .072, shoulders .079. MPII's pelvis, thorax, upper neck and head top have no COCO joint:
# pelvis takes the hips', thorax and neck the shoulders', head top the ears' (.035). OKS AP on
# MPII-16 is hgdeploy's convention (MPII's own metric is PCKh); it is reported beside PCKh.
MPII_OKS_SIGMAS = np.array(
    [0.089, 0.087, 0.107, 0.107, 0.087, 0.089, 0.107, 0.079, 0.079, 0.035,
     0.062, 0.072, 0.079, 0.079, 0.072, 0.062]
)  # fmt: skip
MPII_HEAD_TOP, MPII_UPPER_NECK = 9, 8


def coco_metrics(coco_gt: Any, results: list[dict], iou_type: str) -> dict[str, float]:
    """COCOeval's summary for `results` against the set: AP, AP50, AP75 and the size splits.

    No result at all scores 0 (COCOeval itself refuses an empty list). Only the set's own
    categories are scored, as COCOeval's default `catIds` does."""
    if iou_type not in ("bbox", "keypoints"):
        raise HgDeployError(f"unknown COCO iou type {iou_type!r}")
    names = _BOX_STATS if iou_type == "bbox" else _KEYPOINT_STATS
    if not results:
        return {name: 0.0 for name in names}
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        coco_dt = coco_gt.loadRes(_copy(results))
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        if iou_type == "keypoints":
            joints = len(results[0]["keypoints"]) // 3
            if joints == len(MPII_OKS_SIGMAS):
                evaluator.params.kpt_oks_sigmas = MPII_OKS_SIGMAS
            elif joints != len(evaluator.params.kpt_oks_sigmas):
                raise HgDeployError(f"no OKS sigmas for {joints} joints (COCO has 17, MPII 16)")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # -1 marks "no ground truth in this split"; keep it as NaN-free JSON by reporting it as is.
    return {name: float(value) for name, value in zip(names, evaluator.stats)}


def _copy(results: list[dict]) -> list[dict]:
    """loadRes adds fields (area, id) to the dicts it is given: keep the caller's intact."""
    return [dict(r) for r in results]


def pckh(coco_gt: Any, results: list[dict], threshold: float = 0.5) -> dict[str, float]:
    """PCKh@threshold for MPII-16 joints: the fraction of labelled ground-truth joints whose
    prediction lies within `threshold` x the head segment (head top to upper neck, MPII's
    definition of the head size) of the truth.

    Each ground-truth person is paired with the result whose `person_box` is its own bbox
    (top-down pose runs on the ground-truth boxes); a person without one counts as missed."""
    by_box: dict[tuple[int, tuple[float, ...]], np.ndarray] = {}
    for record in results:
        key = (int(record["image_id"]), tuple(round(v, 2) for v in record["person_box"]))
        by_box[key] = np.reshape(record["keypoints"], (-1, 3))[:, :2]
    hits = total = 0
    for ann in coco_gt.dataset["annotations"]:
        truth = np.reshape(ann.get("keypoints", ()), (-1, 3))
        if len(truth) != len(MPII_OKS_SIGMAS):
            continue
        labelled = truth[:, 2] > 0
        head = np.linalg.norm(truth[MPII_HEAD_TOP, :2] - truth[MPII_UPPER_NECK, :2])
        if not labelled.any() or not (labelled[MPII_HEAD_TOP] and labelled[MPII_UPPER_NECK]):
            continue
        key = (int(ann["image_id"]), tuple(round(float(v), 2) for v in ann["bbox"]))
        predicted = by_box.get(key)
        total += int(labelled.sum())
        if predicted is None or head <= 0:
            continue
        distance = np.linalg.norm(predicted - truth[:, :2], axis=1)
        hits += int(((distance <= threshold * head) & labelled).sum())
    if total == 0:
        raise HgDeployError("no MPII-16 person with a labelled head segment: PCKh is undefined")
    return {"PCKh": hits / total}
