"""The `hgdeploy` command line: parse options, call the library, print. No logic lives here."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from rich.table import Table

from hgdeploy.cli_options import (
    CliGroup,
    checkpoint_option,
    console,
    model_option,
    seed_option,
)
from hgdeploy.errors import HgDeployError
from hgdeploy.targets import TARGETS, TENSORRT_INT8_HIGH_PRECISIONS
from hgdeploy.zoo import ZOO

if TYPE_CHECKING:
    from hgdeploy.precision.quality import QualityReport


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
        table.add_row(spec.name, spec.title, shapes, ", ".join(spec.output_names), heatmap, params)
    console.print(table)


@main.command("predict")
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


@main.command("export")
@model_option
@checkpoint_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="ONNX path; default artifacts/NAME/NAME_b<batch>_<form>.onnx.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Batch size of the exported input (the example size when dynamic).",
)
@click.option("--dynamic-batch", is_flag=True, help="Make the batch axis dynamic ('batch').")
@click.option(
    "--opset",
    type=click.IntRange(min=18),
    default=20,
    show_default=True,
    help="Default-domain ONNX opset.",
)
@click.option(
    "--corner-pool",
    type=click.Choice(["plugin", "onnx"]),
    default="plugin",
    show_default=True,
    help="plugin: one TopPool/LeftPool/BottomPool/RightPool node per pool (TensorRT "
    "plugins); onnx: lowered to standard ONNX ops (any runtime).",
)
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
            model_name,
            checkpoint=checkpoint,
            output=output,
            options=options,
            seed=seed,
            on_step=lambda text: status.update(text),
        )
    pools = sum(result.corner_pool_nodes.values())
    console.print(
        f"wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MiB, "
        f"{pools} corner-pool plugin nodes, {result.seconds:.1f} s) and {result.sidecar}"
    )


@main.command("parity")
@model_option
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="ONNX to check; default: the default export path (exported if missing).",
)
@checkpoint_option
@click.option(
    "--backend",
    type=click.Choice(["onnxruntime", "openvino", "tensorrt"]),
    default="onnxruntime",
    show_default=True,
    help="Backend compared against the eager model.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8", "bf16"]),
    default=None,
    help="Tolerances to judge by; default: the artifact's sidecar (fp32 without one). "
    "bf16 runs the fp32 ONNX with OpenVINO's bf16 hint (--backend openvino).",
)
@click.option(
    "--engine",
    "engine_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TensorRT engine (with --backend tensorrt).",
)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random feed.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON report path; default: beside the artifact, <artifact>[.<precision>].parity.json.",
)
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
) -> None:
    """Compare a backend with the eager reference (Polygraphy); exit 1 on mismatch."""
    from pathlib import Path

    from hgdeploy.exporters.onnx_export import ExportOptions, default_output, export_to_file
    from hgdeploy.parity_job import run_parity

    if backend == "tensorrt":
        if engine_path is None:
            raise HgDeployError("--backend tensorrt needs --engine PATH (hgdeploy build-engine)")
        artifact = engine_path
    elif onnx_path is not None:
        artifact = onnx_path
    else:
        options = ExportOptions(batch=batch)
        artifact = str(default_output(model_name, options))
        if not Path(artifact).is_file():
            with console.status("exporting") as status:
                export_to_file(
                    model_name,
                    checkpoint=checkpoint,
                    options=options,
                    on_step=lambda text: status.update(text),
                )
            console.print(f"exported {artifact}")
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
    suffix = "" if precision is None else f".{precision}"
    report_path = result.write(report or f"{artifact}{suffix}.parity.json")
    verdict = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
    console.print(
        f"{verdict} on {len(result.feeds)} feeds ({'; '.join(result.feeds)}); report {report_path}"
    )
    if not result.passed:
        console.print(f"[red]{result.worst_failure()}[/]")
        sys.exit(1)


@main.command("build-engine")
@model_option
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    default="tensorrt",
    show_default=True,
    help="tensorrt: a GPU engine. openvino / onnxruntime: a CPU artifact (OpenVINO IR, or an "
    "ONNX for ONNX Runtime's CPU provider).",
)
@click.option("--fp32", "precision", flag_value="fp32", help="FP32 (the CPU targets' default).")
@click.option(
    "--fp16",
    "precision",
    flag_value="fp16",
    help="TensorRT: FP16 engine from an FP16 ONNX with FP32 I/O (the TensorRT default).",
)
@click.option(
    "--bf16",
    "precision",
    flag_value="bf16",
    help="OpenVINO: an IR compiled with the bf16 inference-precision hint.",
)
@click.option(
    "--int8",
    "precision",
    flag_value="int8",
    help="INT8 calibrated on real images: TensorRT symmetric Q/DQ ONNX, ONNX Runtime U8S8 "
    "Q/DQ ONNX, or an NNCF-quantized OpenVINO IR.",
)
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="FP32 plugin-form ONNX; default: exported (dynamic batch) under artifacts/.",
)
@checkpoint_option
@click.option(
    "--batch", type=click.IntRange(min=1), default=None, help="Fix the profile to one batch size."
)
@click.option("--min-batch", type=click.IntRange(min=1), default=None, help="Profile minimum.")
@click.option(
    "--opt-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Profile optimum; default: the documented batch.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Profile maximum; default: the largest documented batch.",
)
@click.option("--workspace", type=float, default=None, help="Builder workspace limit, GiB.")
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False),
    default=None,
    help="TensorRT timing cache to load and update.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Engine path (CPU targets: the .xml IR or .onnx); default: beside the fp32 ONNX.",
)
@click.option(
    "--calib-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="INT8: directory of jpg/png calibration images (default: bundled samples).",
)
@click.option(
    "--calib-cache",
    type=click.Path(),
    default=None,
    help="INT8: reuse a calibration cache instead of calibrating (TensorRT: tensor -> amax "
    "JSON; onnxruntime: its ranges JSON; openvino: the NNCF statistics directory).",
)
@click.option(
    "--calib-batches",
    type=click.IntRange(min=1),
    default=None,
    help="INT8: at most this many calibration batches (default: 4 for TensorRT, 8 for the CPU "
    "targets, which calibrate one image per batch).",
)
@click.option(
    "--high-precision",
    type=click.Choice(TENSORRT_INT8_HIGH_PRECISIONS),
    default=None,
    help="TensorRT INT8: the type of the layers left unquantized (default: fp16, as NVIDIA "
    "ModelOpt does; fp32 isolates the int8 error).",
)
@click.option(
    "--prepare-only",
    is_flag=True,
    help="Stop after writing the precision-prepared ONNX (no TensorRT needed).",
)
def build_engine_command(
    model_name: str,
    target: str,
    precision: str | None,
    onnx_path: str | None,
    checkpoint: str | None,
    batch: int | None,
    min_batch: int | None,
    opt_batch: int | None,
    max_batch: int | None,
    workspace: float | None,
    timing_cache: str | None,
    output: str | None,
    calib_dir: str | None,
    calib_cache: str | None,
    calib_batches: int | None,
    high_precision: str | None,
    prepare_only: bool,
) -> None:
    """Build a deployable artifact: a TensorRT engine (default; FP32/FP16/INT8 ONNX prepared on
    the CPU first) or a CPU artifact for OpenVINO (FP32/BF16/INT8) or ONNX Runtime (FP32/INT8)."""
    from pathlib import Path

    from hgdeploy.engine.build import BuildSettings
    from hgdeploy.engine.job import EngineRequest, run_build_engine
    from hgdeploy.engine.profile import batch_profile
    from hgdeploy.targets import check_target
    from hgdeploy.zoo import get_spec

    def path(value: str | None) -> Path | None:
        return Path(value) if value is not None else None

    precision = check_target(target, precision)
    if target == "tensorrt" and high_precision is not None and precision != "int8":
        raise HgDeployError("--high-precision only applies to --int8")
    if target != "tensorrt":
        tensorrt_only = {
            "--batch": batch,
            "--min-batch": min_batch,
            "--opt-batch": opt_batch,
            "--max-batch": max_batch,
            "--workspace": workspace,
            "--timing-cache": timing_cache,
            "--high-precision": high_precision,
            "--prepare-only": prepare_only or None,
        }
        given = [flag for flag, value in tensorrt_only.items() if value is not None]
        if given:
            raise HgDeployError(
                f"{', '.join(given)}: only for --target tensorrt (CPU artifacts keep the "
                "export's dynamic batch)"
            )
        _build_cpu(
            model_name,
            target,
            precision,
            onnx_path,
            checkpoint,
            output,
            calib_dir,
            calib_cache,
            calib_batches,
        )
        return
    profile = batch_profile(get_spec(model_name), batch, min_batch, opt_batch, max_batch)
    request = EngineRequest(
        model=model_name,
        precision=precision,
        settings=BuildSettings(profile, workspace, path(timing_cache)),
        onnx=path(onnx_path),
        checkpoint=path(checkpoint),
        output=path(output),
        calib_dir=path(calib_dir),
        calib_cache=path(calib_cache),
        calib_batches=calib_batches or EngineRequest.calib_batches,
        high_precision=high_precision,
        prepare_only=prepare_only,
    )
    with console.status("building") as status:
        result = run_build_engine(request, on_step=lambda text: status.update(text))
    prepared = result.prepared
    console.print(f"prepared {precision} ONNX: {prepared.path} (sidecar {prepared.sidecar})")
    if prepared.calibration_cache is not None:
        console.print(f"calibration cache: {prepared.calibration_cache}")
    if prepared.quality is not None:
        _print_quality(prepared.quality, precision)
    if result.engine is not None:
        console.print(
            f"engine: {result.engine} (profile {profile.min}..{profile.max}, opt {profile.opt})"
        )


def _build_cpu(
    model_name: str,
    target: str,
    precision: str,
    onnx_path: str | None,
    checkpoint: str | None,
    output: str | None,
    calib_dir: str | None,
    calib_cache: str | None,
    calib_batches: int | None,
) -> None:
    from pathlib import Path

    from hgdeploy.cpu.build import CpuBuildRequest, build_cpu_artifact, describe
    from hgdeploy.precision.prepare import DEFAULT_CALIB_BATCHES

    def path(value: str | None) -> Path | None:
        return Path(value) if value is not None else None

    request = CpuBuildRequest(
        model=model_name,
        target=target,
        precision=precision,
        onnx=path(onnx_path),
        checkpoint=path(checkpoint),
        output=path(output),
        calib_dir=path(calib_dir),
        calib_cache=path(calib_cache),
        calib_batches=calib_batches or DEFAULT_CALIB_BATCHES,
    )
    with console.status(f"building the {target} {precision} artifact") as status:
        artifact = build_cpu_artifact(request, on_step=lambda text: status.update(text))
    console.print(f"{describe(artifact)} (sidecar {artifact.sidecar})")
    if artifact.calibration_cache is not None:
        console.print(f"calibration cache: {artifact.calibration_cache}")
    backend = "openvino" if target == "openvino" else "onnxruntime"
    console.print(
        f"check it: hgdeploy parity --model {model_name} --backend {backend} --onnx {artifact.path}"
    )


def _print_quality(quality: QualityReport, precision: str) -> None:
    table = Table(title=f"{precision} vs fp32 on ONNX Runtime CPU ({quality.samples} images)")
    for column in ("output", "relative L2", "max abs err / range", "peak agreement"):
        table.add_column(column)
    for row in quality.rows:
        scale = row.max_abs_error / row.reference_max_abs if row.reference_max_abs else 0.0
        agreement = "-" if row.peak_agreement is None else f"{row.peak_agreement:.1%}"
        table.add_row(row.output, f"{row.relative_l2:.3g}", f"{scale:.3g}", agreement)
    console.print(table)


def _register_command_modules() -> None:
    """Commands that live beside their library code."""
    from hgdeploy.bench.command import bench_command
    from hgdeploy.plugins.cli_command import plugins_command

    main.add_command(bench_command)
    main.add_command(plugins_command)


_register_command_modules()
