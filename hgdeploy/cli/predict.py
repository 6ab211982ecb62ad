"""`hgdeploy predict`: a model's test-time pipeline on images, on any backend."""

from __future__ import annotations

import click
from rich.table import Table

from hgdeploy.base.console import console
from hgdeploy.base.errors import HgDeployError
from hgdeploy.cli.options import (
    backend_option,
    checkpoint_option,
    force_option,
    images_dir_option,
    model_option,
    output_dir_option,
    path_or_none,
    seed_option,
)


def _parse_box(value: str | None) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    parts = value.split(",")
    try:
        box = tuple(float(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise HgDeployError(f"--box {value!r}: give x,y,w,h (four numbers, image pixels)")
    return box  # type: ignore[return-value]


@click.command("predict")
@model_option
@backend_option(None, "Where the network runs (default: the eager model, or the artifact's).")
@click.option("--artifact", default=None, help="The exported/built file the backend runs.")
@checkpoint_option
@click.option("--image", type=click.Path(dir_okay=False), default=None, help="One image file.")
@images_dir_option("A directory of images, run in batches of the artifact's batch size.")
@click.option(
    "--box", default=None, help="Pose models: the person box x,y,w,h (default: the whole image)."
)
@output_dir_option("Directory for predictions.json (COCO results) and one PNG per image.")
@force_option
@seed_option
@click.option("--top", type=int, default=5, show_default=True, help="Detections/joints to print.")
def predict_command(
    model_name: str,
    backend: str | None,
    artifact: str | None,
    checkpoint: str | None,
    image: str | None,
    images_dir: str | None,
    box: str | None,
    output: str | None,
    force: bool,
    seed: int,
    top: int,
) -> None:
    """Run upstream's test-time pipeline (preprocessing, network, post-processing) on images:
    boxes or keypoints in original image pixels."""
    from rich.progress import Progress

    from hgdeploy.pipelines.results import Detections
    from hgdeploy.predict import predict

    # A bar for a directory only: one image needs none (and an error then stays one line).
    with Progress(console=console, transient=True, disable=images_dir is None) as progress:
        task = progress.add_task("images", total=None)
        run = predict(
            model_name,
            image=path_or_none(image, "--image"),
            images_dir=path_or_none(images_dir, "--images"),
            backend=backend,
            artifact=path_or_none(artifact, "--artifact"),
            checkpoint=path_or_none(checkpoint, "--checkpoint"),
            seed=seed,
            box=_parse_box(box),
            output=path_or_none(output, "--output"),
            force=force,
            on_batch=lambda done, total: progress.update(task, completed=done, total=total),
        )
    for prediction in run.predictions[:3]:
        found = prediction.found
        height, width = prediction.pixels.shape[:2]
        title = f"{model_name} on {prediction.name} ({width}x{height}) via {run.backend}"
        table = Table(title=title)
        if isinstance(found, Detections):
            for column in ("class", "score", "x1", "y1", "x2", "y2"):
                table.add_column(column)
            from hgdeploy.pipelines.categories import COCO_CLASS_NAMES

            for (x1, y1, x2, y2), score, cls in list(zip(found.boxes, found.scores, found.classes))[
                :top
            ]:
                table.add_row(
                    COCO_CLASS_NAMES[int(cls)],
                    f"{score:.3f}",
                    *(f"{v:.1f}" for v in (x1, y1, x2, y2)),
                )
            console.print(table)
            console.print(f"{len(found)} detections (image pixels)")
        else:
            for column in ("joint", "x", "y", "confidence"):
                table.add_column(column)
            for joint, (x, y, value) in enumerate(found.keypoints[:top]):
                table.add_row(str(joint), f"{x:.1f}", f"{y:.1f}", f"{value:.3f}")
            console.print(table)
            console.print(f"person score {found.score:.3f} (image pixels)")
    for warning in run.warnings:
        click.echo(f"warning: {warning}", err=True)
    stages = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in run.stage_seconds.items())
    console.print(f"{len(run.predictions)} image(s); time by stage: {stages}")
    if run.written:
        console.print(f"wrote {run.written[-1]} and {len(run.written) - 1} drawing(s)")
