"""CornerNet-Saccade at test time: CornerNet-Lite `core/test/cornernet_saccade.py`.

Stage 0 looks at the whole image at two sizes (longer side 192 and 255 in a 255x255 crop);
its attention maps and confident boxes propose where to zoom; location NMS keeps distinct
places; stage 1 runs up to 30 zoomed 255x255 crops. Every network call goes through the same
`Network`, so the artifact runs every stage. Upstream's settings (CornerNet_Saccade.json over
detection.py's defaults) are the defaults here; there is no flip test and no clipping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from hgdeploy.base.zoo import COCO_MEAN_BGR, COCO_STD_BGR, ModelSpec
from hgdeploy.pipelines.cornernet import decode_heads
from hgdeploy.pipelines.detections import cut_per_image, per_class_soft_nms
from hgdeploy.pipelines.network import Network
from hgdeploy.pipelines.results import Detections
from hgdeploy.pipelines.timing import StageTimes

ATTENTION_NAMES = ("att_16", "att_32", "att_64")


@dataclass(frozen=True)
class SaccadeSettings:
    input_size: int = 255
    output_size: int = 64
    init_sizes: tuple[int, ...] = (192, 255)
    init_score_threshold: float = 0.3  # stage 0 keeps detections above it (crops keep all)
    att_threshold: float = 0.3
    att_scales: tuple[float, ...] = (1, 2, 4)
    att_ratios: tuple[int, ...] = (16, 8, 4)  # in the order of ATTENTION_NAMES
    att_nms_kernel: int = 3
    max_crops: int = 30
    location_nms_threshold: float = 16
    sigma: float = 0.7


def crop_batch(
    image: torch.Tensor, locations: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """`prepare_images` + `crop_image_gpu`: (N, 3, size, size) float32 crops of `image`
    (3xHxW float64, /255) centred at int(y), int(x), each of side int(size / scale) resized
    bilinearly into a zero canvas; and each crop's offset (y, x) in the image."""
    _, im_h, im_w = image.shape
    crops = torch.zeros((len(locations), 3, size, size), dtype=torch.float32)
    offsets = np.zeros((len(locations), 2), np.float32)
    for index, (y, x, scale) in enumerate(locations[:, :3]):
        side = int(size / scale)
        cty, ctx = int(y), int(x)
        ratio = size / side
        x0, x1 = max(0, ctx - side // 2), min(ctx + side // 2, im_w)
        y0, y1 = max(0, cty - side // 2), min(cty + side // 2, im_h)
        left, right, top, bottom = ctx - x0, x1 - ctx, cty - y0, y1 - cty
        centre = size // 2
        out_y0, out_y1 = centre - int(top * ratio), centre + int(bottom * ratio)
        out_x0, out_x1 = centre - int(left * ratio), centre + int(right * ratio)
        window = image[:, y0:y1, x0:x1].unsqueeze(0)
        crops[index, :, out_y0:out_y1, out_x0:out_x1] = F.interpolate(
            window, size=[out_y1 - out_y0, out_x1 - out_x0], mode="bilinear"
        )[0]
        offsets[index] = (cty - side // 2, ctx - side // 2)
    mean = torch.tensor(COCO_MEAN_BGR, dtype=torch.float32).reshape(1, 3, 1, 1)
    std = torch.tensor(COCO_STD_BGR, dtype=torch.float32).reshape(1, 3, 1, 1)
    return ((crops - mean) / std).numpy(), offsets


def to_image_coordinates(
    dets: np.ndarray, scales: np.ndarray, offsets: np.ndarray, ratio: float
) -> None:
    """`rescale_dets_` + `remap_dets_` in place on (N, K, 8): heatmap -> crop -> image."""
    xs, ys = dets[..., 0:4:2], dets[..., 1:4:2]
    xs /= ratio
    ys /= ratio
    xs /= scales.reshape(-1, 1, 1)
    ys /= scales.reshape(-1, 1, 1)
    xs += offsets[:, 1][:, None, None]
    ys += offsets[:, 0][:, None, None]


def attention_locations(
    atts: Sequence[np.ndarray],
    settings: SaccadeSettings,
    scales: np.ndarray,
    offsets: np.ndarray,
    height: int,
    width: int,
) -> np.ndarray:
    """`decode_atts` (stage 0, ignore_same False): cells above the threshold -> (y, x, next
    scale, attention) in the image, skipping crops already zoomed past 2 or that would pass 4."""
    found: list[tuple[float, float, float, float]] = []
    for aind in range(atts[0].shape[0]):
        for att, ratio, att_scale in zip(atts, settings.att_ratios, settings.att_scales):
            ys, xs = np.where(att[aind, 0] > settings.att_threshold)
            values = att[aind, 0, ys, xs]
            ys = ys * ratio / scales[aind] + offsets[aind, 0]
            xs = xs * ratio / scales[aind] + offsets[aind, 1]
            keep = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
            next_scale = att_scale * scales[aind]
            if scales[aind] > 2 or next_scale > 4:
                continue
            found += [(y, x, next_scale, v) for y, x, v in zip(ys[keep], xs[keep], values[keep])]
    return np.array(found, dtype=np.float64).reshape(-1, 4)


def reference_locations(dets: np.ndarray) -> np.ndarray:
    """`get_ref_locs`: boxes above 0.5 -> their centre, zoomed so the box is 192/64/24 px."""
    dets = dets[dets[:, 4] > 0.5]
    xs = (dets[:, 0] + dets[:, 2]) / 2
    ys = (dets[:, 1] + dets[:, 3]) / 2
    longest = np.maximum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1])
    scales = np.zeros_like(longest)
    large, small = longest > 96, longest <= 32
    medium = ~large & ~small
    scales[large] = 192 / longest[large]
    scales[medium] = 64 / longest[medium]
    scales[small] = 24 / longest[small]
    return np.stack((ys, xs, scales, np.ones_like(scales)), axis=1)


def location_nms(locations: np.ndarray, threshold: float) -> np.ndarray:
    """Best first; drop places within threshold/scale (in y or x) at a similar (0.8-1.2) zoom."""
    order = np.argsort(locations[:, -1])[::-1]
    locations = locations[order]
    ys, xs, scales = locations[:, 0], locations[:, 1], locations[:, 2]
    dists = np.minimum(np.abs(ys[:, None] - ys[None]), np.abs(xs[:, None] - xs[None]))
    ratios = scales[:, None] / scales[None]
    kept = []
    while dists.shape[0] > 0:
        kept.append(locations[0])
        keep = (dists[0] > threshold / scales[0]) | (ratios[0] > 1.2) | (ratios[0] < 0.8)
        locations, scales = locations[keep], scales[keep]
        dists, ratios = dists[keep][:, keep], ratios[keep][:, keep]
    return np.stack(kept) if kept else np.zeros((0, 4))


def attention_nms(att: np.ndarray, kernel: int) -> np.ndarray:
    """`att_nms`: keep only local maxima of each attention map."""
    tensor = torch.from_numpy(np.ascontiguousarray(att))
    pooled = F.max_pool2d(tensor, kernel, stride=1, padding=(kernel - 1) // 2)
    return (tensor * (tensor == pooled).float()).numpy()


class SaccadePipeline:
    """Image (HxWx3 uint8 RGB) -> detections in image pixels through Saccade's two stages."""

    def __init__(
        self, spec: ModelSpec, network: Network, settings: SaccadeSettings = SaccadeSettings()
    ) -> None:
        self.spec = spec
        self.network = network
        self.settings = settings
        self.decode = spec.decode
        self.times = StageTimes()

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self._one(image) for image in images]

    def _run(self, crops: np.ndarray, stage: str) -> tuple[np.ndarray, list[np.ndarray]]:
        with self.times.stage(f"{stage} network"):
            outputs = self.network(crops, self.times)
        with self.times.stage(f"{stage} decode"):
            dets = decode_heads(outputs, self.decode)  # type: ignore[arg-type]
            atts = [
                attention_nms(outputs[n], self.settings.att_nms_kernel) for n in ATTENTION_NAMES
            ]
        return dets, atts

    def _one(self, image_rgb: np.ndarray) -> Detections:
        s = self.settings
        ratio = s.output_size / s.input_size
        height, width = image_rgb.shape[:2]
        with self.times.stage("preprocess"):
            image = torch.from_numpy(
                (np.ascontiguousarray(image_rgb[..., ::-1]) / 255.0).transpose(2, 0, 1).copy()
            )
            init = np.array(
                [[height // 2, width // 2, size / max(height, width)] for size in s.init_sizes],
                dtype=np.float32,
            )
            crops, offsets = crop_batch(image, init, s.input_size)
        dets, atts = self._run(crops, "stage 0")
        with self.times.stage("attention"):
            scales = init[:, 2]
            locations = attention_locations(atts, s, scales, offsets, height, width)
            to_image_coordinates(dets, scales, offsets, ratio)
            dets = dets.reshape(-1, 8)
            dets = dets[dets[:, 4] > s.init_score_threshold]
            locations = np.concatenate((locations, reference_locations(dets)), axis=0)
            locations = location_nms(locations, s.location_nms_threshold)
        found = [dets]
        locations = locations[: s.max_crops]
        crops_run = len(locations)
        if crops_run:
            with self.times.stage("crops"):
                crops, offsets = crop_batch(image, locations, s.input_size)
            zoomed, _ = self._run(crops, "stage 1")
            with self.times.stage("stage 1 decode"):
                to_image_coordinates(
                    zoomed, locations[:, 2], offsets, ratio
                )  # float64, as upstream
                zoomed = zoomed.reshape(-1, 8)
                found.append(zoomed[zoomed[:, 4] > -1])
        with self.times.stage("postprocess"):
            rows, classes = per_class_soft_nms(np.concatenate(found), s.sigma, keep_all_rows=False)
            rows, classes = cut_per_image(rows, classes)
        return Detections.from_rows(rows, classes, locations=locations.tolist(), crops=crops_run)
