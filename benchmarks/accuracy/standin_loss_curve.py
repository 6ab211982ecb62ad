"""A trained stand-in's loss curve, read from the finished marker `hgdeploy standin` leaves
beside its checkpoint (OUTPUT.resume.pt: settings and one loss per step, no weights). Writes
the curve as JSON (every step, and the mean per window) and a PNG; the run's wall time is
whatever the caller measured and passes in.

    .venv/bin/python benchmarks/accuracy/standin_loss_curve.py \
        --marker cornernet_standin.pkl.resume.pt --wall-seconds 3800 \
        --command "hgdeploy standin --model cornernet ..." \
        --json benchmarks/accuracy/cornernet_standin_loss.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch


def window_means(losses: list[float], window: int) -> list[float]:
    return [float(np.mean(losses[i : i + window])) for i in range(0, len(losses), window)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--marker", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--wall-seconds", type=float, required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--window", type=int, default=100)
    args = parser.parse_args()

    state = torch.load(args.marker, map_location="cpu", weights_only=False)
    if not state.get("finished"):
        raise SystemExit(f"{args.marker} is not a finished run's marker")
    losses = [float(v) for v in state["losses"]]
    settings = state["settings"]
    record = {
        "model": settings.get("model"),
        "settings": settings,
        "command": args.command,
        "wall_seconds": args.wall_seconds,
        "seconds_per_step": args.wall_seconds / len(losses),
        "window": args.window,
        "window_means": window_means(losses, args.window),
        "losses": losses,
    }
    args.json.write_text(json.dumps(record, indent=1, default=str) + "\n")

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(np.arange(1, len(losses) + 1), losses, lw=0.6, alpha=0.5, label="per step")
    means = window_means(losses, args.window)
    centres = [min(len(losses), i * args.window + args.window / 2) for i in range(len(means))]
    axis.plot(centres, means, marker="o", label=f"mean per {args.window} steps")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss (focal + pull/push + offsets, every stack)")
    axis.set_title(
        f"{record['model']} stand-in: {len(losses)} steps, {args.wall_seconds / 60:.0f} min"
    )
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.json.with_suffix(".png"), dpi=110)
    print(f"wrote {args.json} and {args.json.with_suffix('.png')}")


if __name__ == "__main__":
    main()
