"""torch -> ONNX for zoo models: corner pools as TensorRT plugin ops, or lowered to standard ops.

The dynamo exporter (`torch.onnx.export(dynamo=True)`) traces the eager model; each corner-pool
custom op becomes one plugin node through `custom_translation_table`. The `onnx` form then runs
the lowering pass, so both forms come from one trace and keep the same tensor names.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from hgdeploy.base.artifacts import (
    artifact_files,
    atomic_path,
    read_sidecar,
    sha256_file,
    sidecar_path,
)
from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.export_settings import (
    CORNER_POOL_FORMS,
    DEFAULT_OPSET,
    INPUT_NAME,
    MIN_OPSET,
    CornerPoolForm,
)
from hgdeploy.base.onnx_files import METADATA_MODEL_KEY
from hgdeploy.base.outputs import check_output
from hgdeploy.base.zoo import ModelSpec, get_spec
from hgdeploy.exporters.corner_pool_ops import (
    count_corner_pool_nodes,
    custom_translation_table,
    register_corner_pool_schemas,
)
from hgdeploy.exporters.lowering import lower_corner_pools
from hgdeploy.models.loader import load_model, weights_provenance

BATCH_DIM = "batch"
# The example a static export traces is real: a batch this size of 511x511 images already needs
# tens of GB of activations in CornerNet.
MAX_STATIC_BATCH = 256
METADATA_FORM_KEY = "hgdeploy.corner_pool"

StepCallback = Callable[[str], None]

# The exporter logs a warning per torchvision op it cannot register; torchvision is not used.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


@dataclass(frozen=True)
class ExportOptions:
    batch: int = 1
    dynamic_batch: bool = False
    opset: int = DEFAULT_OPSET
    corner_pool: CornerPoolForm = "plugin"
    # H x W of the input; None: the zoo's documented size. CornerNet-family nets are fully
    # convolutional, and upstream feeds them 128k-1 sizes (a 512x512 photo runs at 639x639).
    input_hw: tuple[int, int] | None = None

    def input_shape(self, spec: ModelSpec, batch: int) -> tuple[int, int, int, int]:
        height, width = self.input_hw or spec.input_hw
        return (batch, height, width, 3) if spec.layout == "NHWC" else (batch, 3, height, width)

    def output_shape(self, spec: ModelSpec, shape: tuple[int, ...]) -> list[int]:
        """An output's per-image shape at this input size (spatial axes scale with the input)."""
        if self.input_hw is None:
            return list(shape)
        factors = [(new + 1) / (old + 1) for new, old in zip(self.input_hw, spec.input_hw)]
        return [*shape[:-2], round(shape[-2] * factors[0]), round(shape[-1] * factors[1])]

    def check_input_size(self, spec: ModelSpec) -> None:
        if self.input_hw is None or tuple(self.input_hw) == spec.input_hw:
            return
        if spec.decode is None or spec.name == "saccade":
            raise HgDeployError(
                f"--input-size: {spec.name} runs at {spec.input_hw[0]}x{spec.input_hw[1]} only "
                "(its upstream test pipeline crops to that size)"
            )
        if any(side < 127 or (side + 1) % 128 for side in self.input_hw):
            raise HgDeployError(
                f"--input-size {self.input_hw[0]}x{self.input_hw[1]}: each side must be 128k-1 "
                "(127, 255, 383, 511, 639, ...), the sizes upstream pads images to"
            )

    def validate(self) -> None:
        if self.batch < 1:
            raise HgDeployError(f"--batch must be >= 1, got {self.batch}")
        if self.batch > MAX_STATIC_BATCH:
            raise HgDeployError(
                f"--batch {self.batch}: the export runs the model once at that batch; above "
                f"{MAX_STATIC_BATCH} use --dynamic-batch (one graph for every batch size)"
            )
        if self.opset < MIN_OPSET:
            raise HgDeployError(f"--opset must be >= {MIN_OPSET} (the dynamo exporter's minimum)")
        newest = onnx.defs.onnx_opset_version()
        if self.opset > newest:
            raise HgDeployError(f"--opset {self.opset}: this onnx knows opsets up to {newest}")
        if self.corner_pool not in CORNER_POOL_FORMS:
            raise HgDeployError(f"--corner-pool must be one of {', '.join(CORNER_POOL_FORMS)}")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sidecar: Path
    corner_pool_nodes: dict[str, int]
    seconds: float


def export_onnx(
    spec: ModelSpec, model: nn.Module, options: ExportOptions, on_step: StepCallback | None = None
) -> onnx.ModelProto:
    """Trace `model` into an in-memory ONNX model in the requested corner-pool form."""
    options.validate()
    options.check_input_size(spec)
    step = on_step or (lambda _: None)
    register_corner_pool_schemas()
    # A dynamic axis needs an example size >= 2, or torch specialises it to the constant 1.
    example_batch = max(options.batch, 2) if options.dynamic_batch else options.batch
    example = torch.zeros(options.input_shape(spec, example_batch))
    dynamic_shapes = ({0: torch.export.Dim(BATCH_DIM)},) if options.dynamic_batch else None
    step(f"tracing {spec.name} (torch.export)")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        program = torch.onnx.export(
            model.eval(),
            (example,),
            f=None,
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(spec.output_names),
            opset_version=options.opset,
            dynamic_shapes=dynamic_shapes,
            custom_translation_table=custom_translation_table(),
            verbose=False,
        )
    proto = program.model_proto
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != options.opset:
        raise HgDeployError(
            f"--opset {options.opset}: torch.onnx wrote opset {written} instead (it cannot "
            f"convert to {options.opset}); choose an opset between {MIN_OPSET} and {written}"
        )
    _rename_batch_dims(proto, options.dynamic_batch)
    if options.corner_pool == "onnx":
        step("lowering corner pools to standard ONNX ops")
        proto = lower_corner_pools(proto)
    onnx.helper.set_model_props(
        proto, {METADATA_MODEL_KEY: spec.name, METADATA_FORM_KEY: options.corner_pool}
    )
    return proto


def _rename_batch_dims(proto: onnx.ModelProto, dynamic: bool) -> None:
    """Name the dynamic batch axis `batch` on every graph input/output (torch names it s0...)."""
    if not dynamic:
        return
    for value in (*proto.graph.input, *proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if dim.HasField("dim_param") or not dim.HasField("dim_value"):
            dim.dim_param = BATCH_DIM


def check_onnx(proto: onnx.ModelProto) -> None:
    """`onnx.checker` with full shape inference; plugin ops are known through their schemas."""
    register_corner_pool_schemas()
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = first_line(exc)
        raise HgDeployError(f"exported ONNX failed onnx.checker: {first}") from None


def save_onnx(proto: onnx.ModelProto, path: str | Path) -> Path:
    """Write the model as one self-contained file, atomically."""
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return Path(path)


# The export that engines and benchmarks share: one dynamic-batch plugin-form ONNX per model.
SHARED_EXPORT = ExportOptions(batch=1, dynamic_batch=True, corner_pool="plugin")


def default_output(name: str, options: ExportOptions) -> Path:
    batch = "dyn" if options.dynamic_batch else f"b{options.batch}"
    size = f"_{options.input_hw[0]}x{options.input_hw[1]}" if options.input_hw else ""
    return Path("artifacts") / name / f"{name}_{batch}{size}_{options.corner_pool}.onnx"


def export_to_file(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
    options: ExportOptions = ExportOptions(),
    seed: int = 0,
    on_step: StepCallback | None = None,
    force: bool = False,
) -> ExportResult:
    """Load, export, check and write `<output>` plus its sidecar `<output>.json` (together:
    `artifact_files`). `force` replaces an existing file hgdeploy did not write."""
    spec = get_spec(name)
    options.validate()
    options.check_input_size(spec)
    step = on_step or (lambda _: None)
    # Before minutes of work: the output is writable, is not the checkpoint, is not a foreign file.
    path = check_output(
        output if output is not None else default_output(name, options),
        inputs={"--checkpoint": checkpoint},
        force=force,
    )
    started = time.perf_counter()
    step(f"loading {name}")
    model = load_model(name, checkpoint, seed=seed)
    proto = export_onnx(spec, model, options, on_step=step)
    step("checking the ONNX model (onnx.checker, full)")
    check_onnx(proto)
    step(f"writing {path}")
    counts = count_corner_pool_nodes(proto)
    with artifact_files(path) as pending:
        onnx.save_model(proto, str(pending.tmp()))
        seconds = time.perf_counter() - started
        fields = _sidecar_fields(spec, options, checkpoint, seed, counts, seconds)
        pending.describe({**fields, "sha256": pending.sha256()})
    return ExportResult(path, sidecar_path(path), counts, seconds)


def _sidecar_fields(
    spec: ModelSpec,
    options: ExportOptions,
    checkpoint: str | Path | None,
    seed: int,
    counts: dict[str, int],
    seconds: float,
) -> dict[str, Any]:
    batch: int | str = BATCH_DIM if options.dynamic_batch else options.batch
    return {
        "kind": "onnx",
        "model": spec.name,
        **weights_provenance(checkpoint, seed),
        "opset": options.opset,
        "options": asdict(options),
        "corner_pool": options.corner_pool,
        "corner_pool_nodes": counts,
        "input": {
            "name": INPUT_NAME,
            "shape": [batch, *options.input_shape(spec, 1)[1:]],
            "layout": spec.layout,
        },
        "outputs": {o.name: [batch, *options.output_shape(spec, o.shape)] for o in spec.outputs},
        "export_seconds": round(seconds, 2),
    }


def ensure_shared_export(
    name: str,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    on_step: StepCallback | None = None,
) -> Path:
    """The default-path SHARED_EXPORT ONNX of `name`, exported unless a matching one is there.

    An existing file is reused only when its sidecar records the same model, export options and
    weights (seed, or checkpoint path and hash) and the file's hash is the one recorded.
    """
    path = default_output(name, SHARED_EXPORT)
    sidecar = read_sidecar(path) if path.is_file() else None
    if sidecar is not None:
        wanted = {"kind": "onnx", "model": name, "options": asdict(SHARED_EXPORT)}
        wanted |= weights_provenance(checkpoint, seed)
        matches = all(sidecar.get(k) == v for k, v in wanted.items())
        if matches and sidecar.get("sha256") == sha256_file(path):
            return path
    export_to_file(
        name,
        checkpoint=checkpoint,
        output=path,
        options=SHARED_EXPORT,
        seed=seed,
        on_step=on_step,
    )
    return path


def fp32_onnx_for(
    name: str,
    onnx_path: Path | None,
    checkpoint: str | Path | None = None,
    on_step: StepCallback | None = None,
) -> Path:
    """The fp32 ONNX a build starts from: the given file (which must exist), or the shared
    dynamic-batch plugin export of `name` (reused when it matches)."""
    if onnx_path is None:
        return ensure_shared_export(name, checkpoint, on_step=on_step)
    if not Path(onnx_path).is_file():
        raise HgDeployError(f"ONNX file not found: {onnx_path}")
    return Path(onnx_path)
