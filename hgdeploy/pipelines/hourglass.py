"""Stacked hourglass pose at test time: pytorch_stacked_hourglass `test.py` (inference,
post_process), `utils/img.py` (crop, transform) and `utils/group.py` (HeatmapParser)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from hgdeploy.base.zoo import ModelSpec
from hgdeploy.pipelines.categories import MPII_FLIPPED_PARTS
from hgdeploy.pipelines.network import Network
from hgdeploy.pipelines.pose_boxes import PIXEL_STD, hourglass_centre_scale
from hgdeploy.pipelines.results import Pose
from hgdeploy.pipelines.timing import StageTimes

INPUT_RES = 256
OUTPUT_STRIDE = 4  # 256 input -> 64 heatmap


def crop_transform(centre: np.ndarray, scale: float, res: int) -> np.ndarray:
    """`get_transform` (rotation 0): image -> crop pixels, 3x3 float64."""
    h = PIXEL_STD * scale
    t = np.zeros((3, 3))
    t[0, 0] = float(res) / h
    t[1, 1] = float(res) / h
    t[0, 2] = res * (-float(centre[0]) / h + 0.5)
    t[1, 2] = res * (-float(centre[1]) / h + 0.5)
    t[2, 2] = 1
    return t


def to_image(point: np.ndarray, centre: np.ndarray, scale: float, res: int) -> np.ndarray:
    """`transform(..., invert=1)`: crop pixel -> image pixel, truncated to int as upstream."""
    inverse = np.linalg.inv(crop_transform(centre, scale, res))
    return (inverse @ np.array([point[0], point[1], 1.0]))[:2].astype(int)


def crop(image: np.ndarray, centre: np.ndarray, scale: float, res: int = INPUT_RES) -> np.ndarray:
    """`utils/img.crop`: the box's square window (zero outside the image), float64, resized to
    res x res with cv2.resize (bilinear)."""
    ul = to_image(np.array([0, 0]), centre, scale, res)
    br = to_image(np.array([res, res]), centre, scale, res)
    window = np.zeros((br[1] - ul[1], br[0] - ul[0], image.shape[2]))
    new_x = max(0, -ul[0]), min(br[0], image.shape[1]) - ul[0]
    new_y = max(0, -ul[1]), min(br[1], image.shape[0]) - ul[1]
    old_x = max(0, ul[0]), min(image.shape[1], br[0])
    old_y = max(0, ul[1]), min(image.shape[0], br[1])
    window[new_y[0] : new_y[1], new_x[0] : new_x[1]] = image[
        old_y[0] : old_y[1], old_x[0] : old_x[1]
    ]
    return cv2.resize(window, (res, res))


def merge_flip(heatmaps: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """inference(): add the mirrored pass flipped back by MPII's parts, halve, cap at 1."""
    merged = heatmaps + flipped[:, :, ::-1][list(MPII_FLIPPED_PARTS)]
    return np.minimum(merged / 2, 1)


def parse_heatmaps(det: np.ndarray) -> np.ndarray:
    """HeatmapParser.parse (calc + adjust) on one (J, H, W) map: (J, 3) x, y, value in heatmap
    pixels: 3x3 NMS, top-1, then +-0.25 towards the larger neighbour (equal: -0.25) and +0.5,
    only where the value is > 0."""
    tensor = torch.from_numpy(np.float32(det))[None]
    pooled = F.max_pool2d(tensor, 3, 1, 1)
    kept = tensor * torch.eq(pooled, tensor).float()
    joints, height, width = det.shape
    values, index = kept.view(1, joints, -1).topk(1, dim=2)
    xs = (index % width).numpy()[0, :, 0].astype(np.float64)
    ys = (index // width).numpy()[0, :, 0].astype(np.float64)
    values = values.numpy()[0, :, 0]
    out = np.stack([xs, ys, values.astype(np.float64)], axis=1)
    heat = np.float32(det)
    for j in np.flatnonzero(values > 0):
        col, row = int(xs[j]), int(ys[j])
        hm = heat[j]
        x = xs[j] + (0.25 if hm[row, min(col + 1, width - 1)] > hm[row, max(col - 1, 0)] else -0.25)
        y = ys[j] + (
            0.25 if hm[min(row + 1, height - 1), col] > hm[max(0, row - 1), col] else -0.25
        )
        out[j, 0:2] = (x + 0.5, y + 0.5)
    return out


def to_image_keypoints(parsed: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """post_process: heatmap x4 -> crop pixels (the crop's own transform is the identity) ->
    image pixels, truncated to integers as upstream's `transform` does."""
    out = parsed.copy()
    for j in range(len(out)):
        out[j, :2] = to_image(parsed[j, :2] * OUTPUT_STRIDE, centre, scale, INPUT_RES)
    return out


class HourglassPipeline:
    """(image RGB uint8, person box x, y, w, h) -> MPII-16 keypoints in image pixels."""

    def __init__(self, spec: ModelSpec, network: Network, flip: bool = True) -> None:
        self.spec = spec
        self.network = network
        self.flip = flip
        self.times = StageTimes()

    def __call__(
        self, images: Sequence[np.ndarray], boxes: Sequence[tuple[float, float, float, float]]
    ) -> list[Pose]:
        inputs, state = self.prepare(images, boxes)
        return self.finish(self.network(inputs, self.times), state)

    def prepare(
        self, images: Sequence[np.ndarray], boxes: Sequence[tuple[float, float, float, float]]
    ) -> tuple[np.ndarray, dict]:
        """The network's input batch (flipped copies after the originals) and what `finish`
        needs, as plain JSON-able values (a served ensemble passes it between models)."""
        with self.times.stage("preprocess"):
            placements = [hourglass_centre_scale(box) for box in boxes]
            inputs = [crop(im, c, s) / 255 for im, (c, s) in zip(images, placements)]
            batch = np.float32(np.stack(inputs))
            if self.flip:
                flipped = np.float32(np.stack([inp[:, ::-1] for inp in inputs]))
                batch = np.concatenate([batch, flipped])
        state = {
            "centres": [c.tolist() for c, _ in placements],
            "scales": [float(s) for _, s in placements],
            "boxes": [list(map(float, b)) for b in boxes],
        }
        return batch, state

    def finish(self, outputs: dict[str, np.ndarray], state: dict) -> list[Pose]:
        """Keypoints in image pixels from the last stack's heatmaps and `prepare`'s state."""
        heatmaps = outputs["heatmaps"][:, -1]  # the last stack
        with self.times.stage("postprocess"):
            count = len(state["boxes"])
            poses = []
            for i, box in enumerate(state["boxes"]):
                centre, scale = np.asarray(state["centres"][i]), state["scales"][i]
                det = merge_flip(heatmaps[i], heatmaps[count + i]) if self.flip else heatmaps[i]
                keypoints = to_image_keypoints(parse_heatmaps(det), centre, scale)
                poses.append(
                    Pose(
                        keypoints,
                        float(keypoints[:, 2].mean()),
                        tuple(box),  # type: ignore[arg-type]
                        {"center": state["centres"][i], "scale": scale},
                    )
                )
            return poses
