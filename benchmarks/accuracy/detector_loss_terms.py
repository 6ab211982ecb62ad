"""Which terms of a trained detector stand-in's loss stay high: each term per stack on held-out
scenes.

The Saccade stand-in's training loss stopped falling near 10.7 where CornerNet's reached 2.7
(accuracy/README.md); the total hides which part stays. This splits upstream's loss
(`hgdeploy.standin.corner_losses`, the functions the trainer calls) into the heatmaps' focal
terms, the tags' pull and push, the offsets and (Saccade) the three attention levels, per stack,
on scenes of the training task drawn from held-out seeds (no mirror), the model in eval mode.
The terms are checked to sum to the trainer's loss. Writes JSON; asserts nothing.

    .venv/bin/python benchmarks/accuracy/detector_loss_terms.py --model saccade \
        --checkpoint saccade_standin.pkl --batches 8 --output saccade_loss_terms.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from hgdeploy.models.loader import load_model
from hgdeploy.standin import corner_losses
from hgdeploy.standin.corner_targets import CornerTargets
from hgdeploy.standin.detector_training import (
    CLASSES,
    DETECTOR_STANDINS,
    MAX_SHAPES,
    SCENE_HW,
    scene_batch,
)
from hgdeploy.standin.scenes import detection_set

HELD_OUT_SEED = 700_000  # below training's seeds, away from the validation (0) and calibration
ATTENTION_LEVELS = ("att_16", "att_32", "att_64")


def stack_terms(stack: tuple, targets: CornerTargets, attention: list | None) -> dict[str, float]:
    """One stack's loss terms: the trainer's corner terms and (Saccade) its attention levels."""
    terms = corner_losses.stack_terms(stack, targets)
    for level, truth in enumerate(attention or []):
        terms[ATTENTION_LEVELS[level]] = corner_losses.focal_loss(stack[6 + level], truth)
    return {name: float(value) for name, value in terms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=DETECTOR_STANDINS, required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    model = load_model(args.model, args.checkpoint).eval()
    sums: dict[str, float] = defaultdict(float)
    totals = []
    for index in range(args.batches):
        scenes = detection_set(args.batch, HELD_OUT_SEED + index, SCENE_HW, CLASSES, MAX_SHAPES)
        batch = scene_batch(args.model, scenes)
        with torch.no_grad():
            stacks = model.every_stack(batch.inputs)
            if batch.attention is not None:
                trainer = corner_losses.saccade_loss(stacks, batch.targets, batch.attention)
            else:
                trainer = corner_losses.cornernet_loss(stacks, batch.targets)
        count = len(stacks)
        added = 0.0
        for number, stack in enumerate(stacks):
            terms = stack_terms(stack, batch.targets, batch.attention)
            for name, value in terms.items():
                sums[f"stack{number}/{name}"] += value / args.batches
                # the trainer divides corner terms by the stacks once, attention twice
                added += value / count / (count if name.startswith("att") else 1)
        totals.append((float(trainer), added))
        print(index, round(float(trainer), 4), round(added, 4), flush=True)
    record = {
        "model": args.model,
        "checkpoint": args.checkpoint,
        "scenes": f"detection_set({args.batch}, {HELD_OUT_SEED}+i, {SCENE_HW}), i < {args.batches}",
        "trainer_loss_mean": sum(t for t, _ in totals) / len(totals),
        "terms_sum_mean": sum(a for _, a in totals) / len(totals),
        "terms_mean": dict(sums),
    }
    Path(args.output).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
