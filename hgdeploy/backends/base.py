"""What a backend is: the interface every backend module implements, and the objects passed to it.

A backend (one module each, registered in `hgdeploy.backends`) says what it is called, which
precisions it runs and builds, why it cannot run on this machine, how to make a Polygraphy
runner for an artifact, and (optionally) how to build its artifact from the fp32 export. Parity,
bench and the build command only ever talk to this interface, in the spirit of Polygraphy's
runner selection and NNCF's per-backend modules.

Nothing here imports a runtime: each backend imports its runtime when a method needs it, so the
registry (and the CLI that reads its choices) loads in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hgdeploy.base.errors import HgDeployError

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner
    from torch import nn

    from hgdeploy.base.zoo import ModelSpec

StepCallback = Callable[[str], None]


def quiet(_: str) -> None:
    pass


class SkipCell(Exception):
    """Raised when a benchmark cell cannot run here; the message is the reason."""


class OnnxSource:
    """The model's dynamic-batch ONNX, exported on first use and reused while it still matches.

    One file with a dynamic batch axis serves every batch. It is the plugin form at the default
    export path (what `hgdeploy build` reads); runtimes without the plugins lower it on the fly.
    """

    def __init__(
        self, name: str, checkpoint: Path | None, seed: int, on_step: StepCallback = quiet
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


def ensure_onnx(
    name: str, checkpoint: Path | None, seed: int, on_step: StepCallback | None = None
) -> Path:
    """The shared dynamic-batch ONNX for `name` (reused when it matches, else exported)."""
    from hgdeploy.exporters.onnx_export import ensure_shared_export

    step = on_step or quiet
    return ensure_shared_export(
        name, checkpoint, seed, on_step=lambda text: step(f"{name}: export: {text}")
    )


@dataclass
class RunContext:
    """Everything a backend may need to run one model in a benchmark, prepared once per model."""

    spec: ModelSpec
    model: nn.Module  # the eager model (synthetic weights or --checkpoint): torch and reference
    device: str  # "cpu" or "cuda"
    threads: int
    engine: Path | None  # --engine, if given
    onnx_source: OnnxSource
    built: dict[tuple[str, str], Path] = field(default_factory=dict)
    used: dict[tuple[str, str], Path] = field(default_factory=dict)  # artifact per cell

    def onnx(self) -> Path:
        """The dynamic-batch ONNX (exported now if missing or stale)."""
        return self.onnx_source()

    def built_artifact(self, backend: Backend, precision: str) -> Path:
        """`hgdeploy build --backend B --PRECISION`'s default artifact of the shared export,
        built now if missing or made from another export."""
        key = (backend.name, precision)
        if key not in self.built:
            self.built[key] = backend.ensure_artifact(self.spec.name, self.onnx(), precision)
        return self.built[key]


@dataclass(frozen=True)
class RunRequest:
    """One artifact to run (parity, pipelines): for the reference, a checkpoint (None:
    synthetic weights of `seed`); `precision` is what it is judged at."""

    artifact: Path | None
    spec: ModelSpec
    batch: int = 1
    precision: str = "fp32"
    threads: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class BuildRequest:
    """One `hgdeploy build`: which model, backend and precision, from which fp32 ONNX, to where.

    Options that only some backends take are None unless given; `build_job.run_build` refuses
    one given to a backend that does not take it, before anything slow runs.
    """

    model: str
    backend: str
    precision: str | None = None  # None: the backend's default
    onnx: Path | None = None  # an fp32 ONNX; default: the shared export (exported on demand)
    checkpoint: Path | None = None
    output: Path | None = None
    calib_dir: Path | None = None
    calib_cache: Path | None = None
    calib_batches: int | None = None  # None: the backend's default
    calib_method: str | None = None  # None: max (see precision.calibration_methods)
    calib_percentile: float | None = None  # with calib_method "percentile"
    # TensorRT only: the optimization profile, builder settings, int8's unquantized type.
    batch: int | None = None
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_gib: float | None = None
    timing_cache: Path | None = None
    high_precision: str | None = None
    # TensorRT int8: layers kept in high precision, and what the accuracy target that chose
    # them measured (the sidecar records both); see evaluation.accuracy_target.
    keep_layers: tuple[str, ...] | None = None
    accuracy: dict[str, Any] | None = None
    prepare_only: bool = False
    force: bool = False  # replace an existing --output hgdeploy did not write
    # Files the build reads besides its options' (label, path): an accuracy target's held-out
    # set; the output check protects them too (build_job.check_build_outputs).
    extra_inputs: tuple[tuple[str, Path], ...] = ()

    def option_values(self) -> dict[str, Any]:
        """The backend-specific options by their flag, None where not given."""
        return {
            "--batch": self.batch,
            "--min-batch": self.min_batch,
            "--opt-batch": self.opt_batch,
            "--max-batch": self.max_batch,
            "--workspace": self.workspace_gib,
            "--timing-cache": self.timing_cache,
            "--high-precision": self.high_precision,
            "--max-ap-drop": self.keep_layers,
            "--prepare-only": self.prepare_only or None,
        }


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote: the artifact (None when a TensorRT build stopped at the prepared
    ONNX), the files beside it, and the lines the CLI prints before and after the quality
    table."""

    artifact: Path | None
    sidecar: Path | None
    calibration_cache: Path | None = None
    prepared: Path | None = None  # TensorRT: the precision-prepared ONNX
    quality: Any = None  # TensorRT fp16/int8: distance from fp32 (precision.quality)
    summary: tuple[str, ...] = ()
    closing: tuple[str, ...] = ()
    precision: str = ""


class Backend:
    """The interface; one subclass per backend module. Class attributes declare, methods do."""

    name: ClassVar[str]
    summary: ClassVar[str]
    runs: ClassVar[tuple[str, ...]] = ("fp32",)  # precisions bench times and parity judges
    builds: ClassVar[tuple[str, ...]] = ()  # precisions `hgdeploy build` makes (() = no build)
    default_build: ClassVar[str | None] = None
    default_calib_batches: ClassVar[int] = 8
    # Backend-specific build flags it accepts (see BuildRequest.option_values).
    build_options: ClassVar[frozenset[str]] = frozenset()
    # Whether an int8 calibration cache made without kept layers also serves a build that
    # keeps some in high precision (`BuildRequest.keep_layers`); see OpenVINO's for why not.
    cache_serves_kept_layers: ClassVar[bool] = True
    # Whether its inference call returns before the GPU is done (then CUDA events time it).
    asynchronous: ClassVar[bool] = False
    # The artifact suffixes it reads (another backend's suffix is refused: check_artifact_suffix).
    artifact_suffixes: ClassVar[tuple[str, ...]] = (".onnx",)
    # How an error names each kind of artifact file (suffix -> words).
    artifact_kinds: ClassVar[dict[str, str]] = {".onnx": "an ONNX model"}
    is_reference: ClassVar[bool] = False  # the eager model every other backend is judged by
    # The precision at which this backend is the CPU peer every bench cell is also compared with.
    peer_precision: ClassVar[str | None] = None

    def unavailable_reason(self) -> str | None:
        """None if this backend can run on this machine, else a short reason why not."""
        return None

    def check_precision(self, precision: str | None) -> str:
        """The precision to build (the default if None), or a one-line refusal."""
        if not self.builds:
            raise HgDeployError(f"--backend {self.name} has no build step")
        if precision is None:
            return self.default_build or self.builds[0]
        if precision not in self.builds:
            from hgdeploy.backends.registry import backends_building

            others = backends_building(precision)
            hint = f" ({precision} is built by --backend {' / '.join(others)})" if others else ""
            raise HgDeployError(
                f"--backend {self.name} builds {', '.join(self.builds)}, not {precision}{hint}"
            )
        return precision

    def runner(self, request: RunRequest) -> BaseRunner:
        """A runner for `request.artifact` (parity, pipelines)."""
        raise HgDeployError(f"--backend {self.name} runs no artifact")

    def bench_runner(self, context: RunContext, batch: int, precision: str) -> BaseRunner:
        """The runner a benchmark cell times; records the artifact in `context.used`.
        Raises SkipCell when the cell cannot run here."""
        raise SkipCell(f"{self.name} has no benchmark runner")

    def judged_precision(self, runner: BaseRunner, precision: str) -> str:
        """The precision whose tolerances a run at `precision` is judged by (a backend that
        picks its own precision says what it compiled to)."""
        return precision

    def build(self, request: BuildRequest, on_step: StepCallback = quiet) -> BuildResult:
        """Write this backend's artifact for `request` (precision already checked)."""
        raise HgDeployError(f"--backend {self.name} has no build step")

    def ensure_artifact(self, name: str, fp32_onnx: Path, precision: str) -> Path:
        """The default-path artifact of `fp32_onnx` at `precision`, built unless one made from
        this exact file is already there (bench)."""
        raise SkipCell(f"{self.name} builds no {precision} artifact")

    def companions(self, request: BuildRequest) -> tuple[Path, ...]:
        """The files a build of `request` writes beside its --output besides the sidecar (a
        calibration cache, OpenVINO's weights): checked against the inputs as the output is."""
        return ()

    def check_artifact_suffix(self, artifact: Path) -> None:
        """Refuse a file whose suffix belongs to another backend's artifacts (an OpenVINO IR
        given to ONNX Runtime); files with other or no suffixes are left to the runtime."""
        if artifact.suffix in self.artifact_suffixes:
            return
        from hgdeploy.backends.registry import backend_for_suffix, get_backend

        owner = backend_for_suffix(artifact.suffix)
        if owner is None or owner == self.name:
            return
        kind = get_backend(owner).artifact_kinds.get(artifact.suffix, f"a {artifact.suffix} file")
        raise HgDeployError(f"{artifact} is {kind}; check it with --backend {owner}")
