"""CornerNet stand-in training, fp32 against bf16 autocast, same seeds and steps: do the loss
curves part? (issue 23: the bf16 step's gradients at the synthetic initialisation follow fp32's
only loosely, see training_profile.md). Writes the per-step losses and seconds as JSON.

    .venv/bin/python benchmarks/accuracy/bf16_loss_curve.py --model cornernet --steps 30 \
        --json benchmarks/accuracy/cornernet_bf16_loss_curve.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hgdeploy.standin import detector_training as dt


def run(name: str, steps: int, batch: int, bf16: bool) -> dict:
    seconds: list[float] = []
    last = [time.perf_counter()]

    def progress(done: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        seconds.append(now - last[0])
        last[0] = now
        print(f"{'bf16' if bf16 else 'fp32'} step {done}/{total}: loss {loss:.3f}", flush=True)

    config = dt.DetectorTrainConfig(steps=steps, batch=batch, bf16=bf16)
    result = dt.train_detector(name, config, progress=progress)
    return {"bf16_autocast": bf16, "losses": result.losses, "step_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cornernet")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    runs = [run(args.model, args.steps, args.batch, bf16) for bf16 in (False, True)]
    record = {"model": args.model, "steps": args.steps, "batch": args.batch, "runs": runs,
              "torch_threads": torch.get_num_threads()}  # fmt: skip
    args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
