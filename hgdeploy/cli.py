"""The `hgdeploy` command line: parse options, call the library, print. No logic lives here."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from hgdeploy.errors import HgDeployError
from hgdeploy.zoo import ZOO

console = Console()


class _Group(click.Group):
    """Turns `HgDeployError` into a one-line message on stderr and exit code 1, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HgDeployError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


model_option = click.option(
    "--model",
    "model_name",
    required=True,
    type=click.Choice(list(ZOO)),
    help="Zoo model name (see `hgdeploy models`).",
)
checkpoint_option = click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="Upstream checkpoint (.pkl/.pt/.pth) as released; default: synthetic weights.",
)
seed_option = click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the synthetic weights."
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hgdeploy")
def main() -> None:
    """Deploy hourglass-family vision models: eager PyTorch -> ONNX -> ONNX Runtime / TensorRT."""


@main.command("models")
def models_command() -> None:
    """List the model zoo with documented input shapes and outputs."""
    table = Table(title="hgdeploy model zoo")
    for column in ("name", "model", "documented input", "outputs", "heatmap", "params"):
        table.add_column(column)
    for spec in ZOO.values():
        shapes = "\n".join(
            f"{'x'.join(map(str, shape))} {spec.layout} ({label})"
            for label, shape in spec.documented_shapes().items()
        )
        heatmap = "x".join(map(str, spec.outputs[0].shape[-2:]))
        params = f"{spec.num_parameters / 1e6:.1f}M"
        table.add_row(
            spec.name, spec.title, shapes, ", ".join(spec.output_names), heatmap, params
        )
    console.print(table)


@main.command("predict")
@model_option
@checkpoint_option
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="Image file; default: scikit-image's bundled 'astronaut' photo.")
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
            name, "x".join(map(str, array.shape)),
            f"{array.min():.4g}", f"{array.max():.4g}", f"{array.mean():.4g}",
        )
    console.print(table)
    if result.detections is not None:
        console.print(f"{len(result.detections)} detections (heatmap pixels); best {top}:")
        for det in result.detections[:top]:
            x1, y1, x2, y2, score, _, _, cls = det
            console.print(f"  class {int(cls):2d} score {score:.3f} box ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f})")
    if result.keypoints is not None:
        console.print(f"joint peaks (heatmap pixels), first {top}:")
        for joint, (x, y, value) in enumerate(result.keypoints[:top]):
            console.print(f"  joint {joint:2d} at ({int(x)}, {int(y)}) value {value:.3f}")
