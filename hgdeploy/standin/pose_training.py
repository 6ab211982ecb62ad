"""Train a pose stand-in (zoo "hrnet" or "hourglass") from its synthetic initialisation.

Released checkpoints cannot be downloaded here, so the nets whose fp16/int8 deployments are
judged learn the stick-figure scenes of `hgdeploy.standin.scenes` instead. A sample is a person
crop made exactly as the model's test pipeline makes it (so training sees what evaluation will
show), with upstream's light augmentation and Gaussian heatmap targets at input/4. Scenes are
drawn fresh every step from a seed of their own (no fixed set to overfit); held-out sets use
seeds below TRAINING_SEEDS, which training never reaches. ("Accuracy" in the notes below is
HRNet's training metric, heatmap peaks within 5% of the map size, on 64 held-out crops.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, get_spec
from hgdeploy.models.loader import load_model
from hgdeploy.pipelines.categories import COCO_FLIP_PAIRS, MPII_FLIPPED_PARTS
from hgdeploy.pipelines.hourglass import crop, crop_transform
from hgdeploy.pipelines.hrnet import affine_transform
from hgdeploy.pipelines.pose_boxes import hourglass_centre_scale, hrnet_centre_scale
from hgdeploy.standin.scenes import SceneSet, pose_set
from hgdeploy.standin.training import (
    AUGMENTATION_STREAM,
    TRAINING_SEEDS,
    Progress,
    Saving,
    TrainResult,
    check_held_out_seed,
    cosine,
    detached_state,
    run_settings,
    train_steps,
    training_seed,
    write_checkpoint,
)

__all__ = ["TRAINING_SEEDS", "Progress", "TrainResult", "training_seed"]  # re-exported

SCALE_RANGE = (0.75, 1.25)  # the crop box is this many times the person box's (upstream)
ROTATION = 30.0  # degrees either way, on ROTATION_SHARE of the samples (HRNet's 0.6)
ROTATION_SHARE = 0.6
STRIDE = 4  # input pixels per heatmap pixel for both nets
CHECKPOINT_FILES = {"hrnet": "final_state.pth", "hourglass": "checkpoint.pt"}
_MEAN = np.asarray(IMAGENET_MEAN_RGB, np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGENET_STD_RGB, np.float32).reshape(3, 1, 1)
_MIRROR = dict(COCO_FLIP_PAIRS) | {right: left for left, right in COCO_FLIP_PAIRS}
HEAD_INIT_STD = 0.001  # HRNet's init_weights for its output convs


@dataclass(frozen=True)
class _Task:
    skeleton: str
    flipped: tuple[int, ...]  # joint j of a mirrored person is joint flipped[j] of the original
    reduced_hw: tuple[int, int]  # the default training input: the nets are fully convolutional
    multiple: int  # of which input sides must be (HRNet fuses /32 maps, the hourglass /64)


_TASKS = {
    "hrnet": _Task("coco", tuple(_MIRROR.get(j, j) for j in range(17)), (128, 96), 32),
    "hourglass": _Task("mpii", MPII_FLIPPED_PARTS, (128, 128), 64),
}


STANDIN_MODELS: tuple[str, ...] = tuple(_TASKS)  # the zoo models a stand-in can be trained for


def _task(name: str) -> _Task:
    """`name`'s task, or a one-line error naming the models that have one."""
    if name not in _TASKS:
        raise HgDeployError(f"no pose stand-in for {name!r}: use one of {', '.join(_TASKS)}")
    return _TASKS[name]


def person_sample(
    name: str,
    image: np.ndarray,
    keypoints: np.ndarray,
    box: tuple[float, float, float, float],
    input_hw: tuple[int, int],
    *,
    flip: bool = False,
    scale: float = 1.0,
    rotation: float = 0.0,
    sigma: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input, targets, weights) for one person: the test pipeline's crop of `box` (mirrored,
    its box `scale` times as large and turned by `rotation` degrees first, for augmentation)
    and the Gaussian heatmaps of `keypoints` (J x 3 COCO x, y, v) in it."""
    task = _task(name)
    points = np.asarray(keypoints, np.float64).reshape(-1, 3)
    if flip:
        image, points, box = _mirror(image, points, box, task.flipped)
    height, width = input_hw
    if name == "hrnet":
        centre, box_scale = hrnet_centre_scale(box, width / height)
        box_scale = box_scale * np.float32(scale)
    elif height != width:
        raise HgDeployError(f"the hourglass crop is square: got {height}x{width}")
    else:
        centre, box_scale = hourglass_centre_scale(box)
        box_scale *= scale
    image, turn, centre = _turned(image, centre, rotation)
    if name == "hrnet":
        warp = affine_transform(centre, box_scale, (width, height))
        pixels = cv2.warpAffine(image, warp, (width, height), flags=cv2.INTER_LINEAR)
        tensor = (pixels.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)
        inputs = (tensor - _MEAN) / _STD
    else:
        inputs = np.float32(crop(image, centre, box_scale, height) / 255)
        warp = crop_transform(centre, box_scale, height)
    in_crop = _apply(warp, _apply(turn, points[:, :2]))
    targets, weights = heatmap_targets(name, in_crop, points[:, 2] > 0, input_hw, sigma)
    return inputs.astype(np.float32), targets, weights


def _mirror(
    image: np.ndarray, points: np.ndarray, box: tuple, flipped: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The image mirrored (pixel x -> W-1-x), its joints renamed left <-> right, and the box."""
    width = image.shape[1]
    mirrored = points[list(flipped)].copy()
    mirrored[:, 0] = np.where(mirrored[:, 2] > 0, width - 1 - mirrored[:, 0], 0.0)
    x, y, w, h = box
    return np.ascontiguousarray(image[:, ::-1]), mirrored, (width - x - w, y, w, h)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _turned(
    image: np.ndarray, centre: np.ndarray, degrees: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image turned about `centre` onto a canvas that keeps all of it (the crop then shows
    what upstream's rotated warp shows), the 2x3 image -> canvas map and the canvas centre."""
    if degrees == 0:
        return image, np.eye(2, 3), centre
    reach = math.ceil(math.hypot(*image.shape[:2]))
    shift = np.round(reach - centre.astype(np.float64))
    turn = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), degrees, 1.0)
    turn[:, 2] += shift
    canvas = cv2.warpAffine(image, turn, (2 * reach, 2 * reach), flags=cv2.INTER_LINEAR)
    return canvas, turn, (centre + shift).astype(centre.dtype)


def heatmap_targets(
    name: str, points: np.ndarray, labelled: np.ndarray, input_hw: tuple[int, int], sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's targets for joints at `points` (J x 2 input pixels): a peak-1 Gaussian cut at
    3 sigma on the heatmap pixel HRNet rounds to (the hourglass truncates), and the weights:
    HRNet's are 0 for unlabelled joints and ones whose Gaussian misses the map; the hourglass's
    loss has none, such joints just get an empty map."""
    size = np.array([input_hw[1] // STRIDE, input_hw[0] // STRIDE])
    mu = np.trunc(points / STRIDE + (0.5 if name == "hrnet" else 0.0))
    reach = int(3 * sigma)
    if name == "hrnet":
        shown = labelled & (mu + reach + 1 >= 0).all(1) & (mu - reach < size).all(1)
    else:
        shown = labelled & (mu >= 0).all(1) & (mu < size).all(1)
    dx = np.arange(size[0])[None, None, :] - mu[:, 0, None, None]
    dy = np.arange(size[1])[None, :, None] - mu[:, 1, None, None]
    maps = np.exp(-(dx**2 + dy**2) / (2 * sigma**2)) * (np.abs(dx) <= reach) * (np.abs(dy) <= reach)
    maps *= shown[:, None, None]
    weights = shown if name == "hrnet" else np.ones_like(shown)
    return maps.astype(np.float32), weights.astype(np.float32)


def scene_batch(
    name: str,
    scenes: SceneSet,
    input_hw: tuple[int, int],
    rng: np.random.Generator | None = None,
    sigma: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs in the model's layout, targets (N, J, h/4, w/4) and weights (N, J): one sample
    per scene (its one person, at its bbox), augmented with draws from `rng`."""
    samples = []
    for image, ann in zip(scenes.images, scenes.coco["annotations"], strict=True):
        flip, scale, rotation = False, 1.0, 0.0
        if rng is not None:
            flip, scale = bool(rng.random() < 0.5), float(rng.uniform(*SCALE_RANGE))
            if rng.random() < ROTATION_SHARE:
                rotation = float(rng.uniform(-ROTATION, ROTATION))
        box = tuple(ann["bbox"])
        augment = {"flip": flip, "scale": scale, "rotation": rotation, "sigma": sigma}
        samples.append(person_sample(name, image, ann["keypoints"], box, input_hw, **augment))
    inputs, targets, weights = (np.stack(parts) for parts in zip(*samples, strict=True))
    return inputs, targets, weights


def held_out_set(
    name: str, count: int, seed: int = 0, size: tuple[int, int] | None = None
) -> SceneSet:
    """A validation set for `name`'s skeleton (size default: the zoo input size) from a seed
    that no training step uses."""
    check_held_out_seed(seed)
    return pose_set(count, seed, _task(name).skeleton, size or get_spec(name).input_hw)


def pose_loss(name: str, output: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """HRNet: JointsMSELoss with target weights (0.5 x the mean weighted squared error). The
    hourglass: every stack's mean squared error against the same targets, summed over stacks."""
    _task(name)
    if name == "hourglass":
        return (output - targets[:, None]).pow(2).mean(dim=(2, 3, 4)).sum(1).mean()
    return 0.5 * ((output - targets) * weights[:, :, None, None]).pow(2).mean()


@dataclass(frozen=True)
class TrainConfig:
    """One run: `steps` optimiser steps, the last `full_steps` of them at the zoo's input size
    (with `full_batch`), the others at `input_hw` (None: a reduced size, 128x96 or 128x128).
    Batch 8 beat 16 per second in short HRNet runs (held-out accuracy 0.31 against 0.24)."""

    steps: int
    batch: int = 8
    input_hw: tuple[int, int] | None = None
    full_steps: int = 0
    full_batch: int | None = None  # None: batch
    lr: float = 1e-3  # Adam, as HRNet; see learning_rate for the schedule
    full_lr: float = 3e-4
    seed: int = 0  # the synthetic initialisation's and the scenes'
    scene_hw: tuple[int, int] | None = None  # None: the zoo input size
    sigma: float = 2.0
    augment: bool = True


def learning_rate(config: TrainConfig, step: int) -> float:
    """A cosine from lr to 0 over the reduced-size steps; the full-size phase after them
    starts another from full_lr. It must move the weights, not only BN statistics: 15 HRNet
    steps at 256x192 from 3e-4 took accuracy 0.09 -> 0.27, from the cosine's tail (2.4e-5)
    to 0.11."""
    reduced = config.steps - config.full_steps
    if step >= reduced > 0:
        return config.full_lr * cosine((step - reduced) / config.full_steps)
    return config.lr * cosine(step / (reduced or config.steps))


def train_pose(
    name: str,
    config: TrainConfig,
    *,
    model: nn.Module | None = None,
    progress: Progress | None = None,
    saving: Saving | None = None,
) -> TrainResult:
    """Train `model` (default: the synthetic initialisation of `config.seed` with upstream's
    heads) with Adam, BatchNorm in train mode, on fresh scenes every step; returns it in eval
    mode with the loss history. `saving`: where resume states go and the one this run
    continues from."""
    task, spec = _task(name), get_spec(name)
    if not 0 <= config.full_steps <= config.steps:
        raise HgDeployError(f"full_steps must be 0..steps (got {config.full_steps})")
    reduced_hw = config.input_hw or task.reduced_hw
    if reduced_hw[0] % task.multiple or reduced_hw[1] % task.multiple:
        raise HgDeployError(f"{name} needs input sides that are multiples of {task.multiple}")
    if model is None:
        model = upstream_heads(load_model(name, seed=config.seed), config.seed)

    def loss(step: int) -> Tensor:
        full = step >= config.steps - config.full_steps
        input_hw = spec.input_hw if full else reduced_hw
        count = (config.full_batch or config.batch) if full else config.batch
        seed = training_seed(config.seed, step)
        scenes = pose_set(count, seed, task.skeleton, config.scene_hw or spec.input_hw)
        rng = np.random.default_rng([seed, AUGMENTATION_STREAM]) if config.augment else None
        batch = scene_batch(name, scenes, input_hw, rng, config.sigma)
        inputs, targets, weights = (torch.from_numpy(part) for part in batch)
        return pose_loss(name, model(inputs), targets, weights)

    settings = run_settings(name, config)
    return train_steps(model, settings, lambda step: learning_rate(config, step), loss,
                       progress, saving)  # fmt: skip


def upstream_heads(model: nn.Module, seed: int = 0) -> nn.Module:
    """`model`'s output convs re-drawn as HRNet initialises them (N(0, 0.001), bias 0): the
    synthetic heads put out O(1) maps (HRNet: rms 4.5) against peak-1 targets, and 40 HRNet
    steps left the loss at 0.14 (0.005 with these heads; all-zero maps score 0.008). Drawn from
    a generator of `seed`: torch seeds its global one at random in every process, so drawing
    from that made no two runs of one --seed start alike (nor a resumed run checkable)."""
    generator = torch.Generator().manual_seed(seed)
    heads = getattr(model, "outs", None) or [model.final_layer]  # hourglass / HRNet
    for head in heads:
        conv = head.conv if hasattr(head, "conv") else head
        nn.init.normal_(conv.weight, std=HEAD_INIT_STD, generator=generator)
        nn.init.zeros_(conv.bias)
    return model


def save_checkpoint(model: nn.Module, name: str, path: str | Path) -> Path:
    """Write `model`'s weights in the upstream format `name` loads from (HRNet: a bare
    state_dict, its final_state.pth; the hourglass: {'state_dict': ...} keyed
    `model.module.*`, its checkpoint.pt); into a directory under that file name. Read back and
    checked against the model before it replaces anything."""
    _task(name)
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILES[name]
    state = detached_state(model)
    hourglass = {"state_dict": {f"model.module.{k}": v for k, v in state.items()}}
    return write_checkpoint(model, hourglass if name == "hourglass" else state, path)
