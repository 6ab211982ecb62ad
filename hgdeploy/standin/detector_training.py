"""Train a CornerNet-family stand-in (zoo "squeeze", "cornernet", "saccade") on generated shape
scenes.

As for the pose stand-ins, released checkpoints cannot be downloaded here; the detectors learn
`scenes.detection_set`'s shapes instead (a few classes, fresh scenes every step). Inputs are made
as the test pipeline makes them (RGB -> BGR, /255, COCO mean/std) at a reduced size of the
128k-1 form the pipeline feeds natively (default 255x255, a quarter of the 511x511 pixels), with
upstream's horizontal flip; the loss is upstream's on every stack (`corner_losses`). What
differs per model is in `CORNER_TASKS`: Saccade's sampler draws its bumps at IoU 0.5, masks
objects under 16 pixels out of the loss and adds attention targets (`saccade_targets`); its
random crops around objects are not needed here (a scene already is one 255x255 view).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import get_spec
from hgdeploy.models.cornernet import CornerNetHeads
from hgdeploy.models.loader import load_model
from hgdeploy.pipelines.categories import COCO_CATEGORY_IDS
from hgdeploy.pipelines.cornernet import normalise_bgr
from hgdeploy.standin import saccade_targets
from hgdeploy.standin.corner_losses import cornernet_loss, saccade_loss
from hgdeploy.standin.corner_targets import GAUSSIAN_IOU, CornerTargets, corner_targets
from hgdeploy.standin.scenes import SceneSet, detection_set
from hgdeploy.standin.training import (
    AUGMENTATION_STREAM,
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

DETECTOR_STANDINS = ("squeeze", "cornernet", "saccade")
SCENE_HW = (255, 255)  # 128k-1: the pipeline feeds such an image unpadded
CLASSES = 4  # shape kinds in the stand-in task (of the heads' 80 channels)
MAX_SHAPES = 4  # per scene
CHECKPOINT_FILE = {
    "squeeze": "CornerNet_Squeeze_stand-in.pkl",
    "cornernet": "CornerNet_stand-in.pkl",
    "saccade": "CornerNet_Saccade_stand-in.pkl",
}


@dataclass(frozen=True)
class CornerTask:
    """What a model's upstream sampler and loss do differently (see module doc)."""

    gaussian_iou: float = GAUSSIAN_IOU
    min_scale: int | None = None  # objects below it are masked out of the heatmap loss
    attention: bool = False  # Saccade's attention maps are supervised too


CORNER_TASKS = {
    "squeeze": CornerTask(),
    "cornernet": CornerTask(),
    "saccade": CornerTask(saccade_targets.GAUSSIAN_IOU, saccade_targets.MIN_SCALE, attention=True),
}


@dataclass(frozen=True)
class DetectorTrainConfig:
    """One run: `steps` Adam steps of `batch` fresh scenes at `input_hw`, lr on a cosine to 0
    after `warmup` linear steps (upstream: 2.5e-4 at batch 55, no warmup; a short run from
    synthetic weights needs the warmup to keep the focal loss from blowing up)."""

    steps: int
    batch: int = 8
    input_hw: tuple[int, int] = SCENE_HW
    lr: float = 5e-4
    warmup: int = 20
    seed: int = 0
    classes: int = CLASSES
    max_shapes: int = MAX_SHAPES
    flip: bool = True
    # The network in bf16 autocast, the loss in fp32 on the heads cast back; weights, Adam and
    # BatchNorm statistics stay fp32. CornerNet at batch 4, 255x255: 5.3 s/step against 12.6,
    # with the fp32 loss curve over 30 steps (benchmarks/accuracy/training_profile.md).
    bf16: bool = False


def _check_name(name: str) -> None:
    if name not in DETECTOR_STANDINS:
        raise HgDeployError(
            f"no detector stand-in for {name!r}: use one of {', '.join(DETECTOR_STANDINS)}"
        )


def detector_held_out_set(count: int, seed: int = 0) -> SceneSet:
    """The detector stand-ins' validation set: seeds below training's, the training task."""
    check_held_out_seed(seed)
    return detection_set(count, seed, SCENE_HW, CLASSES, MAX_SHAPES)


def output_hw(name: str, input_hw: tuple[int, int]) -> tuple[int, int]:
    """The heads' size at `input_hw`, by the pipeline's rule ((side + 1) / stride)."""
    spec = get_spec(name)
    stride = (spec.input_hw[0] + 1) // spec.outputs[0].shape[1]
    return ((input_hw[0] + 1) // stride, (input_hw[1] + 1) // stride)


@dataclass
class DetectorBatch:
    inputs: Tensor  # (N, 3, H, W), normalised as the pipeline feeds the network
    targets: CornerTargets
    attention: list[Tensor] | None  # Saccade: one (N, 1, h, w) map per level


def scene_batch(
    name: str, scenes: SceneSet, rng: np.random.Generator | None = None
) -> DetectorBatch:
    """Network inputs and targets for scenes already at the training size; mirrored with
    probability 1/2 per image when `rng` is given (upstream's boxes: x -> W-1-x)."""
    height, width = scenes.images[0].shape[:2]
    by_image: dict[int, list[dict]] = {entry["id"]: [] for entry in scenes.coco["images"]}
    for annotation in scenes.coco["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    class_of = {category: index for index, category in enumerate(COCO_CATEGORY_IDS)}
    inputs, boxes, classes = [], [], []
    for image, entry in zip(scenes.images, scenes.coco["images"], strict=True):
        objects = by_image[entry["id"]]
        xywh = np.array([a["bbox"] for a in objects], np.float64).reshape(-1, 4)
        corners = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        bgr = image[..., ::-1]
        if rng is not None and rng.random() < 0.5:
            bgr = bgr[:, ::-1]
            corners[:, [0, 2]] = width - corners[:, [2, 0]] - 1
        corners[:, 0::2] = corners[:, 0::2].clip(0, width - 1)
        corners[:, 1::2] = corners[:, 1::2].clip(0, height - 1)
        kept = (corners[:, 2] > corners[:, 0]) & (corners[:, 3] > corners[:, 1])
        inputs.append(normalise_bgr(np.ascontiguousarray(bgr)))
        boxes.append(corners[kept])
        classes.append(np.array([class_of[a["category_id"]] for a in objects], int)[kept])
    task = CORNER_TASKS[name]
    categories = get_spec(name).outputs[0].shape[0]
    targets = corner_targets(boxes, classes, (height, width), output_hw(name, (height, width)),
                             categories, task.gaussian_iou, task.min_scale)  # fmt: skip
    attention = (
        saccade_targets.attention_targets(boxes, (height, width)) if task.attention else None
    )
    return DetectorBatch(torch.from_numpy(np.stack(inputs)), targets, attention)


def detector_loss(model: CornerNetHeads, batch: DetectorBatch, bf16: bool = False) -> Tensor:
    """Upstream's training loss of the model on `batch`, over every stack (with `bf16`, the
    network runs in bf16 autocast and the loss in fp32)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        stacks = model.every_stack(batch.inputs)
    if bf16:
        stacks = [tuple(head.float() for head in stack) for stack in stacks]
    if batch.attention is not None:
        return saccade_loss(stacks, batch.targets, batch.attention)
    return cornernet_loss(stacks, batch.targets)


def prior_heads(model: CornerNetHeads) -> CornerNetHeads:
    """Upstream's focal-loss prior (bias -2.19: p = 0.1) on every focal head (heatmaps and
    Saccade's attention maps), which the synthetic weights replaced. Without it the heatmaps'
    loss starts near 80 x the object count and Saccade's attention terms at 50-2700, whose
    first steps push the attention logits below the loss's clamp, where no gradient flows."""
    model.restore_focal_prior()
    return model


def learning_rate(config: DetectorTrainConfig, step: int) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    return config.lr * cosine((step - config.warmup) / max(1, config.steps - config.warmup))


def train_detector(
    name: str,
    config: DetectorTrainConfig,
    *,
    model: CornerNetHeads | None = None,
    progress: Progress | None = None,
    saving: Saving | None = None,
) -> TrainResult:
    """Train `model` (default: the synthetic initialisation of `config.seed` with upstream's
    heat prior) on fresh scenes every step; returns it in eval mode with the loss history.
    `saving`: where resume states go and the one this run continues from."""
    _check_name(name)
    if model is None:
        model = prior_heads(load_model(name, seed=config.seed))  # type: ignore[arg-type]

    def loss(step: int) -> Tensor:
        seed = training_seed(config.seed, step)
        scenes = detection_set(config.batch, seed, config.input_hw, config.classes,
                               config.max_shapes)  # fmt: skip
        rng = np.random.default_rng([seed, AUGMENTATION_STREAM]) if config.flip else None
        return detector_loss(model, scene_batch(name, scenes, rng), config.bf16)

    settings = run_settings(name, config)
    return train_steps(model, settings, lambda step: learning_rate(config, step), loss,
                       progress, saving)  # fmt: skip


def save_detector_checkpoint(model: nn.Module, name: str, path: str | Path) -> Path:
    """CornerNet-Lite's format: a bare state_dict keyed `module.*` (its DummyModule wrapper);
    into a directory under a `.pkl` name like upstream's."""
    _check_name(name)
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE[name]
    state = {f"module.{key}": value for key, value in detached_state(model).items()}
    return write_checkpoint(model, state, path)
