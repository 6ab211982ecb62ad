"""`hgdeploy standin`: train a stand-in checkpoint on generated scenes and write its held-out set."""

from __future__ import annotations

from pathlib import Path

import click

from hgdeploy.base.console import console
from hgdeploy.base.errors import HgDeployError
from hgdeploy.cli.options import force_option, model_option, seed_option

DEFAULT_FULL_STEPS = 100  # pose: the last steps at the zoo's input size
DEFAULT_SAVE_EVERY = 50  # steps between resume states (squeeze at batch 8: a few minutes)


@click.command("standin")
@model_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    required=True,
    help="The checkpoint to write, in the upstream format (every command's --checkpoint).",
)
@click.option(
    "--val-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write a held-out set here (images + annotations.json) for `hgdeploy evaluate`.",
)
@click.option("--val-count", type=click.IntRange(1), default=100, show_default=True)
@click.option(
    "--steps", type=click.IntRange(1), default=1400, show_default=True, help="Optimiser steps."
)
@click.option(
    "--full-steps",
    type=click.IntRange(0),
    default=None,
    help="Pose models: the last steps run at the zoo's input size (the rest at a reduced "
    f"size; default {DEFAULT_FULL_STEPS} or --steps if fewer). Detectors train at 255x255 "
    "throughout.",
)
@click.option("--batch", type=click.IntRange(4), default=8, show_default=True)
@click.option(
    "--bf16",
    is_flag=True,
    help="Detectors: run the network in bf16 autocast (the loss, weights and optimiser in "
    "fp32): ~2.4x faster steps on a CPU with AVX512-BF16.",
)
@click.option(
    "--save-every",
    type=click.IntRange(0),
    default=DEFAULT_SAVE_EVERY,
    show_default=True,
    help="Write a resume state (OUTPUT.resume.pt: weights, optimiser, step, RNG streams) "
    "atomically every N steps; 0: never. After the checkpoint it becomes a small finished "
    "marker.",
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False),
    default=None,
    help="Continue the run that wrote this resume state (give the same --model, --steps, "
    "--full-steps, --batch and --seed); it ends with the uninterrupted run's weights.",
)
@force_option
@seed_option
def standin_command(
    model_name: str,
    output: str,
    val_dir: str | None,
    val_count: int,
    steps: int,
    full_steps: int | None,
    batch: int,
    bf16: bool,
    save_every: int,
    resume: str | None,
    force: bool,
    seed: int,
) -> None:
    """Train MODEL from its synthetic initialisation on generated scenes over the bundled
    photos (pose: stick figures on the model's own skeleton; detectors: shapes of 4 classes),
    deterministic from --seed, and
    save it as an upstream checkpoint: a trained stand-in to judge fp16/int8 deployments with
    `hgdeploy evaluate` when the released weights are out of reach."""
    from rich.progress import Progress

    from hgdeploy.base.outputs import check_output
    from hgdeploy.standin.registry import RunSettings, get_standin
    from hgdeploy.standin.scenes import check_empty_directory, write_set
    from hgdeploy.standin.training import Saving, check_state_file, mark_finished, read_resume

    standin = get_standin(model_name)
    if not standin.full_size_phase and full_steps is not None:
        raise HgDeployError(f"--full-steps is for the pose stand-ins; {model_name} has no "
                            "full-size phase")  # fmt: skip
    if full_steps is None:
        full_steps = min(DEFAULT_FULL_STEPS, steps) if standin.full_size_phase else 0
    if full_steps > steps:
        raise HgDeployError(f"--full-steps {full_steps} is more than --steps {steps}")
    settings = RunSettings(steps=steps, full_steps=full_steps, batch=batch, seed=seed, bf16=bf16)
    recorded = standin.settings(settings)
    start = None if resume is None else read_resume(resume, recorded)
    checkpoint = check_output(output, inputs={"--resume": resume}, force=force)
    state_file = check_state_file(checkpoint, resume, force)
    if val_dir is not None:
        check_empty_directory(val_dir)
    saving = Saving(state_file if save_every else None, save_every, start)
    if start is not None:
        console.print(f"resuming {model_name} after step {start['step']} of {steps}")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"training {model_name}", total=steps)

        def step(done: int, total: int, loss: float) -> None:
            progress.update(task, completed=done, description=f"loss {loss:.5f}")

        result = standin.train(settings, step, saving)
    written = standin.save(result.model, checkpoint)
    if save_every:
        mark_finished(state_file, recorded, result.losses)
    console.print(f"wrote {written} (final loss {result.losses[-1]:.5f})")
    if val_dir is not None:
        directory = write_set(standin.held_out(val_count, seed), Path(val_dir))
        console.print(f"wrote {val_count} held-out images and annotations.json to {directory}")
