"""Which zoo models a stand-in can be trained for, and how: one entry per model, so the CLI
dispatches without knowing pose from detection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from hgdeploy.base.errors import HgDeployError
from hgdeploy.standin import detector_training, pose_training
from hgdeploy.standin.scenes import SceneSet
from hgdeploy.standin.training import Progress, Saving, Settings, TrainResult, run_settings


@dataclass(frozen=True)
class RunSettings:
    """What `hgdeploy standin` lets a user choose; each trainer maps it to its own config."""

    steps: int
    full_steps: int  # pose only: the last steps at the zoo's input size
    batch: int
    seed: int
    bf16: bool = False  # detectors only: the network in bf16 autocast


@dataclass(frozen=True)
class Standin:
    train: Callable[[RunSettings, Progress | None, Saving | None], TrainResult]
    settings: Callable[[RunSettings], Settings]  # what a resume state of the run records
    save: Callable[[nn.Module, Path], Path]  # the checkpoint, in the upstream layout
    held_out: Callable[[int, int], SceneSet]  # (count, seed) -> the validation set
    full_size_phase: bool  # whether the last steps run at the zoo's input size (--full-steps)


def _pose(name: str) -> Standin:
    def config(run: RunSettings) -> pose_training.TrainConfig:
        if run.bf16:
            raise HgDeployError(f"--bf16 is for the detector stand-ins; {name} trains in fp32")
        return pose_training.TrainConfig(
            steps=run.steps, batch=run.batch, full_steps=run.full_steps, seed=run.seed
        )

    def train(run: RunSettings, progress: Progress | None, saving: Saving | None) -> TrainResult:
        return pose_training.train_pose(name, config(run), progress=progress, saving=saving)

    return Standin(
        train,
        lambda run: run_settings(name, config(run)),
        lambda model, path: pose_training.save_checkpoint(model, name, path),
        lambda count, seed: pose_training.held_out_set(name, count, seed=seed),
        full_size_phase=True,
    )


def _detector(name: str) -> Standin:
    def config(run: RunSettings) -> detector_training.DetectorTrainConfig:
        return detector_training.DetectorTrainConfig(
            steps=run.steps, batch=run.batch, seed=run.seed, bf16=run.bf16
        )

    def train(run: RunSettings, progress: Progress | None, saving: Saving | None) -> TrainResult:
        return detector_training.train_detector(name, config(run), progress=progress,
                                                saving=saving)  # fmt: skip

    return Standin(
        train,
        lambda run: run_settings(name, config(run)),
        lambda model, path: detector_training.save_detector_checkpoint(model, name, path),
        lambda count, seed: detector_training.detector_held_out_set(count, seed),
        full_size_phase=False,
    )


STANDINS: dict[str, Standin] = {
    **{name: _pose(name) for name in pose_training.STANDIN_MODELS},
    **{name: _detector(name) for name in detector_training.DETECTOR_STANDINS},
}


def get_standin(name: str) -> Standin:
    """`name`'s trainer, or one line saying why there is none."""
    if name in STANDINS:
        return STANDINS[name]
    raise HgDeployError(f"no stand-in for {name}: it is not a zoo model ({', '.join(STANDINS)})")
