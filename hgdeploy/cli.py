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


@main.command("export")
@model_option
@checkpoint_option
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="ONNX path; default artifacts/NAME/NAME_b<batch>_<form>.onnx.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size of the exported input (the example size when dynamic).")
@click.option("--dynamic-batch", is_flag=True, help="Make the batch axis dynamic ('batch').")
@click.option("--opset", type=click.IntRange(min=18), default=20, show_default=True,
              help="Default-domain ONNX opset.")
@click.option("--corner-pool", type=click.Choice(["plugin", "onnx"]), default="plugin",
              show_default=True,
              help="plugin: one TopPool/LeftPool/BottomPool/RightPool node per pool (TensorRT "
                   "plugins); onnx: lowered to standard ONNX ops (any runtime).")
@seed_option
def export_command(
    model_name: str,
    checkpoint: str | None,
    output: str | None,
    batch: int,
    dynamic_batch: bool,
    opset: int,
    corner_pool: str,
    seed: int,
) -> None:
    """Export a zoo model to ONNX (plus a sidecar JSON describing it)."""
    from hgdeploy.exporters.onnx_export import ExportOptions, export_to_file

    options = ExportOptions(batch, dynamic_batch, opset, corner_pool)  # type: ignore[arg-type]
    with console.status("exporting") as status:
        result = export_to_file(
            model_name, checkpoint=checkpoint, output=output, options=options, seed=seed,
            on_step=lambda text: status.update(text),
        )
    pools = sum(result.corner_pool_nodes.values())
    console.print(
        f"wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MiB, "
        f"{pools} corner-pool plugin nodes, {result.seconds:.1f} s) and {result.sidecar}"
    )


@main.command("parity")
@model_option
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None,
              help="ONNX to check; default: the default export path (exported if missing).")
@checkpoint_option
@click.option("--backend", type=click.Choice(["onnxruntime"]), default="onnxruntime",
              show_default=True, help="Backend compared against the eager model.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random feed.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="JSON report path; default: next to the ONNX as <onnx>.parity.json.")
def parity_command(
    model_name: str,
    onnx_path: str | None,
    checkpoint: str | None,
    backend: str,
    batch: int,
    seed: int,
    report: str | None,
) -> None:
    """Compare a backend with the eager reference (Polygraphy); exit 1 on mismatch."""
    from pathlib import Path

    from hgdeploy.exporters.onnx_export import ExportOptions, default_output, export_to_file
    from hgdeploy.parity_job import run_parity

    if onnx_path is None:
        options = ExportOptions(batch=batch)
        onnx_path = str(default_output(model_name, options))
        if not Path(onnx_path).is_file():
            with console.status("exporting") as status:
                export_to_file(model_name, checkpoint=checkpoint, options=options,
                               on_step=lambda text: status.update(text))
            console.print(f"exported {onnx_path}")
    with console.status(f"running torch and {backend} on real images and noise"):
        result = run_parity(model_name, onnx_path, backend=backend, checkpoint=checkpoint,
                            batch=batch, seed=seed)
    table = Table(title=f"{model_name}: {backend} vs eager torch ({result.precision}, batch {batch})")
    for column in ("output", "max abs err", "max rel err", "abs err / range", "atol", "rtol", "pass"):
        table.add_column(column)
    for row in result.outputs:
        table.add_row(
            row.name, f"{row.max_abs:.3g}", f"{row.max_rel:.3g}",
            f"{row.max_abs / row.scale:.3g}" if row.scale else "-",
            f"{row.atol:g}", f"{row.rtol:g}", "[green]yes[/]" if row.passed else "[red]NO[/]",
        )
    console.print(table)
    report_path = result.write(report or f"{onnx_path}.parity.json")
    verdict = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
    console.print(f"{verdict} on {len(result.feeds)} feeds ({'; '.join(result.feeds)}); "
                  f"report {report_path}")
    if not result.passed:
        sys.exit(1)
