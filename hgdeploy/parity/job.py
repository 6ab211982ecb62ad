"""`hgdeploy parity`: resolve the artifact, its weights and the runners, then compare."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from polygraphy.backend.base import BaseRunner

from hgdeploy.backends.base import RunRequest
from hgdeploy.backends.registry import (
    backends_running,
    get_backend,
    reference_backend,
)
from hgdeploy.base.artifacts import read_sidecar, verify_sidecar
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.export_settings import INPUT_NAME
from hgdeploy.base.precisions import get_precision
from hgdeploy.base.zoo import ModelSpec, get_spec
from hgdeploy.parity.compare import ParityReport, compare_runners, parity_feeds


@dataclass(frozen=True)
class WeightsSource:
    checkpoint: Path | None
    seed: int

    def describe(self) -> str:
        return str(self.checkpoint) if self.checkpoint else f"synthetic weights (seed {self.seed})"


def resolve_weights(
    name: str, artifact: Path, checkpoint: str | Path | None, default_seed: int = 0
) -> WeightsSource:
    """The weights the artifact was made from, so the eager reference uses the same ones.

    An explicit --checkpoint wins; otherwise the artifact's sidecar says (a checkpoint path, or
    the seed of synthetic weights); without a sidecar, synthetic weights with `default_seed`.
    """
    sidecar = _weights_record(artifact)
    if sidecar is not None and sidecar.get("model") not in (None, name):
        raise HgDeployError(f"{artifact} was exported from {sidecar['model']!r}, not {name!r}")
    if checkpoint is not None:
        return WeightsSource(Path(checkpoint), default_seed)
    if sidecar is None:
        return WeightsSource(None, default_seed)
    if sidecar.get("weights") == "checkpoint":
        recorded = Path(sidecar["checkpoint"])
        if not recorded.is_file():
            raise HgDeployError(
                f"{artifact} was made from checkpoint {recorded}, which is not there; "
                "pass --checkpoint"
            )
        return WeightsSource(recorded, default_seed)
    return WeightsSource(None, int(sidecar.get("seed", default_seed)))


def _weights_record(artifact: Path) -> dict | None:
    """The sidecar that says which weights `artifact` came from: its own, or, for engines and
    precision-prepared ONNX, the one of the fp32 export it was made from (`source_onnx`)."""
    record = read_sidecar(artifact)
    seen = {artifact}
    while record is not None and "weights" not in record:
        source_value = record.get("source_onnx") or (record.get("source") or {}).get("path")
        if not source_value or Path(source_value) in seen or not Path(source_value).is_file():
            break
        source = Path(source_value)
        seen.add(source)
        record = read_sidecar(source)
    return record


def backend_runner(
    backend: str, artifact: Path, spec: ModelSpec, batch: int, precision: str = "fp32"
) -> BaseRunner:
    """The candidate runner from the backend registry. fp16 and int8 live in the artifact
    itself; a precision that is a compile hint (bf16) only a backend that runs it can honour."""
    chosen = get_backend(backend)
    if chosen.is_reference:
        raise HgDeployError(f"--backend {backend} is the reference; choose another backend")
    if precision not in chosen.runs and not get_precision(precision).in_artifact:
        runners = " / ".join(backends_running(precision))
        raise HgDeployError(f"{precision} is run by --backend {runners} only, not {backend}")
    chosen.check_artifact_suffix(artifact)
    return chosen.runner(RunRequest(artifact, spec, batch, precision))


def reference_runner(spec: ModelSpec, weights: WeightsSource, batch: int) -> BaseRunner:
    request = RunRequest(weights.checkpoint, spec, batch, seed=weights.seed)
    return reference_backend().runner(request)


def parity_artifact(
    name: str,
    backend: str,
    *,
    onnx: Path | None,
    engine: Path | None,
    batch: int,
    checkpoint: Path | None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[Path, bool]:
    """The artifact `parity` checks, and whether it was exported just now: `--engine` for a
    backend that runs no ONNX, else `--onnx`, else the default export (made if missing)."""
    chosen = get_backend(backend)
    if ".onnx" not in chosen.artifact_suffixes:
        if engine is None:
            raise HgDeployError(f"--backend {backend} needs --engine PATH (hgdeploy build-engine)")
        return engine, False
    if onnx is not None:
        return onnx, False
    from hgdeploy.exporters.onnx_export import ExportOptions, default_output, export_to_file

    options = ExportOptions(batch=batch)
    artifact = default_output(name, options)
    if artifact.is_file():
        return artifact, False
    export_to_file(name, checkpoint=checkpoint, options=options, on_step=on_step)
    return artifact, True


def run_parity(
    name: str,
    artifact: str | Path,
    *,
    backend: str = "onnxruntime",
    checkpoint: str | Path | None = None,
    batch: int = 1,
    seed: int = 0,
    precision: str | None = None,
) -> ParityReport:
    """Compare `backend` running `artifact` (an ONNX, or an engine for tensorrt) with the eager
    model on real images and noise, with the zoo's tolerances for the artifact's precision."""
    spec = get_spec(name)
    artifact = Path(artifact)
    if batch < 1:
        raise HgDeployError(f"--batch must be >= 1, got {batch}")
    record = verify_sidecar(artifact) if artifact.is_file() else None
    precision = precision or (record or {}).get("precision", "fp32")
    tolerances = spec.tolerances.get(precision)
    if tolerances is None:
        raise HgDeployError(f"{name} has no {precision} tolerances")
    candidate = backend_runner(backend, artifact, spec, batch, precision)
    weights = resolve_weights(name, artifact, checkpoint)
    feeds = parity_feeds(
        spec, INPUT_NAME, batch, seed, noise=not get_precision(precision).photos_only
    )
    rows = compare_runners(
        spec, reference_runner(spec, weights, batch), candidate, feeds, tolerances
    )
    return ParityReport(
        model=name,
        backend=backend,
        precision=precision,
        batch=batch,
        feeds=[f.label for f in feeds],
        outputs=rows,
        details={"artifact": str(artifact), "weights": weights.describe(), "seed": seed},
    )
