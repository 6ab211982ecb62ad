"""What a built network artifact looks like from outside: its backend, precision, input and
output names and shapes, batch range and companion files, as a Triton config needs them.

Read from the artifact itself (ONNX graph, OpenVINO IR) and its sidecar; an engine's shapes come
from the ONNX it was built from (its sidecar names it), else the zoo's documented shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from hgdeploy.backends.registry import backend_for_suffix
from hgdeploy.base.artifacts import verify_sidecar
from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.export_settings import INPUT_NAME, METADATA_MODEL_KEY
from hgdeploy.base.onnx_files import metadata
from hgdeploy.base.zoo import ModelSpec

Dims = tuple[int, ...]  # with the batch axis first; -1 where the size varies


@dataclass(frozen=True)
class NetworkArtifact:
    path: Path
    backend: str  # onnxruntime | openvino | tensorrt
    precision: str
    inputs: dict[str, Dims]
    outputs: dict[str, Dims]
    static_batch: int | None  # the one batch a fixed-batch artifact runs; None: dynamic
    max_batch: int | None  # an engine profile's max (Triton must not send more)
    companions: tuple[Path, ...] = ()  # files the artifact refers to by name (.bin, .onnx.data)
    plugins: str = "none"  # engines: "none", "aot" (embedded kernels) or "jit" (needs Python)
    notes: list[str] = field(default_factory=list)

    @property
    def input_hw(self) -> tuple[int, int]:
        dims = self.inputs[INPUT_NAME]
        return (dims[2], dims[3]) if dims[1] == 3 else (dims[1], dims[2])


def read_network(spec: ModelSpec, path: Path) -> NetworkArtifact:
    """The artifact at `path` as a network of `spec`, or a one-line refusal."""
    if not path.is_file():
        raise HgDeployError(f"artifact not found: {path}")
    backend = backend_for_suffix(path.suffix)
    if backend is None:
        raise HgDeployError(f"cannot tell which backend runs {path} (.onnx, .xml or .engine)")
    record = verify_sidecar(path) or {}
    proto = _onnx_graph_only(path) if backend == "onnxruntime" else None
    made_from = record.get("model")
    if proto is not None and made_from is None:
        made_from = metadata(proto).get(METADATA_MODEL_KEY)
    if made_from is not None and made_from != spec.name:
        raise HgDeployError(f"{path} was made from {made_from!r}, not {spec.name!r}")
    precision = str(record.get("precision", "fp32"))
    if proto is not None:
        inputs, outputs, companions = _onnx_io(proto, path.parent)
        return _checked(spec, path, NetworkArtifact(path, backend, precision, inputs, outputs,
                                                    _static(inputs), None, companions))  # fmt: skip
    if backend == "openvino":
        inputs, outputs = _openvino_io(path)
        return _checked(spec, path, NetworkArtifact(path, backend, precision, inputs, outputs,
                                                    _static(inputs), None, (path.with_suffix(".bin"),)))  # fmt: skip
    return _checked(spec, path, _engine(spec, path, record, precision))


def _checked(spec: ModelSpec, path: Path, network: NetworkArtifact) -> NetworkArtifact:
    dims = network.inputs.get(INPUT_NAME)
    if dims is None or len(dims) != 4:
        raise HgDeployError(f"{path} has no 4-d input named {INPUT_NAME!r}; is it a {spec.name}?")
    if any(d < 1 for d in dims[1:]):
        raise HgDeployError(
            f"{path}: input {INPUT_NAME} {list(dims)} has a free size past the batch"
        )
    for companion in network.companions:
        if not companion.is_file():
            raise HgDeployError(f"{path} needs {companion.name} beside it, which is missing")
    return network


def _static(inputs: dict[str, Dims]) -> int | None:
    batch = inputs[INPUT_NAME][0] if INPUT_NAME in inputs else -1
    return batch if batch > 0 else None


def _onnx_graph_only(path: Path) -> onnx.ModelProto:
    """The graph without its weights (an external-data file is only named, not read)."""
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several kinds for a bad file
        raise HgDeployError(f"cannot read {path} as ONNX: {first_line(exc)}") from None


def _onnx_io(
    proto: onnx.ModelProto, directory: Path
) -> tuple[dict[str, Dims], dict[str, Dims], tuple[Path, ...]]:
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}

    def dims(info: onnx.ValueInfoProto) -> Dims:
        shape = info.type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in shape)

    inputs = {i.name: dims(i) for i in graph.input if i.name not in initializers}
    outputs = {o.name: dims(o) for o in graph.output}
    locations = {
        entry.value
        for tensor in graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return inputs, outputs, tuple(directory / name for name in sorted(locations))


def _openvino_io(path: Path) -> tuple[dict[str, Dims], dict[str, Dims]]:
    import openvino as ov

    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError and others
        raise HgDeployError(
            f"cannot read {path} as OpenVINO IR: {str(exc).splitlines()[0]}"
        ) from None

    def dims(port: ov.Output) -> Dims:
        return tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())

    return ({p.get_any_name(): dims(p) for p in model.inputs},
            {p.get_any_name(): dims(p) for p in model.outputs})  # fmt: skip


def _engine(spec: ModelSpec, path: Path, record: dict, precision: str) -> NetworkArtifact:
    """An engine's I/O from its source ONNX (sidecar `onnx`), else the zoo; its batch range
    from the profile; whether its corner-pool plugins are embedded (AOT) from that ONNX."""
    profile = record.get("profile")
    if not isinstance(profile, dict) or not {"min", "max"} <= profile.keys():
        raise HgDeployError(f"{path} has no engine profile in its sidecar; build it with hgdeploy")
    low, high = int(profile["min"]), int(profile["max"])
    source = Path(str(record.get("onnx", ""))) if record.get("onnx") else None
    notes: list[str] = []
    plugins = "none"
    if source is not None and source.is_file():
        proto = _onnx_graph_only(source)
        inputs, outputs, _ = _onnx_io(proto, source.parent)
        plugins = _plugin_form(proto)
    else:
        inputs = {INPUT_NAME: spec.input_shape(-1)}
        outputs = {o.name: (-1, *o.shape) for o in spec.outputs}
        notes.append(f"{path.name}: its source ONNX is gone; shapes are the zoo's documented ones")
    if spec.outputs[0].name not in outputs:
        raise HgDeployError(f"{path}: outputs {sorted(outputs)} are not {spec.name}'s")
    batch_axis = -1 if low != high else low
    inputs = {n: (batch_axis, *d[1:]) for n, d in inputs.items()}
    outputs = {n: (batch_axis, *d[1:]) for n, d in outputs.items()}
    if low != high and low != 1:
        raise HgDeployError(
            f"{path}'s profile starts at batch {low}: Triton's batcher sends any batch from 1 up; "
            "rebuild it with --min-batch 1"
        )
    return NetworkArtifact(path, "tensorrt", precision, inputs, outputs,
                           low if low == high else None, high, (), plugins, notes)  # fmt: skip


def _plugin_form(proto: onnx.ModelProto) -> str:
    """ "none", "aot" or "jit": how an engine built from `proto` runs its corner pools."""
    from hgdeploy.plugins.tensorrt_plugins import OP_TYPES, node_aot_attribute

    pools = [n for n in proto.graph.node if n.op_type in OP_TYPES]
    if not pools:
        return "none"
    return "aot" if all(node_aot_attribute(n) == 1 for n in pools) else "jit"
