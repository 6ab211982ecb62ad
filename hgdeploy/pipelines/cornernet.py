"""CornerNet and CornerNet-Squeeze at test time: CornerNet-Lite `core/test/cornernet.py`.

Upstream feeds each image at its own size padded up to 128k-1 (`size | 127`); an exported graph
has one static H x W. With `input_hw` set, an image that fits is padded to that size (the network
sees upstream's scale, with more padding), and a larger one is first scaled down to fit, which is
upstream's `test_scales` path with scale < 1: detections are mapped back by the same scale and
offsets. With `input_hw=None` (the eager model) every step is upstream's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import COCO_MEAN_BGR, COCO_STD_BGR, DecodeSettings, ModelSpec
from hgdeploy.models.decode import decode_with
from hgdeploy.pipelines.detections import cut_per_image, per_class_soft_nms
from hgdeploy.pipelines.network import Network
from hgdeploy.pipelines.results import Detections
from hgdeploy.pipelines.timing import StageTimes

HEAD_NAMES = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off")
_MEAN = np.asarray(COCO_MEAN_BGR, np.float32).reshape(3, 1, 1)
_STD = np.asarray(COCO_STD_BGR, np.float32).reshape(3, 1, 1)


@dataclass(frozen=True)
class Placement:
    """Where an image sits in the network input: upstream's ratios, border and size."""

    scale: float  # image -> input resize factor (1 upstream)
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]
    border: tuple[float, float, float, float]  # top, bottom, left, right of the image
    size: tuple[int, int]  # int(h * scale), int(w * scale): the clip bounds


def normalise_bgr(canvas: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 BGR -> 3xHxW float32: /255 in float64 (stored float32), then mean/std."""
    pixels = (canvas / 255.0).transpose(2, 0, 1).astype(np.float32)
    return (pixels - _MEAN) / _STD


def place(
    image: np.ndarray, stride: int, input_hw: tuple[int, int] | None
) -> tuple[np.ndarray, Placement]:
    """Upstream's resize + `crop_image` centring on a zero canvas, as a uint8 BGR canvas."""
    height, width = image.shape[:2]
    scale = 1.0 if input_hw is None else min(1.0, input_hw[0] / height, input_hw[1] / width)
    new_h, new_w = int(height * scale), int(width * scale)
    inp_h, inp_w = (new_h | 127, new_w | 127) if input_hw is None else input_hw
    resized = cv2.resize(image, (new_w, new_h))
    canvas = np.zeros((inp_h, inp_w, 3), np.uint8)
    cty, ctx = new_h // 2, new_w // 2
    x0, x1 = max(0, ctx - inp_w // 2), min(ctx + inp_w // 2, new_w)
    y0, y1 = max(0, cty - inp_h // 2), min(cty + inp_h // 2, new_h)
    top, bottom, left, right = cty - y0, y1 - cty, ctx - x0, x1 - ctx
    ccy, ccx = inp_h // 2, inp_w // 2
    canvas[ccy - top : ccy + bottom, ccx - left : ccx + right] = resized[y0:y1, x0:x1]
    border = (ccy - top, ccy + bottom, ccx - left, ccx + right)
    output_hw = ((inp_h + 1) // stride, (inp_w + 1) // stride)
    return canvas, Placement(scale, (inp_h, inp_w), output_hw, border, (new_h, new_w))


def to_image_coordinates(dets: np.ndarray, where: Placement) -> None:
    """Upstream's `rescale_dets_` then `/ scale`, in place on (N, 8) rows (float32)."""
    ratio_h = np.float32(where.output_hw[0] / where.input_hw[0])
    ratio_w = np.float32(where.output_hw[1] / where.input_hw[1])
    xs, ys = dets[:, 0:4:2], dets[:, 1:4:2]
    xs /= ratio_w
    ys /= ratio_h
    xs -= np.float32(where.border[2])
    ys -= np.float32(where.border[0])
    np.clip(xs, 0, np.float32(where.size[1]), out=xs)
    np.clip(ys, 0, np.float32(where.size[0]), out=ys)
    dets[:, 0:4] /= where.scale


def finish_detections(dets: np.ndarray, where: Placement, sigma: float) -> Detections:
    """Image coordinates, reject score -1 pairs, per-class soft-NMS keeping every row, top 100."""
    to_image_coordinates(dets, where)
    dets = dets[dets[:, 4] > -1]
    rows, classes = per_class_soft_nms(dets, sigma=sigma, keep_all_rows=True)
    rows, classes = cut_per_image(rows, classes)
    return Detections.from_rows(rows, classes)


def merge_flipped(dets: np.ndarray, flipped: np.ndarray, out_w: int) -> np.ndarray:
    """Mirror the flipped image's boxes back with out_w (not out_w - 1, as upstream) and stack."""
    mirrored = flipped.copy()
    mirrored[:, [0, 2]] = out_w - flipped[:, [2, 0]]
    return np.concatenate([dets, mirrored])


class CornerNetPipeline:
    """Image (HxWx3 uint8 RGB) -> detections in image pixels, for cornernet and squeeze."""

    def __init__(
        self,
        spec: ModelSpec,
        network: Network,
        flip: bool,
        sigma: float = 0.5,
        input_hw: tuple[int, int] | None = None,
    ) -> None:
        self.spec = spec
        self.network = network
        self.flip = flip
        self.sigma = sigma
        self.input_hw = input_hw if input_hw is not None else network.input_hw
        self.stride = (spec.input_hw[0] + 1) // spec.outputs[0].shape[1]
        self.decode: DecodeSettings = spec.decode  # type: ignore[assignment]
        self.times = StageTimes()

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        results: list[Detections] = []
        for group in _same_size_groups(images, self.input_hw):
            inputs, state = self.prepare(group)
            results += self.finish(self.network(inputs, self.times), state)
        return results

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, dict]:
        """One input batch for images that make inputs of one size (each image followed by
        its flipped copy) and what `finish` needs, as plain JSON-able values (a served
        ensemble passes it between models)."""
        with self.times.stage("preprocess"):
            placed = [
                place(np.ascontiguousarray(im[..., ::-1]), self.stride, self.input_hw)
                for im in images
            ]
            if len({where.input_hw for _, where in placed}) > 1:
                raise HgDeployError("prepare takes images of one input size; split them first")
            batch = []
            for canvas, _ in placed:
                tensor = normalise_bgr(canvas)
                batch.append(tensor)
                if self.flip:
                    batch.append(np.ascontiguousarray(tensor[:, :, ::-1]))
            inputs = np.stack(batch)
        return inputs, {"placements": [asdict(where) for _, where in placed]}

    def finish(self, outputs: dict[str, np.ndarray], state: dict) -> list[Detections]:
        """Detections in image pixels from the network's heads and `prepare`'s state."""
        with self.times.stage("postprocess"):
            dets = decode_heads(outputs, self.decode)
            per_image = 2 if self.flip else 1
            results = []
            for index, fields in enumerate(state["placements"]):
                where = Placement(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in fields.items()})  # fmt: skip
                mine = dets[index * per_image]
                if self.flip:
                    mine = merge_flipped(mine, dets[index * 2 + 1], where.output_hw[1])
                results.append(finish_detections(mine, where, self.sigma))
            return results


def decode_heads(heads: dict[str, np.ndarray], settings: DecodeSettings) -> np.ndarray:
    """Upstream's `_decode` on the network's heads: (B, num_dets, 8) float32 numpy."""
    tensors = [torch.from_numpy(np.ascontiguousarray(heads[name])) for name in HEAD_NAMES]
    with torch.no_grad():
        return decode_with(settings, tensors).numpy().astype(np.float32)


def _same_size_groups(
    images: Sequence[np.ndarray], input_hw: tuple[int, int] | None
) -> list[list[np.ndarray]]:
    """Consecutive images that make inputs of one shape (all of them at a fixed input size)."""
    if input_hw is not None:
        return [list(images)] if images else []
    groups: list[list[np.ndarray]] = []
    for image in images:
        if groups and groups[-1][0].shape[:2] == image.shape[:2]:
            groups[-1].append(image)
        else:
            groups.append([image])
    return groups
