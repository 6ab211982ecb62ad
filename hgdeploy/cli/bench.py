"""`hgdeploy bench`: parse options, run the matrix (or the corner-pool micro-benchmark), print a
table, write the results. No benchmarking logic lives here.

Exit status is 0 whenever results were written, even with skipped, failed or parity-failed cells:
those are results (a MemoryError at a big batch is a finding, not a crash); the table and the
files say which cells they are. Bad options and a bad --checkpoint exit 1 with one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from hgdeploy.base.console import console
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.outputs import check_output
from hgdeploy.base.zoo import ZOO
from hgdeploy.cli.options import (
    RegistryChoice,
    backends_option,
    benchmarked_precisions_option,
    checkpoint_option,
    force_option,
    images_dir_option,
    path_or_none,
    seed_option,
    timing_options,
)

if TYPE_CHECKING:
    from hgdeploy.evaluation.run import Deployment

DEFAULT_OUTPUT = Path("benchmarks") / "results"
_STATUS_STYLE = {
    "ok": "green",
    "parity_failed": "bold red",
    "failed": "red",
    "skipped": "yellow",
    "pending": "white",
}


class BatchType(click.ParamType):
    """A batch size >= 1, or `documented` (every documented batch size of each model)."""

    name = "N|documented"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from hgdeploy.bench.results import DOCUMENTED

        if isinstance(value, int) or value == DOCUMENTED:
            return value
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a positive integer nor '{DOCUMENTED}'", param, ctx)
        if number < 1:
            self.fail(f"batch sizes are >= 1, got {number}", param, ctx)
        return number


@click.command("bench")
@click.option(
    "--model",
    "models",
    multiple=True,
    type=RegistryChoice(lambda: list(ZOO)),
    help="Zoo model; repeatable. Default: every model.",
)
@backends_option("Backend; repeatable. Default: all (unavailable ones are reported skipped).")
@click.option(
    "--batch",
    "batches",
    multiple=True,
    type=BatchType(),
    help="Batch size, or 'documented' for every documented size of each model; "
    "repeatable. Default: 1 and the model's first documented batch.",
)
@benchmarked_precisions_option(
    "Precision; repeatable. Default fp32. Eager torch runs fp32 only, ONNX Runtime fp32 "
    "and int8 (U8S8, CPU), OpenVINO fp32, bf16, int8 (NNCF) and default (no precision hint), "
    "TensorRT fp32, fp16 and int8; other combinations are skipped with the reason."
)
@timing_options
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where torch and ONNX Runtime run (auto: cuda if present).",
)
@click.option(
    "--engine",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TensorRT engine (one --model); default artifacts/NAME/NAME_<precision>.engine.",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUTPUT,
    show_default=True,
    help="Directory for results.json/.md/.png (corner_pool.json/.md with --op).",
)
@checkpoint_option
@seed_option
@force_option
@click.option(
    "--op",
    type=click.Choice(["corner-pool", "matmul-peak", "pipeline"]),
    default=None,
    help="Run an operator micro-benchmark instead of the model matrix (--model then "
    "picks the pooled shapes of those models; default every shape); 'pipeline': each "
    "model's end-to-end test-time pipeline split by stage, per backend (pipeline.json/.md).",
)
@click.option(
    "--artifact",
    "artifacts",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --op pipeline: time this deployment (one --model; repeat for several, after "
    "the eager model) instead of each backend's shared fp32 ONNX; --backend runs every one "
    "(default: from each file's suffix).",
)
@images_dir_option("With --op pipeline: time over these photos instead of the bundled three.")
def bench_command(
    models: tuple[str, ...],
    backends: tuple[str, ...],
    batches: tuple[int | str, ...],
    precisions: tuple[str, ...],
    warmup: int,
    iterations: int | None,
    seconds: float | None,
    threads: int | None,
    device: str,
    engine: Path | None,
    output: Path,
    checkpoint: str | None,
    seed: int,
    op: str | None,
    force: bool,
    artifacts: tuple[Path, ...],
    images_dir: str | None,
) -> None:
    """Benchmark backends against eager torch on real images (each cell parity-checked first)."""
    from hgdeploy.bench.timing import TimingPlan

    if iterations is not None and seconds is not None:
        raise HgDeployError("give either --iterations or --seconds, not both")
    if seconds is not None:
        plan = TimingPlan(warmup, None, seconds)
    else:
        plan = TimingPlan(warmup, iterations or 10, None)
    # An unwritable or foreign --output fails now, not after the run.
    if (artifacts or images_dir is not None) and op != "pipeline":
        raise HgDeployError("--artifact and --images go with --op pipeline")
    inputs = {"--checkpoint": checkpoint, "--engine": engine, "--artifact": list(artifacts),
              "--images": path_or_none(images_dir, "--images")}  # fmt: skip
    check_output(output, inputs=inputs, force=force, directory=True)
    if op == "corner-pool":
        _corner_pool(plan, models, threads, device, batches, output)
        return
    if op == "matmul-peak":
        _matmul_peak(plan, threads, output)
        return
    if op == "pipeline":
        images = path_or_none(images_dir, "--images")
        deployments = _pipeline_deployments(backends, artifacts)
        _pipeline(models, deployments, iterations or 3, seed, output, checkpoint, images)
        return
    from hgdeploy.backends.registry import backend_names
    from hgdeploy.bench.host import resolve_device
    from hgdeploy.bench.matrix import BenchConfig, RichProgress, run_matrix
    from hgdeploy.bench.report import headline_ratios, write_results

    config = BenchConfig(
        models=models or tuple(ZOO),
        backends=backends or backend_names(),
        precisions=precisions or ("fp32",),
        batches=batches,
        plan=plan,
        threads=threads,
        device=device,
        engine=engine,
        checkpoint=Path(checkpoint) if checkpoint else None,
        seed=seed,
    )
    config.validate()  # option errors before the progress bar appears
    resolve_device(device)
    if backends:  # asked for by name: refuse when none of them can run here
        config.check_some_backend_runs()
    with RichProgress() as progress:
        run = run_matrix(
            config,
            progress=progress,
            after_cell=lambda partial: write_results(partial, output, plot=False),
        )
    console.print(_results_table(run.cells))
    for line in headline_ratios(run.cells):
        console.print(f"  {escape(line)}")
    written = write_results(run, output)
    bad = [c for c in run.cells if c.status in ("failed", "parity_failed")]
    if bad:
        console.print(f"[red]{len(bad)} cell(s) failed or failed parity; see the table[/]")
    console.print(escape(f"wrote {', '.join(str(p) for p in written)}"))


def _pipeline_deployments(
    backends: tuple[str, ...], artifacts: tuple[Path, ...]
) -> list[Deployment]:
    """What `--op pipeline` times: each backend's shared ONNX, or the eager model and then
    every --artifact (on --backend, or the backend its suffix names)."""
    from hgdeploy.backends.registry import reference_backend
    from hgdeploy.bench.pipeline_stages import pipeline_backends
    from hgdeploy.evaluation.run import Deployment

    if not artifacts:
        return [Deployment(b) for b in backends or pipeline_backends()]
    runners = [b for b in backends if b != reference_backend().name]
    if len(runners) > 1:
        raise HgDeployError("with --artifact give at most one --backend (it runs every artifact)")
    backend = runners[0] if runners else None
    return [Deployment(), *(Deployment(backend, a) for a in artifacts)]


def _pipeline(
    models: tuple[str, ...],
    deployments: list[Deployment],
    repeats: int,
    seed: int,
    output: Path,
    checkpoint: str | None,
    images: Path | None,
) -> None:
    """End-to-end pipeline latency split by stage (batch 1, bundled photos or --images)."""
    from hgdeploy.base.artifacts import write_text_atomic
    from hgdeploy.base.zoo import ZOO
    from hgdeploy.bench.pipeline_stages import measure, report_json, report_markdown
    from hgdeploy.bench.report import write_json

    chosen_models = models or tuple(ZOO)
    with console.status("pipeline stages"):
        report = measure(
            chosen_models,
            deployments,
            repeats,
            seed,
            Path(checkpoint) if checkpoint else None,
            images,
        )
    markdown = report_markdown(report)
    console.print(markdown)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "pipeline.json", report_json(report))
    write_text_atomic(output / "pipeline.md", markdown)


def _matmul_peak(plan: Any, threads: int | None, output: Path) -> None:
    """The CPU's matmul peak per (backend, precision): the roofline the models are read against."""
    from hgdeploy.bench.host import host_info
    from hgdeploy.bench.matmul_peak import measure_all, write_peaks
    from hgdeploy.bench.timing import available_cores

    used = threads or available_cores()
    with console.status("matmul peak (OpenVINO and ONNX Runtime, fp32/bf16/int8)"):
        results = measure_all(plan, used)
    table = Table(title="matrix-multiply peak")
    for column in ("backend", "precision", "M x K x N", "median ms", "GFLOP/s", "note"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.backend,
            r.precision,
            f"{r.m}x{r.k}x{r.n}",
            f"{r.median_ms:.2f}",
            f"{r.gflops:.0f}",
            r.note or "",
        )
    console.print(table)
    written = write_peaks(results, output, host_info("cpu", used))
    console.print(escape(f"wrote {', '.join(str(p) for p in written)}"))


def _results_table(cells: list[Any]) -> Table:
    from hgdeploy.bench.report import format_speedup

    table = Table(title="hgdeploy bench (latency per batch; speedup vs eager torch fp32)")
    for column in (
        "model",
        "backend",
        "prec",
        "batch",
        "status",
        "median ms",
        "p90 ms",
        "p99 ms",
        "img/s",
        "vs eager",
        "vs OV default",
        "parity",
        "ΔRSS MiB",
        "note",
    ):
        table.add_column(column, overflow="fold")
    for cell in cells:
        lat = cell.latency
        parity = (
            "ref"
            if cell.is_reference
            else (
                "-"
                if cell.parity is None
                else "unchecked"
                if not cell.parity.checked
                else "pass"
                if cell.parity.passed
                else "[bold red]FAILED[/]"
            )
        )
        table.add_row(
            cell.model,
            cell.backend,
            cell.precision,
            str(cell.batch),
            f"[{_STATUS_STYLE.get(cell.status, 'white')}]{cell.status}[/]",
            f"{lat.median_ms:.2f}" if lat else "-",
            f"{lat.p90_ms:.2f}" if lat else "-",
            f"{lat.p99_ms:.2f}" if lat else "-",
            f"{cell.throughput_ips:.1f}" if cell.throughput_ips else "-",
            format_speedup(cell.speedup_vs_torch) if cell.speedup_vs_torch else "-",
            format_speedup(cell.speedup_vs_openvino_default)
            if cell.speedup_vs_openvino_default
            else "-",
            parity,
            f"{cell.memory.rss_delta_mib:.0f}"
            if cell.memory and cell.memory.rss_delta_mib is not None
            else "-",
            escape(cell.reason or ""),
        )
    return table


def _corner_pool(
    plan: Any,
    models: tuple[str, ...],
    threads: int | None,
    device: str,
    batches: tuple[int | str, ...],
    output: Path,
) -> None:
    """The micro-benchmark; --model picks the pooled shapes of those models (default: all)."""
    from hgdeploy.bench.corner_pool import run_corner_pool_bench, shapes_for
    from hgdeploy.bench.host import resolve_device
    from hgdeploy.bench.report import write_corner_pool

    if len(batches) > 1 or any(not isinstance(b, int) for b in batches):
        raise HgDeployError("--op corner-pool takes at most one numeric --batch (the tensor's N)")
    with console.status("corner-pool micro-benchmark") as status:
        report = run_corner_pool_bench(
            plan,
            threads=threads,
            device=resolve_device(device),
            batch=int(batches[0]) if batches else 1,
            shapes=shapes_for(models),
            on_step=lambda text: status.update(f"corner pool: {text}"),
        )
    table = Table(title=f"corner-pool micro-benchmark ({report.timing})")
    for column in (
        "shape",
        "direction",
        "implementation",
        "device",
        "status",
        "median ms",
        "GB/s",
        "% of floor",
        "exact",
        "note",
    ):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        table.add_row(
            "x".join(map(str, row.shape)),
            row.direction,
            row.implementation,
            row.device,
            f"[{_STATUS_STYLE.get(row.status, 'white')}]{row.status}[/]",
            f"{row.latency.median_ms:.3f}" if row.latency else "-",
            f"{row.achieved_gbps:.1f}" if row.achieved_gbps else "-",
            f"{row.pct_of_floor:.0f}%" if row.pct_of_floor else "-",
            "-" if row.exact is None else "yes" if row.exact else "[red]NO[/]",
            escape(row.reason or ""),
        )
    console.print(table)
    for bw in report.bandwidth:
        console.print(f"  floor bandwidth {bw.device}: {bw.gbps:.1f} GB/s ({escape(bw.method)})")
    written = write_corner_pool(report, output)
    console.print(escape(f"wrote {', '.join(str(p) for p in written)}"))
