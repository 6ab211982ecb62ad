"""What a pipeline returns per image, in original image pixels, and its COCO results records."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hgdeploy.pipelines.categories import COCO_CATEGORY_IDS


@dataclass
class Detections:
    """One image's boxes, best first: (N, 4) x1, y1, x2, y2, scores (N,), 0-based classes (N,)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    details: dict = field(default_factory=dict)  # e.g. Saccade's locations and crop count

    @classmethod
    def from_rows(cls, rows: np.ndarray, classes: np.ndarray, **details: object) -> Detections:
        """From upstream-style rows (x1, y1, x2, y2, score): sorted by score, ties in order."""
        order = np.argsort(-rows[:, 4], kind="stable")
        return cls(rows[order, :4].copy(), rows[order, 4].copy(), classes[order].copy(), details)

    def __len__(self) -> int:
        return len(self.scores)

    def to_coco(self, image_id: int | str) -> list[dict]:
        """COCO results: bbox [x, y, w, h] (w = x2 - x1, no +1) and score rounded to 2 decimals,
        as upstream's `convert_to_coco` writes them."""
        records = []
        for (x1, y1, x2, y2), score, cls in zip(self.boxes, self.scores, self.classes):
            records.append(
                {
                    "image_id": image_id,
                    "category_id": COCO_CATEGORY_IDS[int(cls)],
                    "bbox": [round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                    "score": round(float(score), 2),
                }
            )
        return records


@dataclass
class Pose:
    """One person's joints (J, 3) = x, y, confidence in original pixels, the person box it came
    from (x, y, w, h) and a person score."""

    keypoints: np.ndarray
    score: float
    box: tuple[float, float, float, float]
    details: dict = field(default_factory=dict)

    def to_coco(self, image_id: int | str) -> list[dict]:
        return [
            {
                "image_id": image_id,
                "category_id": 1,
                "keypoints": [round(float(v), 3) for v in self.keypoints.reshape(-1)],
                "score": round(float(self.score), 5),
            }
        ]
