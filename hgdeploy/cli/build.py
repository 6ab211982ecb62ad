"""`hgdeploy build` (alias `build-engine`): a deployable artifact for one backend.

The flags say what the user wants; `BuildRequest` and the backend check whether it makes sense
(`Backend.check_precision`, `check_build_options`), so the same refusals hold for library users.
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from hgdeploy.backends.registry import backend_choices, backends_building, get_backend
from hgdeploy.base.console import console
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.precisions import INT8_HIGH_PRECISIONS, PRECISIONS
from hgdeploy.cli.options import (
    RegistryChoice,
    annotations_option,
    backend_option,
    backend_values,
    calibration_options,
    checkpoint_option,
    force_option,
    images_dir_option,
    model_option,
    output_file_option,
    path_or_none,
    profile_options,
)


def _backend_help() -> str:
    names = backend_choices(builds=True)
    return (
        "Where the artifact runs: "
        + "; ".join(f"{name}: {get_backend(name).summary}" for name in names)
        + "."
    )


def _precision_help(precision: str) -> str:
    builders = backends_building(precision)
    return f"{PRECISIONS[precision].summary} (--backend {' / '.join(builders)})."


def _built_precisions() -> list[str]:
    return [p for p in PRECISIONS if backends_building(p)]


def precision_flags(function: Any) -> Any:
    """One flag per precision some backend builds (--fp32, --fp16, ...), from the registries;
    each its own parameter, so two of them given together are refused, not silently resolved."""
    for name in reversed(_built_precisions()):
        function = click.option(
            f"--{name}", f"flag_{name}", is_flag=True, help=_precision_help(name)
        )(function)
    return function


def chosen_precision(flags: dict[str, Any]) -> str | None:
    """The one precision flag given (None: the backend's default); two flags: one line."""
    given = [name for name in _built_precisions() if flags.pop(f"flag_{name}", False)]
    if len(given) > 1:
        raise HgDeployError(f"give one precision flag, not {' and '.join('--' + g for g in given)}")
    return given[0] if given else None


@click.command("build")
@model_option
@backend_option("tensorrt", _backend_help(), builds=True)
@click.option(
    "--target",
    "target",
    type=RegistryChoice(backend_values(builds=True)),
    default=None,
    hidden=True,
    help="Old name of --backend (kept so existing scripts keep working).",
)
@precision_flags
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="FP32 plugin-form ONNX; default: exported (dynamic batch) under artifacts/.",
)
@checkpoint_option
@profile_options
@output_file_option(
    "Engine path (CPU backends: the .xml IR or .onnx); default: beside the fp32 ONNX."
)
@calibration_options
@click.option(
    "--high-precision",
    type=click.Choice(INT8_HIGH_PRECISIONS),
    default=None,
    help="TensorRT INT8: the type of the layers left unquantized (default: fp16, as NVIDIA "
    "ModelOpt does; fp32 isolates the int8 error).",
)
@click.option(
    "--max-ap-drop",
    type=float,
    default=None,
    help="TensorRT INT8: keep the most int8-sensitive layers in high precision until the "
    "int8 graph's AP on --annotations/--images is within this many AP points of eager fp32.",
)
@annotations_option("With --max-ap-drop: the held-out set's COCO annotations.")
@images_dir_option("With --max-ap-drop: the held-out set's images.")
@click.option(
    "--prepare-only",
    is_flag=True,
    help="Stop after writing the precision-prepared ONNX (no TensorRT needed); --output then "
    "names that ONNX.",
)
@force_option
def build_command(
    model_name: str,
    backend: str,
    target: str | None,
    onnx_path: str | None,
    checkpoint: str | None,
    output: str | None,
    calib_dir: str | None,
    calib_cache: str | None,
    calib_batches: int | None,
    calib_method: str | None,
    calib_percentile: float | None,
    high_precision: str | None,
    max_ap_drop: float | None,
    annotations: str | None,
    images_dir: str | None,
    prepare_only: bool,
    force: bool,
    **profile: Any,
) -> None:
    """Build a deployable artifact: a TensorRT engine (default; FP32/FP16/INT8 ONNX prepared on
    the CPU first) or a CPU artifact for OpenVINO (FP32/BF16/INT8) or ONNX Runtime (FP32/INT8)."""
    from hgdeploy.backends import BuildRequest
    from hgdeploy.backends.build_job import run_build

    precision = chosen_precision(profile)
    source = click.get_current_context().get_parameter_source("backend")
    if (
        target is not None
        and source is not click.core.ParameterSource.DEFAULT
        and target != backend
    ):
        raise HgDeployError("--target is the old name of --backend; give one, not both")
    request = BuildRequest(
        model=model_name,
        backend=target or backend,
        precision=precision,
        onnx=path_or_none(onnx_path, "--onnx"),
        checkpoint=path_or_none(checkpoint, "--checkpoint"),
        output=path_or_none(output, "--output"),
        calib_dir=path_or_none(calib_dir),
        calib_cache=path_or_none(calib_cache),
        calib_batches=calib_batches,
        calib_method=calib_method,
        calib_percentile=calib_percentile,
        batch=profile["batch"],
        min_batch=profile["min_batch"],
        opt_batch=profile["opt_batch"],
        max_batch=profile["max_batch"],
        workspace_gib=profile["workspace"],
        timing_cache=path_or_none(profile["timing_cache"]),
        high_precision=high_precision,
        prepare_only=prepare_only,
        force=force,
    )
    if (annotations is not None or images_dir is not None) and max_ap_drop is None:
        raise HgDeployError("--annotations/--images are the held-out set of --max-ap-drop")
    with console.status("building") as status:
        if max_ap_drop is not None:
            request = _to_accuracy_target(request, annotations, images_dir, max_ap_drop, status)
        result = run_build(request, on_step=lambda text: status.update(text))
    for line in result.summary:
        console.print(line)
    if result.quality is not None:
        _print_quality(result.quality, result.precision)
    for line in result.closing:
        console.print(line)


def _to_accuracy_target(
    request: Any, annotations: str | None, images_dir: str | None, drop: float, status: Any
) -> Any:
    """The request with the layers an accuracy target keeps in high precision (printed)."""
    from hgdeploy.evaluation.accuracy_target import int8_request_to_target

    if annotations is None or images_dir is None:
        raise HgDeployError("--max-ap-drop needs a held-out set: --annotations and --images")
    request = int8_request_to_target(
        request,
        path_or_none(annotations, "--annotations"),  # type: ignore[arg-type]
        path_or_none(images_dir, "--images"),  # type: ignore[arg-type]
        drop,
        on_step=lambda text: status.update(text),
    )
    record = request.accuracy
    console.print(
        f"accuracy target: AP {record['reached']:.4f} with {len(request.keep_layers)} layers in "
        f"high precision (eager fp32 {record['eager_fp32']:.4f}, drop "
        f"{record['drop_points']:.2f} points <= {drop}): {', '.join(request.keep_layers) or '-'}"
    )
    return request


def _print_quality(quality: Any, precision: str) -> None:
    table = Table(title=f"{precision} vs fp32 on ONNX Runtime CPU ({quality.samples} images)")
    for column in ("output", "relative L2", "max abs err / range", "peak agreement"):
        table.add_column(column)
    for row in quality.rows:
        scale = row.max_abs_error / row.reference_max_abs if row.reference_max_abs else 0.0
        agreement = "-" if row.peak_agreement is None else f"{row.peak_agreement:.1%}"
        table.add_row(row.output, f"{row.relative_l2:.3g}", f"{scale:.3g}", agreement)
    console.print(table)
