"""The benchmark matrix: models x backends x precisions x batches, every cell checked, then timed.

A benchmarked backend is a checked backend. Every cell is fed the same inputs as `hgdeploy
parity` (`parity_feeds`: batches of real photographs, then seeded noise); before a non-torch cell
is timed, its runner is compared with the eager model on those feeds (`compare_runners`, the
zoo's tolerances; like `hgdeploy parity`, reduced precisions are judged on the photographs only).
Policy on a mismatch: *flag, don't refuse*. The cell is still timed (how fast a broken build runs
is useful when chasing the bug), but its status is "parity_failed", it is marked untrusted, and
it is left out of every headline ratio. The timed input is the first feed (a batch of real
images).

Cell statuses: "ok" (timed; parity passed, or the cell is the eager reference), "parity_failed"
(timed, untrusted), "skipped" (cannot run here: backend missing, precision unsupported, no
engine; the reason says which), "failed" (it raised: the one-line error is the reason, and the
run goes on with the next cell); "pending" appears only in partial results saved mid-run.
Ratios: `speedup = torch_median / backend_median` against eager torch fp32 at the same (model,
batch) in the same run, and `vs_openvino_default = openvino_default_median / backend_median`
against OpenVINO compiled with no precision hint (its own choice for this CPU: bf16 where the
CPU has it), the peer a CPU deployment is measured against.

CPU int8 cells run the artifacts `hgdeploy build-engine --target onnxruntime|openvino --int8`
writes (built on first use from the shared export, reused while that export is unchanged).

Adding a backend is one entry in `RUNNER_FACTORIES` (name -> function building a Polygraphy
runner for (spec, batch, precision, artifacts)) plus its precisions in `BACKEND_PRECISIONS`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from polygraphy.backend.base import BaseRunner
from torch import nn

from hgdeploy.artifacts import tool_versions
from hgdeploy.bench.timing import (
    LatencyStats,
    MemoryUsage,
    PeakRss,
    TimingPlan,
    available_cores,
    clock_for,
    device_peak_mib,
    release_free_memory,
    reset_device_peak,
    time_callable,
    torch_threads,
)
from hgdeploy.errors import HgDeployError
from hgdeploy.exporters.onnx_export import (
    INPUT_NAME,
    SHARED_EXPORT,
    default_output,
    ensure_shared_export,
)
from hgdeploy.parity import Feed, compare_runners, describe_failure, parity_feeds
from hgdeploy.runners import BACKENDS, backend_unavailable_reason
from hgdeploy.runners.torch_runner import TorchRunner
from hgdeploy.zoo import ZOO, ModelSpec, get_spec

Status = Literal["pending", "ok", "parity_failed", "skipped", "failed"]
# "default": OpenVINO with no inference-precision hint (whatever it picks for this CPU).
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "default")
DOCUMENTED = "documented"  # a --batch value: every documented batch size of each model
_MAX_REASON = 300


class SkipCell(Exception):
    """Raised by a runner factory when its cell cannot run here; the message is the reason."""


# --- what a runner factory gets ---------------------------------------------------------------


class _OnnxSource:
    """The model's dynamic-batch ONNX, exported on first use and reused while it still matches.

    One file with a dynamic batch axis serves every batch. It is the plugin form at the default
    export path (what `build-engine` reads); ONNX Runtime lowers its corner pools on the fly.
    """

    def __init__(
        self, name: str, checkpoint: Path | None, seed: int, on_step: Callable[[str], None]
    ) -> None:
        self._name = name
        self._checkpoint = checkpoint
        self._seed = seed
        self._on_step = on_step
        self._path: Path | None = None
        self._error: BaseException | None = None

    @property
    def path(self) -> Path | None:
        """The ONNX if it was already resolved (never exports)."""
        return self._path

    def __call__(self) -> Path:
        if self._error is not None:
            raise self._error
        if self._path is None:
            try:
                self._path = ensure_onnx(self._name, self._checkpoint, self._seed, self._on_step)
            except Exception as exc:  # remembered, so later cells fail fast with the same reason
                self._error = exc
                raise
        return self._path


@dataclass
class Artifacts:
    """Everything a runner factory may need for one model, prepared once per model."""

    spec: ModelSpec
    model: nn.Module  # the eager model (synthetic weights or --checkpoint): torch and reference
    device: str  # "cpu" or "cuda"
    threads: int
    engine: Path | None  # --engine, if given
    onnx_source: _OnnxSource
    cpu_artifacts: dict[tuple[str, str], Path] = field(default_factory=dict)

    def onnx(self) -> Path:
        """The dynamic-batch ONNX (exported now if missing or stale)."""
        return self.onnx_source()

    def cpu_artifact(self, target: str, precision: str, on_step: Callable[[str], None]) -> Path:
        """`build-engine --target TARGET --PRECISION`'s artifact, built now if missing/stale."""
        from hgdeploy.cpu.build import ensure_cpu_artifact

        key = (target, precision)
        if key not in self.cpu_artifacts:
            self.cpu_artifacts[key] = ensure_cpu_artifact(
                self.spec.name, self.onnx(), target, precision, on_step
            )
        return self.cpu_artifacts[key]


RunnerFactory = Callable[[ModelSpec, int, str, Artifacts], BaseRunner]


def torch_factory(spec: ModelSpec, batch: int, precision: str, artifacts: Artifacts) -> BaseRunner:
    return TorchRunner(
        artifacts.model,
        INPUT_NAME,
        spec.input_shape(batch),
        spec.output_names,
        device=artifacts.device,
        name="torch",
    )


def onnxruntime_factory(
    spec: ModelSpec, batch: int, precision: str, artifacts: Artifacts
) -> BaseRunner:
    import onnxruntime as ort

    from hgdeploy.runners.onnxrt_runner import onnxruntime_runner

    providers: list[Any] = ["CPUExecutionProvider"]
    if precision == "int8":
        if artifacts.device != "cpu":
            raise SkipCell("the ONNX Runtime int8 (U8S8) model is a CPU target")
        path = artifacts.cpu_artifact("onnxruntime", "int8", lambda _: None)
        return onnxruntime_runner(
            path, providers=providers, threads=artifacts.threads, name="onnxruntime"
        )
    if artifacts.device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SkipCell(
                "this onnxruntime build has no CUDAExecutionProvider (pip install "
                "onnxruntime-gpu), so it would silently run on the CPU"
            )
        # fp32 means IEEE fp32: the CUDA provider would otherwise run convolutions in TF32.
        providers.insert(0, ("CUDAExecutionProvider", {"use_tf32": "0"}))
    return onnxruntime_runner(
        artifacts.onnx(), providers=providers, threads=artifacts.threads, name="onnxruntime"
    )


def openvino_factory(
    spec: ModelSpec, batch: int, precision: str, artifacts: Artifacts
) -> BaseRunner:
    """OpenVINO on the CPU: the dynamic-batch ONNX at fp32 / bf16 (a compile hint) / default
    (no hint), or the NNCF int8 IR."""
    from hgdeploy.runners.openvino_runner import cpu_supports_bf16, openvino_runner

    if artifacts.device != "cpu":
        raise SkipCell(f"OpenVINO runs on the CPU only here (--device {artifacts.device})")
    if precision == "bf16" and not cpu_supports_bf16():
        raise SkipCell("this CPU has no native bf16 (AVX512_BF16 or AMX) for OpenVINO")
    if precision == "int8":
        path = artifacts.cpu_artifact("openvino", "int8", lambda _: None)
        return openvino_runner(path, precision="int8", threads=artifacts.threads, name="openvino")
    return openvino_runner(
        artifacts.onnx(), precision=precision, threads=artifacts.threads, name="openvino"
    )


def default_engine_path(name: str, precision: str) -> Path:
    """Where `hgdeploy build-engine` puts an engine built from the default export:
    artifacts/NAME/NAME_<precision>.engine."""
    from hgdeploy.engine.job import default_engine_path as engine_beside

    return engine_beside(default_output(name, SHARED_EXPORT), precision)


def tensorrt_factory(
    spec: ModelSpec, batch: int, precision: str, artifacts: Artifacts
) -> BaseRunner:
    """The engine at --engine or the default path, if it was built at this precision for a
    profile holding this batch (otherwise the cell is skipped, saying how to build one)."""
    from hgdeploy.engine.profile import BatchProfile
    from hgdeploy.runners.tensorrt_runner import engine_record, tensorrt_runner

    if artifacts.device != "cuda":
        raise SkipCell("TensorRT runs on a CUDA GPU only (--device cpu was asked for)")
    path = artifacts.engine or default_engine_path(spec.name, precision)
    build = f"hgdeploy build-engine --model {spec.name} --{precision}"
    if not path.is_file():
        where = "--engine" if artifacts.engine else "the default path"
        raise SkipCell(f"no engine: run {build} (nothing at {where} {path})")
    record = engine_record(path)
    built = record.get("precision", precision)
    if built != precision:
        raise SkipCell(f"{path} is a {built} engine, not {precision}")
    profile = BatchProfile(**record["profile"])
    if not profile.contains(batch):
        bound = "--max-batch" if batch > profile.max else "--min-batch"
        raise SkipCell(
            f"batch {batch} is outside {path}'s profile ({profile.min}..{profile.max}): "
            f"run {build} {bound} {batch}"
        )
    return tensorrt_runner(path, model=spec.name, batch=batch)


RUNNER_FACTORIES: dict[str, RunnerFactory] = {
    "torch": torch_factory,
    "onnxruntime": onnxruntime_factory,
    "openvino": openvino_factory,
    "tensorrt": tensorrt_factory,
}
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32",),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8", "default"),
    "tensorrt": ("fp32", "fp16", "int8"),
}
# Backends whose inference call returns before the GPU is done (CUDA events time them on a
# GPU); the others' calls copy outputs to host arrays, so the host clock sees the whole call.
CUDA_EVENT_BACKENDS = frozenset({"torch"})


def ensure_onnx(
    name: str, checkpoint: Path | None, seed: int, on_step: Callable[[str], None] | None = None
) -> Path:
    """The shared dynamic-batch ONNX for `name` (reused when it matches, else exported)."""
    step = on_step or (lambda _: None)
    return ensure_shared_export(
        name, checkpoint, seed, on_step=lambda text: step(f"{name}: export: {text}")
    )


# --- configuration and results ------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = tuple(ZOO)
    backends: tuple[str, ...] = BACKENDS
    precisions: tuple[str, ...] = ("fp32",)
    batches: tuple[int | str, ...] = ()  # () -> 1 and spec.default_batch; DOCUMENTED -> all
    plan: TimingPlan = field(default_factory=TimingPlan)
    threads: int | None = None  # None -> every core this process may use
    device: str = "auto"  # auto, cpu or cuda
    engine: Path | None = None
    checkpoint: Path | None = None
    seed: int = 0

    def validate(self, factories: dict[str, RunnerFactory]) -> None:
        for name in self.models:
            get_spec(name)
        unknown = [b for b in self.backends if b not in factories]
        if unknown:
            raise HgDeployError(f"unknown backend {unknown[0]!r}; known: {', '.join(factories)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise HgDeployError(f"unknown precision {bad[0]!r}; known: {', '.join(PRECISIONS)}")
        for value in self.batches:
            if value != DOCUMENTED and (not isinstance(value, int) or value < 1):
                raise HgDeployError(f"--batch must be >= 1 or '{DOCUMENTED}', got {value!r}")
        if self.threads is not None and self.threads < 1:
            raise HgDeployError(f"--threads must be >= 1, got {self.threads}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise HgDeployError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        for option, value in (("--checkpoint", self.checkpoint), ("--engine", self.engine)):
            if value is not None and len(self.models) != 1:
                raise HgDeployError(f"{option} belongs to one model; pass exactly one --model")

    def batches_for(self, spec: ModelSpec) -> list[int]:
        """This model's batch sizes, ascending: explicit ints plus, for DOCUMENTED, every
        documented size; by default 1 and the model's first documented size."""
        chosen: set[int] = set()
        for value in self.batches or (1, spec.default_batch):
            if value == DOCUMENTED:
                chosen.update(spec.batches.values())
            else:
                chosen.add(int(value))
        return sorted(chosen)

    def to_json(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "backends": list(self.backends),
            "precisions": list(self.precisions),
            "batch_options": [str(b) for b in self.batches],
            "batches": {name: self.batches_for(get_spec(name)) for name in self.models},
            "warmup": self.plan.warmup,
            "iterations": self.plan.iterations,
            "seconds": self.plan.seconds,
            "threads": self.threads,
            "device": self.device,
            "engine": str(self.engine) if self.engine else None,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "seed": self.seed,
        }


@dataclass
class ParityOutcome:
    """The cell's check against the eager model, on the same feeds `hgdeploy parity` uses."""

    checked: bool
    passed: bool | None
    feeds: list[str] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CellResult:
    model: str
    backend: str
    precision: str
    batch: int
    status: Status = "pending"  # every cell ends in one of the other four
    reason: str | None = None
    device: str = "cpu"
    threads: int | None = None
    providers: list[str] | None = None
    latency: LatencyStats | None = None
    throughput_ips: float | None = None
    speedup_vs_torch: float | None = None
    speedup_vs_openvino_default: float | None = None
    parity: ParityOutcome | None = None
    memory: MemoryUsage | None = None
    weights_mib: float | None = None  # the eager model's parameters + buffers, for context
    artifact: str | None = None
    seconds: float = 0.0

    @property
    def timed(self) -> bool:
        return self.latency is not None

    @property
    def trusted(self) -> bool:
        """Timed, and either the eager reference itself or checked and matching it."""
        if self.status != "ok":
            return False
        return self.backend == "torch" or bool(self.parity and self.parity.passed)

    def label(self) -> str:
        return f"{self.model} b{self.batch} {self.backend} {self.precision}"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "precision": self.precision,
            "batch": self.batch,
            "status": self.status,
            "reason": self.reason,
            "trusted": self.trusted,
            "device": self.device,
            "threads": self.threads,
            "providers": self.providers,
            "latency_ms": None if self.latency is None else self.latency.to_json(),
            "throughput_ips": self.throughput_ips,
            "speedup_vs_torch": self.speedup_vs_torch,
            "speedup_vs_openvino_default": self.speedup_vs_openvino_default,
            "parity": None if self.parity is None else self.parity.to_json(),
            "memory": None if self.memory is None else self.memory.to_json(),
            "weights_mib": self.weights_mib,
            "artifact": self.artifact,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class BenchRun:
    config: BenchConfig
    cells: list[CellResult]
    host: dict[str, Any]
    versions: dict[str, str]
    started: str
    seconds: float = 0.0


# --- progress -----------------------------------------------------------------------------------


class ProgressSink(Protocol):
    def start(self, total: int) -> None: ...
    def phase(self, text: str) -> None: ...
    def advance(self, cell: CellResult) -> None: ...


class NullProgress:
    def start(self, total: int) -> None:
        pass

    def phase(self, text: str) -> None:
        pass

    def advance(self, cell: CellResult) -> None:
        pass


class RichProgress:
    """A rich progress bar over the whole matrix; the description names the current step."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from hgdeploy.cli_options import console

        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._task: Any = None

    def __enter__(self) -> RichProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def start(self, total: int) -> None:
        self._task = self._progress.add_task("benchmark", total=total)

    def phase(self, text: str) -> None:
        if self._task is not None:
            from rich.markup import escape

            self._progress.update(self._task, description=escape(text))

    def advance(self, cell: CellResult) -> None:
        if self._task is not None:
            self._progress.advance(self._task)
            if cell.status in ("failed", "parity_failed"):
                from rich.markup import escape

                self._progress.console.print(
                    f"[red]{escape(cell.label())}: {cell.status}[/] {escape(cell.reason or '')}"
                )


class _AfterCell:
    """Forwards progress and calls `after_cell(run)` once a cell is finished."""

    def __init__(
        self, inner: ProgressSink, run: BenchRun, after_cell: Callable[[BenchRun], None] | None
    ) -> None:
        self._inner = inner
        self._run = run
        self._after_cell = after_cell

    def start(self, total: int) -> None:
        self._inner.start(total)

    def phase(self, text: str) -> None:
        self._inner.phase(text)

    def advance(self, cell: CellResult) -> None:
        self._inner.advance(cell)
        if self._after_cell is not None:
            compute_speedups(self._run.cells)
            self._after_cell(self._run)


# --- running ------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise HgDeployError("--device cuda: no CUDA GPU is available to torch here")
    return device


def host_info(device: str, threads: int) -> dict[str, Any]:
    """Where the numbers come from: the CPU, the cores and threads used, the GPU if any."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores_available": available_cores(),
        "threads": threads,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
    }
    if device == "cuda":
        info["fp32_math"] = (
            "IEEE fp32 in fp32 cells: TF32 off for torch (cudnn/matmul "
            "fp32_precision 'ieee') and ONNX Runtime (use_tf32=0)"
        )
        info["torch_default_conv_fp32_precision"] = _conv_precision()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _conv_precision() -> str:
    import torch

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return str(conv.fp32_precision)
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"


def plan_cells(config: BenchConfig, device: str, threads: int) -> list[CellResult]:
    """Every cell in run order: per model, per batch, eager torch first (the baseline)."""
    order = sorted(config.backends, key=lambda b: (b != "torch", config.backends.index(b)))
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
    factories: dict[str, RunnerFactory] | None = None,
    progress: ProgressSink | None = None,
    after_cell: Callable[[BenchRun], None] | None = None,
) -> BenchRun:
    """Run every cell of the matrix; only user errors (HgDeployError outside a cell) abort it.

    `after_cell(run)` is called after every finished cell (speedups so far filled in), e.g. to
    save partial results: the kernel's OOM killer ends a process without an exception, and the
    cells finished before it should survive.
    """
    factories = RUNNER_FACTORIES if factories is None else factories
    config.validate(factories)
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
    progress = _AfterCell(progress or NullProgress(), run, after_cell)
    progress.start(len(run.cells))
    with torch_threads(threads):
        for name in config.models:
            cells = [c for c in run.cells if c.model == name]
            _run_model(get_spec(name), cells, config, factories, progress, device, threads)
            release_free_memory()
    compute_speedups(run.cells)
    run.seconds = time.perf_counter() - started
    return run


def compute_speedups(cells: list[CellResult]) -> None:
    """Cell median vs eager torch fp32 and vs OpenVINO's default, at the same (model, batch)."""
    eager = _baseline(cells, "torch", "fp32")
    peer = _baseline(cells, "openvino", "default")
    for cell in cells:
        if cell.latency is None or cell.latency.median_ms <= 0:
            continue
        key = (cell.model, cell.batch)
        if key in eager:
            cell.speedup_vs_torch = eager[key] / cell.latency.median_ms
        if key in peer:
            cell.speedup_vs_openvino_default = peer[key] / cell.latency.median_ms


def _baseline(
    cells: list[CellResult], backend: str, precision: str
) -> dict[tuple[str, int], float]:
    return {
        (c.model, c.batch): c.latency.median_ms
        for c in cells
        if c.backend == backend and c.precision == precision and c.status == "ok" and c.latency
    }


def _precheck(cell: CellResult) -> str | None:
    """Why the cell cannot run here, decided before anything is loaded; None if it may."""
    if cell.backend in BACKENDS:
        reason = backend_unavailable_reason(cell.backend)
        if reason:
            return reason
    supported = BACKEND_PRECISIONS.get(cell.backend, ("fp32",))
    if cell.precision not in supported:
        return f"{cell.backend} is benchmarked at {', '.join(supported)} only"
    return None


def _run_model(
    spec: ModelSpec,
    cells: list[CellResult],
    config: BenchConfig,
    factories: dict[str, RunnerFactory],
    progress: ProgressSink,
    device: str,
    threads: int,
) -> None:
    pending = []
    for cell in cells:
        reason = _precheck(cell)
        if reason is None:
            pending.append(cell)
        else:
            _finish(cell, "skipped", reason, progress)
    if not pending:
        return
    progress.phase(f"{spec.name}: loading the eager model")
    try:
        from hgdeploy.loader import load_model

        model = load_model(spec.name, config.checkpoint, seed=config.seed)
    except HgDeployError:
        raise  # a bad --checkpoint is the user's to fix, not a benchmark result
    except Exception as exc:
        for cell in pending:
            _finish(cell, "failed", f"loading the eager model: {one_line(exc)}", progress)
        return
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    for cell in pending:
        cell.weights_mib = round(weights / 2**20, 1)
    artifacts = Artifacts(
        spec,
        model,
        device,
        threads,
        config.engine,
        _OnnxSource(spec.name, config.checkpoint, config.seed, progress.phase),
    )
    for batch in sorted({c.batch for c in pending}):
        batch_cells = [c for c in pending if c.batch == batch]
        try:
            feeds = parity_feeds(spec, INPUT_NAME, batch, config.seed)
        except Exception as exc:
            for cell in batch_cells:
                _finish(cell, "failed", f"preparing the inputs: {one_line(exc)}", progress)
            continue
        reference = TorchRunner(
            model,
            INPUT_NAME,
            spec.input_shape(batch),
            spec.output_names,
            device=device,
            name="eager-reference",
        )
        for cell in batch_cells:
            _run_cell(
                cell,
                spec,
                artifacts,
                factories[cell.backend],
                reference,
                feeds,
                config.plan,
                progress,
            )
        del feeds
        release_free_memory()


def _run_cell(
    cell: CellResult,
    spec: ModelSpec,
    artifacts: Artifacts,
    factory: RunnerFactory,
    reference: TorchRunner,
    feeds: list[Feed],
    plan: TimingPlan,
    progress: ProgressSink,
) -> None:
    started = time.perf_counter()
    progress.phase(f"{cell.label()}: preparing")
    try:
        runner = factory(spec, cell.batch, cell.precision, artifacts)
    except SkipCell as exc:
        _finish(cell, "skipped", one_line(exc), progress, started)
        return
    except Exception as exc:
        _finish(cell, "failed", one_line(exc), progress, started)
        return
    cell.artifact = _artifact_path(cell, artifacts)
    try:
        _measure(cell, spec, runner, reference, feeds, plan, progress)
    except Exception as exc:
        _finish(cell, "failed", one_line(exc), progress, started)
        return
    if cell.parity is not None and cell.parity.checked and not cell.parity.passed:
        _finish(cell, "parity_failed", f"parity FAILED: {cell.parity.note}", progress, started)
    else:
        note = cell.parity.note if cell.parity and not cell.parity.checked else None
        _finish(cell, "ok", note, progress, started)


def _measure(
    cell: CellResult,
    spec: ModelSpec,
    runner: BaseRunner,
    reference: TorchRunner,
    feeds: list[Feed],
    plan: TimingPlan,
    progress: ProgressSink,
) -> None:
    """Activate, check parity (non-torch), then warm up and time; memory over warm-up + timing.

    The RSS baseline is taken before activation, so a backend's own copy of the weights (an
    ONNX Runtime session, a TensorRT engine) counts in its delta; activation's transient
    garbage (the parsed ONNX, serialized bytes) is freed before the measured phase and does not.
    The eager model's weights are loaded once per model (they are also the parity reference),
    so they sit in torch's baseline: torch's delta is activations and workspace only.
    """
    meter = PeakRss()
    reset_device_peak(cell.device)
    progress.phase(f"{cell.label()}: activating")
    fp32_math = _strict_fp32(cell.device) if cell.precision == "fp32" else contextlib.nullcontext()
    with fp32_math:
        _activate_check_time(cell, spec, runner, reference, feeds, plan, progress, meter)


def _activate_check_time(
    cell: CellResult,
    spec: ModelSpec,
    runner: BaseRunner,
    reference: TorchRunner,
    feeds: list[Feed],
    plan: TimingPlan,
    progress: ProgressSink,
    meter: PeakRss,
) -> None:
    runner.activate()
    try:
        cell.providers = _providers(runner)
        if cell.backend != "torch":
            progress.phase(f"{cell.label()}: parity on {len(feeds)} feeds")
            precision = _judged_precision(runner, cell.precision)
            cell.parity = check_parity(spec, reference, runner, feeds, precision, cell.device)
        release_free_memory()
        feed = feeds[0].arrays
        clock = clock_for(cell.device, cell.backend in CUDA_EVENT_BACKENDS)
        progress.phase(f"{cell.label()}: timing ({plan.describe()})")
        with meter.measure():
            stats = time_callable(lambda: runner.infer(feed, check_inputs=False), plan, clock)
        device_peak = device_peak_mib(cell.device) if cell.backend == "torch" else None
    finally:
        if runner.is_active:
            runner.deactivate()
    cell.latency = stats
    cell.throughput_ips = stats.throughput(cell.batch)
    device_method = "torch.cuda.max_memory_allocated" if device_peak is not None else None
    cell.memory = MemoryUsage.from_meter(meter, device_peak, device_method)


def check_parity(
    spec: ModelSpec,
    reference: BaseRunner,
    candidate: BaseRunner,
    feeds: list[Feed],
    precision: str,
    device: str,
) -> ParityOutcome:
    """`compare_runners` with the zoo's tolerances; the candidate stays active afterwards.

    As in `hgdeploy parity`, reduced precisions are judged on the real images only: their
    tolerances were set on them, and noise far outside the data says nothing about deployment
    (bf16 HRNet: 5% of the range on photos, 21% on noise)."""
    if precision != "fp32":
        feeds = [f for f in feeds if not f.noise]
    tolerances = spec.tolerances.get(precision)
    labels = [f.label for f in feeds]
    if tolerances is None:
        return ParityOutcome(
            False, None, labels, note=f"not checked: the zoo has no {precision} tolerances"
        )
    with _strict_fp32(device):
        rows = compare_runners(spec, reference, _Borrowed(candidate), feeds, tolerances)
    note = describe_failure(rows)
    return ParityOutcome(True, note is None, labels, [asdict(r) for r in rows], note)


def _judged_precision(runner: BaseRunner, precision: str) -> str:
    """The tolerances a cell is judged by: OpenVINO's "default" by what it compiled to."""
    compiled = getattr(runner, "compiled_precision", None)
    if precision != "default" or compiled is None:
        return precision
    return {"bf16": "bf16", "f16": "fp16"}.get(compiled, "fp32")


class _Borrowed(BaseRunner):
    """An already-active runner lent to Polygraphy's Comparator, which deactivates what it ran;
    lending it keeps the candidate's session alive for timing (one activation per cell)."""

    def __init__(self, inner: BaseRunner) -> None:
        super().__init__(name=inner.name)
        self._inner = inner

    def activate_impl(self) -> None:
        pass

    def deactivate_impl(self) -> None:
        pass

    def get_input_metadata_impl(self) -> Any:
        return self._inner.get_input_metadata(use_numpy_dtypes=False)

    def infer_impl(self, feed_dict: dict[str, Any]) -> Any:
        outputs = self._inner.infer(feed_dict, check_inputs=False)
        self.inference_time = self._inner.last_inference_time()
        return outputs


@contextlib.contextmanager
def _strict_fp32(device: str) -> Iterator[None]:
    """IEEE fp32 convolutions and matmuls in torch on a GPU (no TF32): fp32 cells are true fp32
    (the torch baseline included), and the parity reference is the exact fp32 model that the
    zoo's tolerances were set against. A no-op on the CPU."""
    if not device.startswith("cuda"):
        yield
        return
    import torch

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        saved = (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved
        return
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _artifact_path(cell: CellResult, artifacts: Artifacts) -> str | None:
    """The file a built-in backend's runner was made from (the factory already resolved it)."""
    if (cell.backend, cell.precision) in artifacts.cpu_artifacts:
        return str(artifacts.cpu_artifacts[(cell.backend, cell.precision)])
    if cell.backend in ("onnxruntime", "openvino"):
        path = artifacts.onnx_source.path
        return None if path is None else str(path)
    if cell.backend == "tensorrt":
        return str(artifacts.engine or default_engine_path(cell.model, cell.precision))
    return None


def _providers(runner: BaseRunner) -> list[str] | None:
    """The execution providers an ONNX Runtime session really got; for OpenVINO, the device and
    the inference precision it compiled with (None for other runners)."""
    compiled = getattr(runner, "compiled_precision", None)
    if compiled is not None:
        return [f"CPU (inference precision {compiled})"]
    session = getattr(runner, "sess", None)
    get = getattr(session, "get_providers", None)
    return list(get()) if callable(get) else None


def _finish(
    cell: CellResult,
    status: Status,
    reason: str | None,
    progress: ProgressSink,
    started: float | None = None,
) -> None:
    cell.status = status
    cell.reason = reason
    if started is not None:
        cell.seconds = time.perf_counter() - started
    progress.advance(cell)


def one_line(exc: BaseException) -> str:
    """An exception as one short line: the message for our errors, `Type: first line` else."""
    text = " ".join(str(exc).split()) if isinstance(exc, (HgDeployError, SkipCell)) else ""
    if not text:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
