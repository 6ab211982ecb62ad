"""A benchmark's configuration and results: what to run, and what each cell measured.

Cell statuses: "ok" (timed; parity passed, or the cell is the eager reference), "parity_failed"
(timed, untrusted), "skipped" (cannot run here: backend missing, precision unsupported, no
engine; the reason says which), "failed" (it raised: the one-line error is the reason, and the
run goes on with the next cell); "pending" appears only in partial results saved mid-run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from hgdeploy.backends.registry import backend_names, benchmarked_precisions, get_backend
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import ZOO, ModelSpec, get_spec
from hgdeploy.bench.timing import LatencyStats, MemoryUsage, TimingPlan

Status = Literal["pending", "ok", "parity_failed", "skipped", "failed"]
DOCUMENTED = "documented"  # a --batch value: every documented batch size of each model


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = tuple(ZOO)
    backends: tuple[str, ...] = field(default_factory=backend_names)
    precisions: tuple[str, ...] = ("fp32",)
    batches: tuple[int | str, ...] = ()  # () -> 1 and spec.default_batch; DOCUMENTED -> all
    plan: TimingPlan = field(default_factory=TimingPlan)
    threads: int | None = None  # None -> every core this process may use
    device: str = "auto"  # auto, cpu or cuda
    engine: Path | None = None
    checkpoint: Path | None = None
    seed: int = 0

    def validate(self, known: Iterable[str] | None = None) -> None:
        """One-line refusals of bad options; `known`: the backend names (the registry's)."""
        for name in self.models:
            get_spec(name)
        known = list(backend_names() if known is None else known)
        unknown = [b for b in self.backends if b not in known]
        if unknown:
            raise HgDeployError(f"unknown backend {unknown[0]!r}; known: {', '.join(known)}")
        precisions = benchmarked_precisions()
        bad = [p for p in self.precisions if p not in precisions]
        if bad:
            raise HgDeployError(f"unknown precision {bad[0]!r}; known: {', '.join(precisions)}")
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

    def check_some_backend_runs(self) -> None:
        """Refuse (one line, exit 1) when every non-reference backend of the config is
        unavailable here: only the reference would be timed, a table of skips."""
        asked = [get_backend(n) for n in self.backends if not get_backend(n).is_reference]
        reasons = [(b.name, b.unavailable_reason()) for b in asked]
        if asked and all(reason for _, reason in reasons):
            detail = "; ".join(f"{name}: {reason}" for name, reason in reasons)
            raise HgDeployError(f"no requested backend can run here ({detail})")

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
    def is_reference(self) -> bool:
        """The eager reference cell every other cell is judged and timed against."""
        return _is_reference(self.backend)

    @property
    def trusted(self) -> bool:
        """Timed, and either the eager reference itself or checked and matching it."""
        if self.status != "ok":
            return False
        return self.is_reference or bool(self.parity and self.parity.passed)

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


def _is_reference(backend: str) -> bool:
    try:
        return get_backend(backend).is_reference
    except HgDeployError:  # a backend a test registered and removed again
        return False
