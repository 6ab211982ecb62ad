"""What every stand-in trainer shares: scene seeds that never meet a held-out set, the
learning-rate cosine, the result record, the checkpoint writer, and the step loop with its
resume states.

A resume state (`<output>.resume.pt`) is written atomically every `Saving.every` steps: the
weights (BatchNorm statistics included), Adam's state, the steps done, their losses, the global
RNG streams (torch, numpy, python) and the run's settings. Scenes and augmentation draws are a
function of (run seed, step) (`training_seed`), so nothing else carries over from one step to
the next, and a resumed run ends with the uninterrupted run's weights bit for bit (same machine
and thread count: the CPU kernels' reductions depend on them). After the checkpoint is written
the state is replaced by a small finished marker (settings and losses, no weights), so a
finished run is refused as such and no 3 x model-size file stays behind.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import random
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
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


def _take_step(
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


RESUME_FORMAT = "hgdeploy standin resume state"
RESUME_VERSION = 1
RESUME_SUFFIX = ".resume.pt"
Settings = dict[str, Any]  # the model's name and every field of its trainer's config


def resume_file(output: str | Path) -> Path:
    """Where the run writing checkpoint `output` keeps its resume state: beside it."""
    output = Path(output)
    return output.with_name(output.name + RESUME_SUFFIX)


def check_state_file(output: Path, resume: str | Path | None, force: bool) -> Path:
    """The resume state beside `output`, unless it holds an earlier run's state that this run
    would replace without continuing it (`resume`) or being told to (`force`)."""
    state = resume_file(output)
    continuing = resume is not None and Path(resume).exists() and os.path.samefile(resume, state)
    if state.exists() and not force and not continuing:
        raise HgDeployError(f"{state} holds an earlier run's resume state: continue that run "
                            f"with --resume {state}, or pass --force to start over")  # fmt: skip
    return state


def run_settings(name: str, config: object) -> Settings:
    """What a resume state must match: the model and every field of the trainer's config
    (a dataclass), since any of them changes the weights a run ends with."""
    return {"model": name, **dataclasses.asdict(config)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class Saving:
    """Where a run writes its resume state (None: nowhere), every how many steps (0: never),
    and the state (from `read_resume`) it continues from (None: a fresh run)."""

    path: Path | None = None
    every: int = 0
    start: dict[str, Any] | None = None

    def due(self, done: int, steps: int) -> bool:
        """After step `done`; never after the last (the checkpoint follows at once)."""
        return self.path is not None and self.every > 0 and done % self.every == 0 and done < steps


def read_resume(path: str | Path, settings: Settings) -> dict[str, Any]:
    """The resume state at `path`, after refusing in one line a missing, corrupt or foreign
    file, another model's state, other settings (naming them) and a finished run."""
    path = Path(path)
    if not path.is_file():
        raise HgDeployError(f"--resume {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            KeyError, IndexError, TypeError, UnicodeDecodeError, OSError) as exc:  # fmt: skip
        raise HgDeployError(f"--resume {path} is corrupt or truncated ({type(exc).__name__} "
                            "reading it); resume from an intact state")  # fmt: skip
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise HgDeployError(f"--resume {path} is not a resume state of `hgdeploy standin` "
                            f"(those are the *{RESUME_SUFFIX} files beside its --output)")  # fmt: skip
    if state.get("version") != RESUME_VERSION:
        raise HgDeployError(f"--resume {path} has format version {state.get('version')!r}; "
                            f"this hgdeploy reads version {RESUME_VERSION}")  # fmt: skip
    _check_settings(f"--resume {path}", state.get("settings"), settings)
    steps = settings["steps"]
    if state.get("finished") or state.get("step") == steps:
        raise HgDeployError(f"--resume {path} is a finished run ({steps}/{steps} steps, its "
                            "checkpoint written): nothing to resume")  # fmt: skip
    step, losses = state.get("step"), state.get("losses")
    complete = all(key in state for key in ("model_state", "optimiser", "rng"))
    if not (complete and isinstance(step, int) and 0 < step < steps and isinstance(losses, list)
            and len(losses) == step):  # fmt: skip
        raise HgDeployError(f"--resume {path} is corrupt: its step count, losses or states are "
                            "missing or inconsistent")  # fmt: skip
    return state


def _check_settings(what: str, saved: object, settings: Settings) -> None:
    """Refuse `saved` settings other than `settings`, naming each that differs."""
    if not isinstance(saved, dict):
        raise HgDeployError(f"{what} is corrupt: it records no run settings")
    if saved.get("model") != settings["model"]:
        raise HgDeployError(f"{what} is a resume state of {saved.get('model')}, not "
                            f"{settings['model']}")  # fmt: skip
    differ = [
        f"{key.replace('_', '-')} {saved.get(key)!r} (this run: {value!r})"
        for key, value in settings.items()
        if saved.get(key) != value
    ]
    if differ:
        raise HgDeployError(f"{what} was saved by a run with {', '.join(differ)}; "
                            "resume with the settings it started with")  # fmt: skip


def _rng_states() -> dict[str, Any]:
    """The global RNG streams (the trainers draw from per-step generators; these are saved so
    that anything drawing from the globals resumes where it was)."""
    name, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore
    return {
        "torch": torch.get_rng_state(),
        "numpy": (name, [int(k) for k in keys], int(position), int(has_gauss), float(gauss)),
        "python": random.getstate(),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(keys, np.uint32), position, has_gauss, gauss))
    random.setstate(states["python"])


def _write_resume(path: Path, settings: Settings, fields: dict[str, Any]) -> None:
    """torch.save the state atomically: a stop mid-write leaves the previous state and no
    temporary file (SIGTERM and Ctrl-C unwind through `atomic_path`)."""
    state = {"format": RESUME_FORMAT, "version": RESUME_VERSION, "settings": settings, **fields}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def mark_finished(path: str | Path, settings: Settings, losses: list[float]) -> Path:
    """Replace the run's resume state with a finished marker (settings and the loss curve, no
    weights): call it after the checkpoint is written."""
    _write_resume(Path(path), settings, {"finished": True, "step": settings["steps"],
                                         "losses": list(losses)})  # fmt: skip
    return Path(path)


def _restore(state: dict[str, Any], model: nn.Module, optimiser: torch.optim.Optimizer) -> None:
    try:
        model.load_state_dict(state["model_state"])
        optimiser.load_state_dict(state["optimiser"])
        _set_rng_states(state["rng"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise HgDeployError(f"the resume state does not fit the model ({type(exc).__name__}); "
                            "was it written by another hgdeploy version?") from None  # fmt: skip


def train_steps(
    model: nn.Module,
    settings: Settings,
    lr: Callable[[int], float],
    loss: Callable[[int], Tensor],
    progress: Progress | None = None,
    saving: Saving | None = None,
) -> TrainResult:
    """Adam on `loss(step)` at `lr(step)` for `settings["steps"]` steps, from `saving.start`'s
    step when resuming; a resume state written when `saving` says; `model` in eval mode after."""
    saving = saving or Saving()
    steps = settings["steps"]
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr(0))
    result = TrainResult(model)
    first = 0
    if saving.start is not None:
        _check_settings("the resume state", saving.start.get("settings"), settings)
        _restore(saving.start, model, optimiser)
        first, result.losses = saving.start["step"], list(saving.start["losses"])
        if progress is not None:
            progress(first, steps, result.losses[-1])
    for step in range(first, steps):
        for group in optimiser.param_groups:
            group["lr"] = lr(step)
        _take_step(optimiser, loss(step), result, progress, step + 1, steps)
        if saving.due(step + 1, steps):
            fields = {"step": step + 1, "losses": result.losses, "rng": _rng_states(),
                      "model_state": model.state_dict(), "optimiser": optimiser.state_dict()}  # fmt: skip
            _write_resume(saving.path, settings, fields)  # type: ignore[arg-type]
    model.eval()
    return result
