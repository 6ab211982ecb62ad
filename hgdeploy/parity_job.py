"""`hgdeploy parity`: resolve the artifact, its weights and the runners, then compare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from polygraphy.backend.base import BaseRunner

from hgdeploy.artifacts import read_sidecar
from hgdeploy.errors import HgDeployError
from hgdeploy.exporters.onnx_export import INPUT_NAME, METADATA_MODEL_KEY
from hgdeploy.loader import load_model
from hgdeploy.onnx_files import input_dims, load_onnx, metadata
from hgdeploy.parity import ParityReport, compare_runners, parity_feeds
from hgdeploy.runners.onnxrt_runner import onnxruntime_runner
from hgdeploy.runners.torch_runner import TorchRunner
from hgdeploy.zoo import ModelSpec, get_spec

PARITY_BACKENDS = ("onnxruntime", "openvino", "tensorrt")


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


def _check_onnx_fits(spec: ModelSpec, onnx_path: Path, batch: int) -> None:
    model = load_onnx(onnx_path)
    recorded = metadata(model).get(METADATA_MODEL_KEY)
    if recorded is not None and recorded != spec.name:
        raise HgDeployError(f"{onnx_path} holds model {recorded!r}, not {spec.name!r}")
    dims = input_dims(model, INPUT_NAME)
    if isinstance(dims[0], int) and dims[0] != batch:
        raise HgDeployError(
            f"{onnx_path} has a static batch of {dims[0]}; use --batch {dims[0]} or export "
            "with --dynamic-batch"
        )


def backend_runner(
    backend: str, artifact: Path, spec: ModelSpec, batch: int, precision: str = "fp32"
) -> BaseRunner:
    """The candidate runner. fp16 and int8 live in the artifact itself; bf16 is only a compile
    hint (OpenVINO runs the fp32 ONNX in bf16), so no other backend can honour it."""
    if precision == "bf16" and backend != "openvino":
        raise HgDeployError(f"bf16 is run by --backend openvino only, not {backend}")
    if artifact.suffix == ".xml" and backend != "openvino":
        raise HgDeployError(f"{artifact} is an OpenVINO IR; check it with --backend openvino")
    if backend == "onnxruntime":
        _check_onnx_fits(spec, artifact, batch)
        return onnxruntime_runner(artifact)
    if backend == "openvino":
        from hgdeploy.runners.openvino_runner import openvino_runner

        if artifact.suffix != ".xml":
            _check_onnx_fits(spec, artifact, batch)  # an IR keeps the export's dynamic batch
        # bf16 is a compile hint; int8 (an NNCF IR) and fp16 live in the artifact, whose
        # non-quantized ops run at fp32.
        return openvino_runner(artifact, precision="bf16" if precision == "bf16" else "fp32")
    if backend == "tensorrt":
        from hgdeploy.runners.tensorrt_runner import tensorrt_runner

        return tensorrt_runner(artifact, model=spec.name, batch=batch)
    raise HgDeployError(f"unknown parity backend {backend!r}; choose from {PARITY_BACKENDS}")


def reference_runner(spec: ModelSpec, weights: WeightsSource, batch: int) -> TorchRunner:
    model = load_model(spec.name, weights.checkpoint, seed=weights.seed)
    return TorchRunner(model, INPUT_NAME, spec.input_shape(batch), spec.output_names, name="torch")


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
    record = read_sidecar(artifact) if artifact.is_file() else None
    precision = precision or (record or {}).get("precision", "fp32")
    tolerances = spec.tolerances.get(precision)
    if tolerances is None:
        raise HgDeployError(f"{name} has no {precision} tolerances in the zoo")
    candidate = backend_runner(backend, artifact, spec, batch, precision)
    weights = resolve_weights(name, artifact, checkpoint)
    feeds = parity_feeds(spec, INPUT_NAME, batch, seed, noise=precision == "fp32")
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
