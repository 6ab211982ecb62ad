"""Writing benchmark results: results.json (every cell), results.md (tables and headline ratios)
and results.png (latency and throughput per backend and batch), all atomically.

JSON is the record (a later report or plot can be rebuilt from it); Markdown is for a README or a
pull request; the PNG is for a glance. Non-finite floats (an infinite parity error) are written as
strings so the JSON stays strict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hgdeploy.base.artifacts import atomic_path, write_text_atomic
from hgdeploy.bench.results import BenchRun, CellResult

if TYPE_CHECKING:
    from hgdeploy.bench.corner_pool import CornerPoolReport

SCHEMA = "hgdeploy.bench/1"
CORNER_POOL_SCHEMA = "hgdeploy.bench.corner_pool/1"
RESULT_FILES = ("results.json", "results.md", "results.png")
NOISY_CV = 0.10  # latency std / mean above which a cell is marked noisy
MEMORY_NOTE = (
    "Memory: peak resident set during warm-up + timing (`rss_peak_mib`) and its growth over the "
    "RSS just before the cell's runner was activated (`rss_delta_mib`), from the kernel's "
    "resettable peak counter (VmHWM, reset per cell) or, where that is unavailable, VmRSS "
    "sampled every 2 ms. A backend's own copy of the weights (ONNX Runtime session, TensorRT "
    "engine) counts in its delta; the eager model's weights (`weights_mib`), loaded once per "
    "model and shared with the parity reference, are in torch's baseline."
)


# --- JSON ---------------------------------------------------------------------------------------


def results_json(run: BenchRun) -> dict[str, Any]:
    return _strict(
        {
            "schema": SCHEMA,
            "kind": "models",
            "created": run.started,
            "complete": all(cell.status != "pending" for cell in run.cells),
            "seconds": round(run.seconds, 1),
            "host": run.host,
            "settings": run.config.to_json(),
            "versions": run.versions,
            "memory_method": MEMORY_NOTE,
            "parity_policy": "flag: a cell that fails parity is timed but untrusted "
            "(status parity_failed) and left out of the headline ratios",
            "headline": headline_ratios(run.cells),
            "cells": [{**cell.to_json(), "versions": run.versions} for cell in run.cells],
        }
    )


def _strict(value: Any) -> Any:
    """`value` with inf/nan floats as strings ("inf", "nan"), so json.dumps needs no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


# --- headline ratios ----------------------------------------------------------------------------


def format_speedup(speedup: float) -> str:
    return f"{speedup:.2f}x" if speedup < 10 else f"{speedup:.1f}x"


def headline_ratios(cells: list[CellResult]) -> list[str]:
    """One line per trusted non-torch cell ("onnxruntime 1.8x eager (hrnet, batch 32, fp32)"),
    then a geometric mean per backend and precision over the models and batches it ran."""
    lines: list[str] = []
    groups: dict[tuple[str, str], list[float]] = {}
    for cell in cells:
        if cell.is_reference or not cell.trusted or cell.speedup_vs_torch is None:
            continue
        lines.append(
            f"{cell.backend} {format_speedup(cell.speedup_vs_torch)} eager ({cell.model}, "
            f"batch {cell.batch}, {cell.precision})"
        )
        groups.setdefault((cell.backend, cell.precision), []).append(cell.speedup_vs_torch)
    for (backend, precision), values in groups.items():
        if len(values) > 1:
            mean = math.exp(sum(math.log(v) for v in values) / len(values))
            lines.append(
                f"{backend} {precision}: {format_speedup(mean)} eager, geometric mean over "
                f"{len(values)} cells ({format_speedup(min(values))} to "
                f"{format_speedup(max(values))})"
            )
    return lines


# --- Markdown -----------------------------------------------------------------------------------

_MD_COLUMNS = (
    "backend",
    "precision",
    "batch",
    "status",
    "median ms",
    "p90 ms",
    "p99 ms",
    "min ms",
    "images/s",
    "vs eager",
    "vs OV default",
    "parity",
    "peak agreement",
    "peak RSS MiB",
    "Δ RSS MiB",
    "note",
)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _parity_cell(cell: CellResult) -> str:
    if cell.is_reference:
        return "reference"
    if cell.parity is None:
        return "-"
    if not cell.parity.checked:
        return "not checked"
    return "pass" if cell.parity.passed else "**FAILED**"


def _md_row(cell: CellResult) -> str:
    latency = cell.latency
    memory = cell.memory
    values = (
        cell.backend,
        cell.precision,
        str(cell.batch),
        cell.status if cell.status != "parity_failed" else "**parity FAILED** (untrusted)",
        _num(latency and latency.median_ms, 2),
        _num(latency and latency.p90_ms, 2),
        _num(latency and latency.p99_ms, 2),
        _num(latency and latency.min_ms, 2),
        _num(cell.throughput_ips, 1),
        format_speedup(cell.speedup_vs_torch) if cell.speedup_vs_torch is not None else "-",
        format_speedup(cell.speedup_vs_openvino_default)
        if cell.speedup_vs_openvino_default is not None
        else "-",
        _parity_cell(cell),
        _peak_agreement(cell),
        _num(memory and memory.rss_peak_mib, 0),
        _num(memory and memory.rss_delta_mib, 0),
        _md_escape(_note(cell)),
    )
    return "| " + " | ".join(values) + " |"


def _peak_agreement(cell: CellResult) -> str:
    """The lowest heatmap-peak agreement with eager over the cell's heatmap outputs."""
    if cell.parity is None:
        return "-"
    values = [
        o["peak_agreement"] for o in cell.parity.outputs if o.get("peak_agreement") is not None
    ]
    return f"{min(values):.0%}" if values else "-"


def _note(cell: CellResult) -> str:
    """The cell's reason, plus a warning when its samples spread widely (a busy machine)."""
    parts = [cell.reason] if cell.reason else []
    if cell.latency is not None and cell.latency.cv > NOISY_CV:
        parts.append(f"noisy: cv {cell.latency.cv:.0%}")
    if cell.status == "pending":
        parts.append("not run (the run stopped before this cell)")
    return "; ".join(parts)


def results_markdown(run: BenchRun) -> str:
    host = run.host
    plan = run.config.plan
    budget = f"{plan.iterations} timed iterations" if plan.iterations else f"{plan.seconds:g} s"
    device = host["device"] if host.get("gpu") is None else f"{host['device']} ({host['gpu']})"
    versions = ", ".join(f"{k} {v}" for k, v in run.versions.items())
    lines = [
        "# hgdeploy benchmark",
        "",
        f"Run {run.started}, {run.seconds:.0f} s. Host: {host['cpu']}, "
        f"{host['cores_available']} cores available, {host['threads']} threads (torch and ONNX "
        f"Runtime), device {device}. Timing: {plan.warmup} warm-up iteration(s) excluded, then "
        f"{budget}, one synchronous inference per sample (host arrays in, host arrays out). "
        "Throughput = batch / median latency. `vs eager` = eager torch fp32 median / this "
        "median at the same model and batch; `vs OV default` = OpenVINO with no precision hint "
        "(its own choice for this CPU) / this median. `peak agreement`: the lowest, over "
        "heatmap outputs, fraction of eager's heatmap peaks (top-k corners after NMS, or "
        "per-joint argmax) found at the same place, on the photographs.",
        "",
        f"Versions: {versions}.",
        "",
        *([f"GPU fp32 math: {host['fp32_math']}.", ""] if host.get("fp32_math") else []),
        MEMORY_NOTE,
        "",
        "Every non-torch cell is first compared with the eager model on the parity feeds (two "
        "batches of real photographs and a seeded random batch); a mismatch is flagged "
        "**parity FAILED**, its timings are untrusted and it is left out of the headline.",
        "",
        "## Headline",
        "",
    ]
    headline = headline_ratios(run.cells)
    lines += [f"- {line}" for line in headline] or ["- no trusted non-torch cells were timed"]
    for model in dict.fromkeys(c.model for c in run.cells):
        cells = [c for c in run.cells if c.model == model]
        lines += ["", f"## {model}", ""]
        lines.append("| " + " | ".join(_MD_COLUMNS) + " |")
        lines.append("|" + "|".join("---" for _ in _MD_COLUMNS) + "|")
        lines += [_md_row(c) for c in cells]
    return "\n".join(lines) + "\n"


# --- PNG ----------------------------------------------------------------------------------------


def plot_results(run: BenchRun, path: Path) -> None:
    """One row per model: median latency (whiskers min..p90) and throughput, bars grouped by
    batch, one colour per backend/precision, each bar labelled with its value (small batches
    stay readable beside big ones); untrusted bars hatched; cells not timed listed under the
    latency plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    models = list(dict.fromkeys(c.model for c in run.cells))
    series = list(dict.fromkeys(f"{c.backend} {c.precision}" for c in run.cells if c.timed))
    colours = {name: f"C{i}" for i, name in enumerate(series)}
    fig = Figure(figsize=(13, 3.4 * max(1, len(models))), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, len(models)), 2, squeeze=False)
    for row, model in enumerate(models):
        cells = [c for c in run.cells if c.model == model]
        batches = sorted({c.batch for c in cells})
        _bars(axes[row][0], cells, batches, series, colours, latency=True)
        _bars(axes[row][1], cells, batches, series, colours, latency=False)
        axes[row][0].set_title(
            f"{model}: median latency per batch (ms; whiskers min..p90; lower is better)",
            fontsize=10,
        )
        axes[row][1].set_title(f"{model}: throughput (images/s; higher is better)", fontsize=10)
        missing = [c for c in cells if not c.timed]
        if missing:
            text = "\n".join(
                _shorten(
                    f"not timed: batch {c.batch} {c.backend} {c.precision}: {c.status}"
                    + (f" ({c.reason})" if c.reason else ""),
                    110,
                )
                for c in missing[:3]
            ) + (f"\n... and {len(missing) - 3} more" if len(missing) > 3 else "")
            axes[row][0].set_xlabel(text, fontsize=7, color="0.3", loc="left")
    if not series:
        axes[0][0].text(
            0.5, 0.5, "no timed cells", ha="center", va="center", transform=axes[0][0].transAxes
        )
    handles = [Patch(facecolor=colours[s], label=s) for s in series]
    if any(c.timed and not c.trusted for c in run.cells):
        handles.append(
            Patch(
                facecolor="white",
                edgecolor="black",
                hatch="//",
                label="untrusted (parity failed or unchecked)",
            )
        )
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5))
    threads = run.host["threads"]
    fig.suptitle(
        f"hgdeploy benchmark, {run.host['cpu']}, {threads} thread{'s' * (threads != 1)}"
        + (f", {run.host['gpu']}" if run.host.get("gpu") else ""),
        fontsize=11,
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _bars(
    ax: Any,
    cells: list[CellResult],
    batches: list[int],
    series: list[str],
    colours: dict[str, str],
    latency: bool,
) -> None:
    width = 0.8 / max(1, len(series))
    for i, name in enumerate(series):
        for j, batch in enumerate(batches):
            cell = next(
                (
                    c
                    for c in cells
                    if c.batch == batch and c.timed and f"{c.backend} {c.precision}" == name
                ),
                None,
            )
            if cell is None or cell.latency is None:
                continue
            x = j - 0.4 + width * (i + 0.5)
            if latency:
                value = cell.latency.median_ms
                err = [[value - cell.latency.min_ms], [cell.latency.p90_ms - value]]
            else:
                value, err = cell.throughput_ips or 0.0, None
            bar = ax.bar(
                x,
                value,
                width,
                color=colours[name],
                yerr=err,
                capsize=2,
                hatch=None if cell.trusted else "//",
                edgecolor="black",
                linewidth=0.4,
            )
            label = _short_number(value)
            if not latency and cell.speedup_vs_torch is not None and not cell.is_reference:
                label += f"\n{format_speedup(cell.speedup_vs_torch)}"
            ax.bar_label(bar, labels=[label], fontsize=7, padding=1)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_xlim(-0.6, len(batches) - 0.4)
    ax.set_ylabel("ms" if latency else "images/s")
    ax.margins(y=0.2)
    ax.grid(axis="y", alpha=0.3)


def _short_number(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- writing ------------------------------------------------------------------------------------


def write_json(path: Path, data: dict[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_results(run: BenchRun, output: str | Path, *, plot: bool = True) -> list[Path]:
    """results.json, results.md and results.png in `output`; returns the paths written.

    `plot=False` skips the PNG (partial results saved while the run goes on).
    """
    output = Path(output)
    written = [
        write_json(output / "results.json", results_json(run)),
        write_text_atomic(output / "results.md", results_markdown(run)),
    ]
    if plot:
        plot_results(run, output / "results.png")
        written.append(output / "results.png")
    return written


# --- the corner-pool micro-benchmark ------------------------------------------------------------


def corner_pool_markdown(report: CornerPoolReport) -> str:
    columns = (
        "shape",
        "direction",
        "implementation",
        "device",
        "status",
        "median ms",
        "p90 ms",
        "GB/s",
        "% of floor",
        "floor ms",
        "exact",
        "note",
    )
    lines = [
        "# Corner-pool micro-benchmark",
        "",
        f"Run {report.started}. {report.timing}. Bytes moved per pool = read + write of the "
        "tensor (2 x numel x 4 B); floor = bytes / measured bandwidth; % of floor = floor / "
        "median (100% = memory-bound at the measured bandwidth).",
        "",
    ]
    lines += [f"- {b.device}: {b.gbps:.1f} GB/s ({b.method})" for b in report.bandwidth]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in report.rows:
        latency = row.latency
        values = (
            "x".join(map(str, row.shape)),
            row.direction,
            row.implementation,
            row.device,
            row.status,
            _num(latency and latency.median_ms, 3),
            _num(latency and latency.p90_ms, 3),
            _num(row.achieved_gbps, 1),
            _num(row.pct_of_floor, 0),
            _num(row.floor_ms, 3),
            "-" if row.exact is None else ("yes" if row.exact else "**NO**"),
            _md_escape(row.reason or ""),
        )
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def write_corner_pool(report: CornerPoolReport, output: str | Path) -> list[Path]:
    """corner_pool.json and corner_pool.md in `output` (the model results are left alone)."""
    output = Path(output)
    data = _strict({"schema": CORNER_POOL_SCHEMA, **report.to_json()})
    return [
        write_json(output / "corner_pool.json", data),
        write_text_atomic(output / "corner_pool.md", corner_pool_markdown(report)),
    ]
