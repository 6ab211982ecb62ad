"""Pictures of what a pipeline found: boxes with labels, or skeletons, drawn with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np

from hgdeploy.pipelines.categories import COCO_CLASS_NAMES, COCO_SKELETON, MPII_SKELETON
from hgdeploy.pipelines.results import Detections, Pose

_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230)]  # fmt: skip


def draw_detections(image_rgb: np.ndarray, found: Detections, top: int = 20) -> np.ndarray:
    """The `top` best boxes with class name and score, on a copy of the image (RGB)."""
    canvas = np.ascontiguousarray(image_rgb.copy())
    for (x1, y1, x2, y2), score, cls in list(zip(found.boxes, found.scores, found.classes))[:top]:
        colour = _COLOURS[int(cls) % len(_COLOURS)]
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(canvas, p1, p2, colour, 2)
        label = f"{COCO_CLASS_NAMES[int(cls)]} {score:.2f}"
        cv2.putText(
            canvas,
            label,
            (p1[0], max(12, p1[1] - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            colour,
            1,
            cv2.LINE_AA,
        )
    return canvas


def draw_pose(image_rgb: np.ndarray, pose: Pose) -> np.ndarray:
    """The person box, the skeleton's limbs and the joints, on a copy of the image (RGB)."""
    canvas = np.ascontiguousarray(image_rgb.copy())
    skeleton = COCO_SKELETON if len(pose.keypoints) == 17 else MPII_SKELETON
    x, y, w, h = pose.box
    cv2.rectangle(canvas, (int(x), int(y)), (int(x + w) - 1, int(y + h) - 1), (200, 200, 200), 1)
    points = [(int(round(px)), int(round(py))) for px, py, _ in pose.keypoints]
    for index, (a, b) in enumerate(skeleton):
        cv2.line(canvas, points[a], points[b], _COLOURS[index % len(_COLOURS)], 2, cv2.LINE_AA)
    for point in points:
        cv2.circle(canvas, point, 3, (255, 255, 255), -1, cv2.LINE_AA)
    return canvas


def encode_png(image_rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image_rgb[..., ::-1]))
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    return data.tobytes()
