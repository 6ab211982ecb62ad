"""What every stand-in trainer shares: scene seeds that never meet a held-out set, the
learning-rate cosine, the result record and the checkpoint writer."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from hgdeploy.base.artifacts import atomic_path
from hgdeploy.base.errors import HgDeployError
from hgdeploy.models.checkpoints import check_compatible, read_state_dict

TRAINING_SEEDS = 1_000_000  # scene seeds below this are held out; training's lie above
_SEEDS_PER_RUN = 10_000_000  # each run seed owns this many step seeds

AUGMENTATION_STREAM = 2**32 - 1  # the augmentation draws' generator key: no image index
Progress = Callable[[int, int, float], None]  # (steps done, steps in all, this step's loss)


@dataclass
class TrainResult:
    model: nn.Module  # in eval mode
    losses: list[float] = field(default_factory=list)  # one per step


def training_seed(run_seed: int, step: int) -> int:
    """The scene seed of `step` of run `run_seed`: never a held-out seed, never another run's."""
    if not 0 <= step < _SEEDS_PER_RUN or run_seed < 0:
        raise HgDeployError(f"need run seed >= 0 and 0 <= step < {_SEEDS_PER_RUN}")
    return TRAINING_SEEDS + run_seed * _SEEDS_PER_RUN + step


def check_held_out_seed(seed: int) -> None:
    if not 0 <= seed < TRAINING_SEEDS:
        raise HgDeployError(f"held-out seeds are 0..{TRAINING_SEEDS - 1} (got {seed})")


def cosine(done: float) -> float:
    """1 -> 0 as `done` goes 0 -> 1 (half a cosine), 0 after."""
    return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


def write_checkpoint(model: nn.Module, saved: Mapping[str, object], path: Path) -> Path:
    """torch.save `saved` (model's weights in an upstream layout) atomically, read back through
    hgdeploy's loader and checked against `model` before it replaces anything."""
    with atomic_path(path) as tmp:
        torch.save(dict(saved), tmp)
        check_compatible(model, read_state_dict(tmp), f"checkpoint {path}")
    return path


def detached_state(model: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def take_step(
    optimiser: torch.optim.Optimizer,
    loss: Tensor,
    result: TrainResult,
    progress: Progress | None,
    done: int,
    total: int,
) -> None:
    """One optimiser step on `loss`, recorded in `result` and reported to `progress`."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    result.losses.append(loss.item())
    if progress is not None:
        progress(done, total, result.losses[-1])
