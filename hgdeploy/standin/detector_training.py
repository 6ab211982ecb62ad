"""Train a CornerNet-family stand-in (zoo "squeeze", "cornernet") on generated shape scenes.

As for the pose stand-ins, released checkpoints cannot be downloaded here; the detectors learn
`scenes.detection_set`'s shapes instead (a few classes, fresh scenes every step). Inputs are made
as the test pipeline makes them (RGB -> BGR, /255, COCO mean/std) at a reduced size of the
128k-1 form the pipeline feeds natively (default 255x255, a quarter of the 511x511 pixels), with
upstream's horizontal flip; the loss is upstream's on every stack (`corner_losses`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import get_spec
from hgdeploy.models.cornernet import HEAT_BIAS_INIT, CornerNetHeads
from hgdeploy.models.loader import load_model
from hgdeploy.pipelines.categories import COCO_CATEGORY_IDS
from hgdeploy.pipelines.cornernet import normalise_bgr
from hgdeploy.standin.corner_losses import cornernet_loss
from hgdeploy.standin.corner_targets import CornerTargets, corner_targets
from hgdeploy.standin.scenes import SceneSet, detection_set
from hgdeploy.standin.training import (
    AUGMENTATION_STREAM,
    Progress,
    TrainResult,
    check_held_out_seed,
    cosine,
    detached_state,
    take_step,
    training_seed,
    write_checkpoint,
)

DETECTOR_STANDINS = ("squeeze", "cornernet")  # saccade also needs its attention targets
SCENE_HW = (255, 255)  # 128k-1: the pipeline feeds such an image unpadded
CLASSES = 4  # shape kinds in the stand-in task (of the heads' 80 channels)
MAX_SHAPES = 4  # per scene
CHECKPOINT_FILE = {
    "squeeze": "CornerNet_Squeeze_stand-in.pkl",
    "cornernet": "CornerNet_stand-in.pkl",
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


def scene_batch(
    name: str, scenes: SceneSet, rng: np.random.Generator | None = None
) -> tuple[torch.Tensor, CornerTargets]:
    """Network inputs (N, 3, H, W) and targets for scenes already at the training size;
    mirrored with probability 1/2 per image when `rng` is given (upstream's boxes: x -> W-1-x)."""
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
    spec = get_spec(name)
    categories = spec.outputs[0].shape[0]
    targets = corner_targets(boxes, classes, (height, width), output_hw(name, (height, width)),
                             categories)  # fmt: skip
    return torch.from_numpy(np.stack(inputs)), targets


def prior_heads(model: CornerNetHeads) -> CornerNetHeads:
    """Upstream's heatmap prior on every stack (bias -2.19: p = 0.1), which the synthetic
    weights replaced; without it the focal loss starts near 80 x the object count."""
    for heat in (*model.tl_heats, *model.br_heats):
        nn.init.constant_(heat[-1].bias, HEAT_BIAS_INIT)
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
) -> TrainResult:
    """Train `model` (default: the synthetic initialisation of `config.seed` with upstream's
    heat prior) on fresh scenes every step; returns it in eval mode with the loss history."""
    _check_name(name)
    if model is None:
        model = prior_heads(load_model(name, seed=config.seed))  # type: ignore[arg-type]
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    result = TrainResult(model)
    for step in range(config.steps):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(config, step)
        seed = training_seed(config.seed, step)
        scenes = detection_set(config.batch, seed, config.input_hw, config.classes,
                               config.max_shapes)  # fmt: skip
        rng = np.random.default_rng([seed, AUGMENTATION_STREAM]) if config.flip else None
        inputs, targets = scene_batch(name, scenes, rng)
        loss = cornernet_loss(model.every_stack(inputs), targets)
        take_step(optimiser, loss, result, progress, step + 1, config.steps)
    model.eval()
    return result


def save_detector_checkpoint(model: nn.Module, name: str, path: str | Path) -> Path:
    """CornerNet-Lite's format: a bare state_dict keyed `module.*` (its DummyModule wrapper);
    into a directory under a `.pkl` name like upstream's."""
    _check_name(name)
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE[name]
    state = {f"module.{key}": value for key, value in detached_state(model).items()}
    return write_checkpoint(model, state, path)
