"""The benchmark matrix: models x backends x precisions x batches, every cell checked, then timed.

A benchmarked backend is a checked backend. Every cell is fed the same inputs as `hgdeploy
parity` (`parity_feeds`: batches of real photographs, then seeded noise); before a non-reference cell
is timed, its runner is compared with the eager model on those feeds (`compare_runners`, the
zoo's tolerances; like `hgdeploy parity`, reduced precisions are judged on the photographs only).
Policy on a mismatch: *flag, don't refuse*. The cell is still timed (how fast a broken build runs
is useful when chasing the bug), but its status is "parity_failed", it is marked untrusted, and
it is left out of every headline ratio. The timed input is the first feed (a batch of real
images).

Ratios: `speedup = torch_median / backend_median` against eager torch fp32 at the same (model,
batch) in the same run, and `vs_openvino_default = openvino_default_median / backend_median`
against OpenVINO compiled with no precision hint (its own choice for this CPU: bf16 where the
CPU has it), the peer a CPU deployment is measured against.

CPU int8 cells run the artifacts `hgdeploy build --backend onnxruntime|openvino --int8` writes
(built on first use from the shared export, reused while that export is unchanged).

The backends and what they run come from the registry (`hgdeploy.backends`): each cell asks its
backend for a runner (`Backend.bench_runner`); this module never names a backend. The pieces:
`results` (config and cell results), `cell` (one cell: parity, timing), `progress`, `host`,
`speedups`.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Mapping

from hgdeploy.backends.base import Backend, OnnxSource, RunContext, SkipCell, ensure_onnx
from hgdeploy.backends.registry import backend_names, get_backend, reference_backend
from hgdeploy.base.artifacts import tool_versions
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.export_settings import INPUT_NAME
from hgdeploy.base.zoo import ModelSpec, get_spec
from hgdeploy.bench.cell import CellInputs, check_parity, finish, one_line, run_cell
from hgdeploy.bench.host import host_info, resolve_device
from hgdeploy.bench.progress import AfterCell, NullProgress, ProgressSink, RichProgress
from hgdeploy.bench.results import DOCUMENTED, BenchConfig, BenchRun, CellResult, ParityOutcome
from hgdeploy.bench.speedups import compute_speedups
from hgdeploy.bench.timing import available_cores, release_free_memory, torch_threads
from hgdeploy.parity.compare import parity_feeds

__all__ = [
    "DOCUMENTED",
    "BenchConfig",
    "BenchRun",
    "CellResult",
    "NullProgress",
    "OnnxSource",
    "ParityOutcome",
    "RichProgress",
    "RunContext",
    "SkipCell",
    "check_parity",
    "compute_speedups",
    "ensure_onnx",
    "plan_cells",
    "run_matrix",
]


def plan_cells(config: BenchConfig, device: str, threads: int) -> list[CellResult]:
    """Every cell in run order: per model, per batch, eager torch first (the baseline)."""
    reference = reference_backend().name
    order = sorted(config.backends, key=lambda b: (b != reference, config.backends.index(b)))
    return [
        CellResult(name, backend, precision, batch, device=device, threads=threads)
        for name in config.models
        for batch in config.batches_for(get_spec(name))
        for backend in order
        for precision in config.precisions
    ]


def run_matrix(
    config: BenchConfig,
    *,
    backends: Mapping[str, Backend] | None = None,
    progress: ProgressSink | None = None,
    after_cell: Callable[[BenchRun], None] | None = None,
) -> BenchRun:
    """Run every cell of the matrix; only user errors (HgDeployError outside a cell) abort it.

    `after_cell(run)` is called after every finished cell (speedups so far filled in), e.g. to
    save partial results: the kernel's OOM killer ends a process without an exception, and the
    cells finished before it should survive.
    """
    known = {name: get_backend(name) for name in backend_names()} if backends is None else backends
    config.validate(known)
    device = resolve_device(config.device)
    threads = config.threads or available_cores()
    started = time.perf_counter()
    run = BenchRun(
        config=config,
        cells=plan_cells(config, device, threads),
        host=host_info(device, threads),
        versions=tool_versions(),
        started=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
    progress = AfterCell(progress or NullProgress(), run, after_cell)
    progress.start(len(run.cells))
    with torch_threads(threads):
        for name in config.models:
            cells = [c for c in run.cells if c.model == name]
            _run_model(get_spec(name), cells, config, known, progress, device, threads)
            release_free_memory()
    compute_speedups(run.cells)
    run.seconds = time.perf_counter() - started
    return run


def _precheck(cell: CellResult, backend: Backend) -> str | None:
    """Why the cell cannot run here, decided before anything is loaded; None if it may."""
    reason = backend.unavailable_reason()
    if reason:
        return reason
    supported = backend.runs
    if cell.precision not in supported:
        return f"{cell.backend} is benchmarked at {', '.join(supported)} only"
    return None


def _run_model(
    spec: ModelSpec,
    cells: list[CellResult],
    config: BenchConfig,
    backends: Mapping[str, Backend],
    progress: ProgressSink,
    device: str,
    threads: int,
) -> None:
    pending = []
    for cell in cells:
        reason = _precheck(cell, backends[cell.backend])
        if reason is None:
            pending.append(cell)
        else:
            finish(cell, "skipped", reason, progress)
    if not pending:
        return
    progress.phase(f"{spec.name}: loading the eager model")
    try:
        from hgdeploy.models.loader import load_model

        model = load_model(spec.name, config.checkpoint, seed=config.seed)
    except HgDeployError:
        raise  # a bad --checkpoint is the user's to fix, not a benchmark result
    except Exception as exc:
        for cell in pending:
            finish(cell, "failed", f"loading the eager model: {one_line(exc)}", progress)
        return
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    for cell in pending:
        cell.weights_mib = round(weights / 2**20, 1)
    context = RunContext(
        spec,
        model,
        device,
        threads,
        config.engine,
        OnnxSource(spec.name, config.checkpoint, config.seed, progress.phase),
    )
    for batch in sorted({c.batch for c in pending}):
        batch_cells = [c for c in pending if c.batch == batch]
        try:
            feeds = parity_feeds(spec, INPUT_NAME, batch, config.seed)
        except Exception as exc:
            for cell in batch_cells:
                finish(cell, "failed", f"preparing the inputs: {one_line(exc)}", progress)
            continue
        reference = reference_backend().bench_runner(context, batch, "fp32")
        reference.name = "eager-reference"
        inputs = CellInputs(spec, context, reference, feeds, config.plan, progress)
        for cell in batch_cells:
            run_cell(cell, backends[cell.backend], inputs)
        del feeds, inputs
        release_free_memory()
