"""Where a CornerNet-family stand-in training step spends its time (issue #23, item 1).

Runs `hgdeploy standin`'s own step (the trainer's scene generation, targets, loss and Adam) at
the training config's sizes (default batch 4, 255x255) and times its sections with
perf_counter: data (scenes + targets), forward (every stack's heads), loss, backward (of which
the corner pools' backward, timed by wrapping `corner_pool_backward`, which the pools' autograd
formula looks up at call time; the pools' forward likewise), and the optimiser step. Warm-up steps are run first and not
counted. With --profile-ops one more step runs under torch.profiler and its top operators by
self CPU time are printed. The training math is not changed.

    .venv/bin/python benchmarks/accuracy/profile_training_step.py --models cornernet saccade \
        --warmup 1 --steps 2 --json benchmarks/accuracy/training_profile.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hgdeploy.models import corner_pool
from hgdeploy.models.loader import load_model
from hgdeploy.pipelines.timing import StageTimes
from hgdeploy.standin import detector_training as dt
from hgdeploy.standin.scenes import detection_set
from hgdeploy.standin.training import AUGMENTATION_STREAM, training_seed


def timed(timer: StageTimes, section: str, original: Callable) -> Callable:
    """`original` unchanged, its time added to `section` (a part of an outer section)."""

    def wrapped(*args: object, **kwargs: object) -> torch.Tensor:
        with timer.stage(section):
            return original(*args, **kwargs)

    return wrapped


def one_step(
    name: str,
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    config: dt.DetectorTrainConfig,
    step: int,
    timer: StageTimes,
    bf16: bool = False,
) -> float:
    """The trainer's step `step`, section by section (the same calls train_detector makes;
    with `bf16` the forward runs in bf16 autocast and the loss in fp32 on the heads)."""
    with timer.stage("data"):
        seed = training_seed(config.seed, step)
        scenes = detection_set(config.batch, seed, config.input_hw, config.classes,
                               config.max_shapes)  # fmt: skip
        rng = np.random.default_rng([seed, AUGMENTATION_STREAM]) if config.flip else None
        batch = dt.scene_batch(name, scenes, rng)
    with timer.stage("forward"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            stacks = model.every_stack(batch.inputs)
        stacks = [tuple(head.float() for head in stack) for stack in stacks]
    with timer.stage("loss"):
        if batch.attention is not None:
            loss = dt.saccade_loss(stacks, batch.targets, batch.attention)
        else:
            loss = dt.cornernet_loss(stacks, batch.targets)
    with timer.stage("backward"):
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
    with timer.stage("optimiser"):
        optimiser.step()
    return loss.item()


def gradient_agreement(name: str, model: torch.nn.Module, config: dt.DetectorTrainConfig) -> dict:
    """How closely a bf16-autocast step's gradients follow fp32's on one batch: the cosine per
    parameter tensor (median over all; the least among the heads) and the losses."""
    batch = dt.scene_batch(name, detection_set(config.batch, training_seed(config.seed, 0),
                           config.input_hw, config.classes, config.max_shapes), None)  # fmt: skip
    losses, grads = [], []
    for bf16 in (False, True):
        model.zero_grad(set_to_none=True)
        loss = dt.detector_loss(model, batch, bf16)
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.flatten().clone() for n, p in model.named_parameters()
                      if p.grad is not None})  # fmt: skip
    cosine = {n: float(torch.nn.functional.cosine_similarity(grads[0][n], grads[1][n], dim=0))
              for n in grads[0]}  # fmt: skip
    heads = [n for n in cosine if n.split(".")[0] in HEADS]
    return {
        "loss_fp32": losses[0],
        "loss_bf16": losses[1],
        "median_cosine_all_tensors": float(np.median(list(cosine.values()))),
        "least_cosine_heads": min(cosine[n] for n in heads),
        "largest_fp32_gradient": max(float(g.abs().max()) for g in grads[0].values()),
    }


HEADS = ("tl_heats", "br_heats", "tl_tags", "br_tags", "tl_offs", "br_offs")


def profile(
    name: str, batch: int, warmup: int, steps: int, profile_ops: bool, bf16: bool = False
) -> dict:
    config = dt.DetectorTrainConfig(steps=warmup + steps, batch=batch)
    model = dt.prior_heads(load_model(name, seed=config.seed))  # type: ignore[arg-type]
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    timer = StageTimes()
    # the pools' custom ops look these up by name at call time
    corner_pool.corner_pool_backward = timed(
        timer, "pools backward (in backward)", corner_pool.corner_pool_backward
    )
    corner_pool.corner_pool_reference = timed(
        timer, "pools forward (in forward)", corner_pool.corner_pool_reference
    )
    step_seconds = []
    for step in range(warmup + steps):
        for group in optimiser.param_groups:
            group["lr"] = dt.learning_rate(config, step)
        counted = step >= warmup
        if step == warmup:
            timer.reset()  # the warm-up steps are not counted
        start = time.perf_counter()
        loss = one_step(name, model, optimiser, config, step, timer, bf16)
        elapsed = time.perf_counter() - start
        if counted:
            step_seconds.append(elapsed)
        print(f"{name} step {step} ({'counted' if counted else 'warm-up'}): "
              f"{elapsed:.2f} s, loss {loss:.4f}", flush=True)  # fmt: skip
    total = sum(step_seconds)
    per_step = {key: value / steps for key, value in timer.seconds.items()}
    record = {
        "model": name,
        "bf16_autocast": bf16,
        "batch": batch,
        "input_hw": list(config.input_hw),
        "torch_threads": torch.get_num_threads(),
        "warmup_steps": warmup,
        "counted_steps": steps,
        "step_seconds": step_seconds,
        "mean_step_seconds": total / steps,
        "sections_seconds_per_step": per_step,
        "sections_share": {key: value * steps / total for key, value in per_step.items()},
    }
    if profile_ops:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            one_step(name, model, optimiser, config, warmup + steps, timer, bf16)
        averages = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        record["top_ops_self_cpu_seconds"] = {
            e.key: e.self_cpu_time_total / 1e6 for e in averages[:15]
        }
    if bf16:
        record["gradient_agreement_at_init"] = gradient_agreement(
            name, dt.prior_heads(load_model(name, seed=config.seed)).train(), config
        )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["cornernet", "saccade"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--profile-ops", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="forward in bf16 autocast")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    records = []
    for name in args.models:
        record = profile(name, args.batch, args.warmup, args.steps, args.profile_ops, args.bf16)
        print(json.dumps(record, indent=1), flush=True)
        records.append(record)
    if args.json is not None:
        args.json.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
