"""Small COCO labeled sets over the bundled photos, and their ground truth as predictions: the
evaluate and labeled-set tests build on them."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from hgdeploy.base.images import sample_images

PHOTOS = ("astronaut", "coffee")


def coco_index(data: dict) -> COCO:
    coco = COCO()
    coco.dataset = json.loads(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def write_photos(directory: Path) -> list[dict]:
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for image_id, (name, pixels) in enumerate(sample_images(PHOTOS), start=1):
        cv2.imwrite(str(directory / f"{name}.png"), np.ascontiguousarray(pixels[..., ::-1]))
        height, width = pixels.shape[:2]
        entries.append({"id": image_id, "file_name": f"{name}.png", "height": height,
                        "width": width})  # fmt: skip
    return entries


def keypoint_set(images: list[dict], joints: int, seed: int = 0) -> dict:
    """One person per photo, its box the whole photo, `joints` joints spread over it."""
    rng = np.random.default_rng(seed)
    annotations = []
    for entry in images:
        w, h = entry["width"], entry["height"]
        xy = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], size=(joints, 2))
        keypoints = np.concatenate([xy, np.full((joints, 1), 2.0)], axis=1)
        annotations.append({"id": entry["id"], "image_id": entry["id"], "category_id": 1,
                            "bbox": [0.0, 0.0, float(w), float(h)], "area": float(w * h),
                            "iscrowd": 0, "num_keypoints": joints,
                            "keypoints": [round(float(v), 2) for v in keypoints.reshape(-1)]})  # fmt: skip
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person"}]}  # fmt: skip


def box_set(images: list[dict]) -> dict:
    boxes = [[40.0, 60.0, 200.0, 150.0], [300.0, 20.0, 120.0, 240.0], [10.0, 10.0, 60.0, 60.0]]
    annotations = []
    for entry in images:
        for k, box in enumerate(boxes):
            annotations.append({"id": 10 * entry["id"] + k, "image_id": entry["id"],
                                "category_id": (1, 3, 18)[k], "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
    categories = [{"id": i, "name": str(i)} for i in (1, 3, 18)]
    return {"images": images, "annotations": annotations, "categories": categories}


def as_results(data: dict, shift: float = 0.0) -> list[dict]:
    """The ground truth as predictions, every coordinate moved by `shift` pixels."""
    results = []
    for ann in data["annotations"]:
        record = {"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 0.9}
        if "keypoints" in ann:
            kp = np.reshape(ann["keypoints"], (-1, 3)).copy()
            kp[:, :2] += shift
            record["keypoints"] = kp.reshape(-1).tolist()
            record["person_box"] = ann["bbox"]
        else:
            x, y, w, h = ann["bbox"]
            record["bbox"] = [x + shift, y + shift, w, h]
        results.append(record)
    return results
