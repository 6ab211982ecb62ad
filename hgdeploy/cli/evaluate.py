"""`hgdeploy evaluate`: task accuracy (COCO AP, PCKh) of the eager model and of deployments."""

from __future__ import annotations

import click
from rich.table import Table

from hgdeploy.base.console import console
from hgdeploy.cli.options import (
    annotations_option,
    backend_option,
    checkpoint_option,
    force_option,
    images_dir_option,
    model_option,
    output_dir_option,
    path_or_none,
    seed_option,
)


@click.command("evaluate")
@model_option
@annotations_option(
    "COCO-format annotations JSON (instances for detectors, person keypoints for pose).",
    required=True,
)
@images_dir_option("The directory holding the annotations' image files.", required=True)
@click.option(
    "--artifact",
    "artifacts",
    multiple=True,
    help="A deployment to score beside the eager model (repeat for several, side by side).",
)
@backend_option(None, "Backend that runs every --artifact (default: from each file's suffix).")
@checkpoint_option
@output_dir_option(
    "Directory for predictions.json, one predictions.N.json per other run, metrics.json and "
    "metrics.png."
)
@force_option
@seed_option
def evaluate_command(
    model_name: str,
    annotations: str,
    images_dir: str,
    artifacts: tuple[str, ...],
    backend: str | None,
    checkpoint: str | None,
    output: str | None,
    force: bool,
    seed: int,
) -> None:
    """Run the model's test-time pipeline on a labeled set and score it with pycocotools (box AP
    for detectors, keypoint OKS AP for pose on the ground-truth person boxes, PCKh@0.5 for the
    MPII hourglass); the eager fp32 model is always scored too, as the reference."""
    from rich.progress import Progress

    from hgdeploy.evaluation.run import Deployment, evaluate

    deployments = [Deployment(backend, path_or_none(a, "--artifact")) for a in artifacts]
    with Progress(console=console, transient=True) as progress:
        tasks: dict[str, int] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        result = evaluate(
            model_name,
            path_or_none(annotations, "--annotations"),  # type: ignore[arg-type]
            path_or_none(images_dir, "--images"),  # type: ignore[arg-type]
            deployments=deployments,
            checkpoint=path_or_none(checkpoint, "--checkpoint"),
            seed=seed,
            output=path_or_none(output, "--output"),
            force=force,
            progress=update,
        )
    names = list(result.runs[0].metrics)
    table = Table(title=f"{model_name} on {annotations}")
    for column in ("run", *names, "AP - eager", "seconds"):
        table.add_column(column)
    reference = result.runs[0].metrics.get("AP", 0.0)
    for run in result.runs:
        delta = run.metrics.get("AP", 0.0) - reference
        table.add_row(
            run.label,
            *(f"{run.metrics.get(n, float('nan')):.4f}" for n in names),
            f"{delta:+.4f}",
            f"{run.seconds:.1f}",
        )
    console.print(table)
    if result.written:
        console.print(f"wrote {', '.join(str(p) for p in result.written)}")
