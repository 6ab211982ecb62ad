"""`hgdeploy sensitivity`: which layers int8 hurts, ranked on the ONNX graph."""

from __future__ import annotations

from pathlib import Path

import click

from hgdeploy.base.console import console
from hgdeploy.cli.options import (
    calibration_options,
    checkpoint_option,
    force_option,
    model_option,
    output_dir_option,
    path_or_none,
)

SHOWN = 10


@click.command("sensitivity")
@model_option
@click.option("--onnx", "onnx_path", default=None, help="The fp32 ONNX (default: the export).")
@checkpoint_option
@calibration_options
@output_dir_option(
    "Directory for sensitivity.json (every layer, ranked) and sensitivity.png.", required=True
)
@force_option
def sensitivity_command(
    model_name: str,
    onnx_path: str | None,
    checkpoint: str | None,
    calib_dir: str | None,
    calib_cache: str | None,
    calib_batches: int | None,
    calib_method: str | None,
    calib_percentile: float | None,
    output: str,
    force: bool,
) -> None:
    """Rank the int8 graph's layers by the output error each causes alone in int8 (the rest in
    fp32), on ONNX Runtime: the order in which an accuracy target falls layers back to high
    precision. The calibration images calibrate and measure."""
    from rich.progress import Progress

    from hgdeploy.base.errors import HgDeployError
    from hgdeploy.precision.calibration_methods import CalibrationChoice
    from hgdeploy.precision.sensitivity_run import run_sensitivity

    if calib_cache is not None:
        raise HgDeployError("sensitivity calibrates its own images; --calib-cache is not used")
    choice = CalibrationChoice.from_options(calib_method, calib_percentile)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("layers", total=None)

        def step(done: int, total: int, layer: str) -> None:
            progress.update(task, completed=done, total=total, description=layer)

        report = run_sensitivity(
            model_name,
            Path(output),
            onnx_path=path_or_none(onnx_path, "--onnx"),
            checkpoint=path_or_none(checkpoint, "--checkpoint"),
            calib_dir=path_or_none(calib_dir),
            calib_batches=calib_batches or 4,
            choice=choice,
            force=force,
            progress=step,
        )
    for rank, layer in enumerate(report.layers[:SHOWN], start=1):
        peaks = "" if layer.peak_agreement is None else f", peaks {layer.peak_agreement:.1%}"
        console.print(
            f"{rank:3d}. {layer.layer} ({layer.op_type}): rel L2 {layer.relative_l2:.4f}{peaks}"
        )
    console.print(f"wrote {', '.join(str(p) for p in report.files)} ({len(report.layers)} layers)")
