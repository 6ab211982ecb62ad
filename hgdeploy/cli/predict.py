"""`hgdeploy predict`: the eager model on one image, its outputs and decoded peaks."""

from __future__ import annotations

import click
from rich.table import Table

from hgdeploy.base.console import console
from hgdeploy.cli.options import checkpoint_option, model_option, seed_option


@click.command("predict")
@model_option
@checkpoint_option
@click.option(
    "--image",
    type=click.Path(dir_okay=False),
    default=None,
    help="Image file; default: scikit-image's bundled 'astronaut' photo.",
)
@seed_option
@click.option("--top", type=int, default=5, show_default=True, help="Detections/joints to print.")
def predict_command(
    model_name: str, checkpoint: str | None, image: str | None, seed: int, top: int
) -> None:
    """Run the eager reference model on one image and print its outputs."""
    from hgdeploy.predict import predict

    result = predict(model_name, checkpoint, image, seed)
    table = Table(title=f"{model_name} on {result.image_name}")
    for column in ("output", "shape", "min", "max", "mean"):
        table.add_column(column)
    for name, array in result.outputs.items():
        table.add_row(
            name,
            "x".join(map(str, array.shape)),
            f"{array.min():.4g}",
            f"{array.max():.4g}",
            f"{array.mean():.4g}",
        )
    console.print(table)
    if result.detections is not None:
        console.print(f"{len(result.detections)} detections (heatmap pixels); best {top}:")
        for det in result.detections[:top]:
            x1, y1, x2, y2, score, _, _, cls = det
            console.print(
                f"  class {int(cls):2d} score {score:.3f} "
                f"box ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f})"
            )
    if result.keypoints is not None:
        console.print(f"joint peaks (heatmap pixels), first {top}:")
        for joint, (x, y, value) in enumerate(result.keypoints[:top]):
            console.print(f"  joint {joint:2d} at ({int(x)}, {int(y)}) value {value:.3f}")
