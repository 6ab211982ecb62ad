"""HRNet top-down pose at test time: deep-high-resolution-net `lib/core/function.py` validate,
`lib/core/inference.py` and `lib/utils/transforms.py` with the w32_256x192 test settings (flip
test, heatmap shift, quarter-pixel offset)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from hgdeploy.base.zoo import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, ModelSpec
from hgdeploy.pipelines.categories import COCO_FLIP_PAIRS
from hgdeploy.pipelines.network import Network
from hgdeploy.pipelines.pose_boxes import PIXEL_STD, hrnet_centre_scale
from hgdeploy.pipelines.results import Pose
from hgdeploy.pipelines.timing import StageTimes

VISIBLE_THRESHOLD = 0.2  # TEST.IN_VIS_THRE: joints that count towards the person score
_MEAN = np.asarray(IMAGENET_MEAN_RGB, np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGENET_STD_RGB, np.float32).reshape(3, 1, 1)


def affine_transform(
    centre: np.ndarray, scale: np.ndarray, output_wh: tuple[int, int], inverse: bool = False
) -> np.ndarray:
    """`get_affine_transform` at rotation 0: the box (centre, scale x 200 wide) onto an
    output_wh image, from three float32 point pairs through cv2.getAffineTransform."""
    src_w = scale[0] * PIXEL_STD
    dst_w, dst_h = output_wh
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = centre
    src[1] = centre + np.array([0.0, src_w * -0.5])
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([0, dst_w * -0.5], np.float32)
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=np.float32)


def flip_back(
    flipped: np.ndarray, pairs: Sequence[tuple[int, int]] = COCO_FLIP_PAIRS
) -> np.ndarray:
    """Heatmaps of the mirrored input -> the original's: mirror the width, swap left/right."""
    out = flipped[:, :, :, ::-1].copy()
    for left, right in pairs:
        out[:, [left, right]] = out[:, [right, left]]
    return out


def merge_flip(heatmaps: np.ndarray, flipped: np.ndarray, shift: bool = True) -> np.ndarray:
    """validate's flip test: flip back, SHIFT_HEATMAP (one column right), average."""
    back = flip_back(flipped)
    if shift:
        back[:, :, :, 1:] = back[:, :, :, :-1].copy()
    return ((heatmaps + back) * np.float32(0.5)).astype(np.float32)


def final_predictions(
    heatmaps: np.ndarray, centres: np.ndarray, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`get_final_preds` with POST_PROCESS: argmax, zero coordinates where max <= 0, a quarter
    pixel towards the higher neighbour (strictly inside the map), inverse affine to the image.
    Returns (N, J, 2) float64 coordinates and (N, J, 1) float32 maxima."""
    batch, joints, height, width = heatmaps.shape
    flat = heatmaps.reshape(batch, joints, -1)
    index = np.argmax(flat, 2)
    maxvals = np.amax(flat, 2).reshape(batch, joints, 1)
    coords = np.stack([index % width, np.floor(index / width)], axis=-1).astype(np.float32)
    coords *= (maxvals > 0.0).astype(np.float32)
    px = np.floor(coords[..., 0] + 0.5).astype(int)
    py = np.floor(coords[..., 1] + 0.5).astype(int)
    inside = (px > 1) & (px < width - 1) & (py > 1) & (py < height - 1)
    n, j = np.nonzero(inside)
    x, y = px[n, j], py[n, j]
    dx = heatmaps[n, j, y, x + 1] - heatmaps[n, j, y, x - 1]
    dy = heatmaps[n, j, y + 1, x] - heatmaps[n, j, y - 1, x]
    coords[n, j] += np.sign(np.stack([dx, dy], axis=-1)) * 0.25
    preds = np.zeros(coords.shape, np.float64)
    for i in range(batch):
        inverse = affine_transform(centres[i], scales[i], (width, height), inverse=True)
        ones = np.ones((joints, 1))
        preds[i] = np.concatenate([coords[i].astype(np.float64), ones], axis=1) @ inverse.T
    return preds, maxvals


def person_score(maxvals: np.ndarray, box_score: float = 1.0) -> float:
    """COCODataset.evaluate: box score x mean confidence of joints above IN_VIS_THRE."""
    confident = maxvals[maxvals > VISIBLE_THRESHOLD]
    return float(box_score * confident.mean()) if confident.size else 0.0


class HrnetPipeline:
    """(image RGB uint8, person box x, y, w, h) -> COCO-17 keypoints in image pixels."""

    def __init__(self, spec: ModelSpec, network: Network, flip: bool = True) -> None:
        self.spec = spec
        self.network = network
        self.flip = flip
        self.input_h, self.input_w = spec.input_hw
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
            centres, scales, inputs = [], [], []
            for image, box in zip(images, boxes):
                centre, scale = hrnet_centre_scale(box, self.input_w / self.input_h)
                warp = affine_transform(centre, scale, (self.input_w, self.input_h))
                crop = cv2.warpAffine(
                    image, warp, (self.input_w, self.input_h), flags=cv2.INTER_LINEAR
                )
                tensor = (crop.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)
                inputs.append((tensor - _MEAN) / _STD)
                centres.append(centre.tolist())
                scales.append(scale.tolist())
            batch = np.stack(inputs).astype(np.float32)
            if self.flip:
                batch = np.concatenate([batch, np.ascontiguousarray(batch[..., ::-1])])
        state = {"centres": centres, "scales": scales, "boxes": [list(map(float, b)) for b in boxes]}
        return batch, state

    def finish(self, outputs: dict[str, np.ndarray], state: dict) -> list[Pose]:
        """Keypoints in image pixels from the network's heatmaps and `prepare`'s state."""
        with self.times.stage("postprocess"):
            heatmaps = outputs["heatmaps"]
            count = len(state["boxes"])
            merged = merge_flip(heatmaps[:count], heatmaps[count:]) if self.flip else heatmaps
            centres = np.asarray(state["centres"], np.float32)  # hrnet_centre_scale's dtype
            scales = np.asarray(state["scales"], np.float32)
            preds, maxvals = final_predictions(merged, centres, scales)
            return [
                Pose(
                    np.concatenate([preds[i], maxvals[i].astype(np.float64)], axis=1),
                    person_score(maxvals[i]),
                    tuple(box),  # type: ignore[arg-type]
                    {"center": state["centres"][i], "scale": state["scales"][i]},
                )
                for i, box in enumerate(state["boxes"])
            ]
