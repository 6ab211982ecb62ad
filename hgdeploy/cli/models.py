"""`hgdeploy models`: the zoo, with documented shapes and outputs."""

from __future__ import annotations

import click
from rich.table import Table

from hgdeploy.base.console import console
from hgdeploy.base.zoo import ZOO


@click.command("models")
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
        table.add_row(spec.name, spec.title, shapes, ", ".join(spec.output_names), heatmap, params)
    console.print(table)
