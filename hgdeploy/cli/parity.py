"""`hgdeploy parity`: a backend against the eager reference; exit 1 on a mismatch."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from hgdeploy.base.console import console
from hgdeploy.base.outputs import check_output
from hgdeploy.cli.options import (
    backend_option,
    batch_option,
    checkpoint_option,
    force_option,
    judged_precision_option,
    model_option,
    path_or_none,
)


@click.command("parity")
@model_option
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="ONNX to check; default: the default export path (exported if missing).",
)
@checkpoint_option
@backend_option("onnxruntime", "Backend compared against the eager model.", reference=False)
@judged_precision_option(
    "Tolerances to judge by; default: the artifact's sidecar (fp32 without one). "
    "bf16 runs the fp32 ONNX with OpenVINO's bf16 hint (--backend openvino)."
)
@click.option(
    "--engine",
    "engine_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TensorRT engine (with --backend tensorrt).",
)
@batch_option(1)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random feed.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON report path; default: beside the artifact, <artifact>[.<precision>].parity.json.",
)
@force_option
def parity_command(
    model_name: str,
    onnx_path: str | None,
    checkpoint: str | None,
    backend: str,
    engine_path: str | None,
    batch: int,
    seed: int,
    report: str | None,
    precision: str | None,
    force: bool,
) -> None:
    """Compare a backend with the eager reference (Polygraphy); exit 1 on mismatch."""
    from hgdeploy.parity.job import parity_artifact, run_parity

    inputs = {"--onnx": onnx_path, "--engine": engine_path, "--checkpoint": checkpoint}
    if report is not None:  # before any export or run: the report must not replace an input
        check_output(report, inputs=inputs, force=force, option="--report")
    with console.status("resolving the artifact") as status:
        artifact, exported = parity_artifact(
            model_name,
            backend,
            onnx=path_or_none(onnx_path),
            engine=path_or_none(engine_path),
            batch=batch,
            checkpoint=path_or_none(checkpoint),
            on_step=lambda text: status.update(text),
        )
    if exported:
        console.print(f"exported {artifact}")
    suffix = "" if precision is None else f".{precision}"
    report_path = check_output(
        report or f"{artifact}{suffix}.parity.json",
        inputs={**inputs, "artifact": artifact},
        force=force,
        option="--report",
    )
    with console.status(f"running torch and {backend} on the parity feeds"):
        result = run_parity(
            model_name,
            artifact,
            backend=backend,
            checkpoint=checkpoint,
            batch=batch,
            seed=seed,
            precision=precision,
        )
    table = Table(
        title=f"{model_name}: {backend} vs eager torch ({result.precision}, batch {batch})"
    )
    for column in (
        "output",
        "max abs err",
        "mean abs err",
        "max rel err",
        "abs err / range",
        "check",
        "atol",
        "rtol",
        "peak agreement",
        "pass",
    ):
        table.add_column(column)
    for row in result.outputs:
        table.add_row(
            row.name,
            f"{row.max_abs:.3g}",
            f"{row.mean_abs:.3g}",
            f"{row.max_rel:.3g}",
            f"{row.max_abs / row.scale:.3g}" if row.scale else "-",
            "each element" if row.stat == "elemwise" else f"{row.stat} error",
            f"{row.atol:.3g}",
            f"{row.rtol:g}",
            "-" if row.peak_agreement is None else f"{row.peak_agreement:.0%}",
            "[green]yes[/]" if row.passed else "[red]NO[/]",
        )
    console.print(table)
    result.write(report_path)
    verdict = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
    console.print(
        f"{verdict} on {len(result.feeds)} feeds ({'; '.join(result.feeds)}); report {report_path}"
    )
    if not result.passed:
        console.print(f"[red]{result.worst_failure()}[/]")
        sys.exit(1)
