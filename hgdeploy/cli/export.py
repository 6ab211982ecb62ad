"""`hgdeploy export`: a zoo model to ONNX, with its sidecar."""

from __future__ import annotations

import click

from hgdeploy.base.console import console
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.export_settings import CORNER_POOL_FORMS, DEFAULT_OPSET, MIN_OPSET
from hgdeploy.cli.options import (
    batch_option,
    checkpoint_option,
    force_option,
    model_option,
    output_file_option,
    seed_option,
)


@click.command("export")
@model_option
@checkpoint_option
@output_file_option("ONNX path; default artifacts/NAME/NAME_b<batch>_<form>.onnx.")
@batch_option(1, "Batch size of the exported input (the example size when dynamic).")
@click.option("--dynamic-batch", is_flag=True, help="Make the batch axis dynamic ('batch').")
@click.option(
    "--opset",
    type=click.IntRange(min=MIN_OPSET),
    default=DEFAULT_OPSET,
    show_default=True,
    help="Default-domain ONNX opset.",
)
@click.option(
    "--corner-pool",
    type=click.Choice(CORNER_POOL_FORMS),
    default="plugin",
    show_default=True,
    help="plugin: one TopPool/LeftPool/BottomPool/RightPool node per pool (TensorRT "
    "plugins); onnx: lowered to standard ONNX ops (any runtime).",
)
@click.option(
    "--input-size",
    default=None,
    metavar="HxW",
    help="Input height x width (cornernet/squeeze: any 128k-1 size, e.g. 639x639 for a 512x512 "
    "photo at upstream's native size); default: the zoo's documented size.",
)
@seed_option
@force_option
def export_command(
    model_name: str,
    checkpoint: str | None,
    output: str | None,
    batch: int,
    dynamic_batch: bool,
    opset: int,
    corner_pool: str,
    input_size: str | None,
    seed: int,
    force: bool,
) -> None:
    """Export a zoo model to ONNX (plus a sidecar JSON describing it)."""
    from hgdeploy.exporters.onnx_export import ExportOptions, export_to_file

    options = ExportOptions(
        batch,
        dynamic_batch,
        opset,
        corner_pool,
        _input_size(input_size),  # type: ignore[arg-type]
    )
    with console.status("exporting") as status:
        result = export_to_file(
            model_name,
            checkpoint=checkpoint,
            output=output,
            options=options,
            seed=seed,
            on_step=lambda text: status.update(text),
            force=force,
        )
    pools = sum(result.corner_pool_nodes.values())
    console.print(
        f"wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MiB, "
        f"{pools} corner-pool plugin nodes, {result.seconds:.1f} s) and {result.sidecar}"
    )


def _input_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    height, sep, width = value.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit():
        raise HgDeployError(f"--input-size {value!r}: give HxW, e.g. 639x639")
    return int(height), int(width)
