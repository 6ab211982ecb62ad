"""Lower plugin-form corner pools to standard ONNX ops, for runtimes without the plugins.

Each corner pool is a cumulative max along H or W. Log-step doubling computes it exactly with
ceil(log2(L)) steps of ``x = Max(x, shift(x, s))`` for s = 1, 2, 4, ... < L, where ``shift``
moves values s places toward the scan's start (``Slice`` s elements off one end, ``Pad`` s
elements of -inf onto the other). Max never rounds and -inf never wins, so the result is
bit-exact in every float type; on ONNX Runtime CPU it runs about as fast as numpy's
``maximum.accumulate``.

The scanned length L must be static in the graph (it sets the number of steps). Corner pooling
always sees a static H and W at export; the batch and channel dims may be dynamic, since
``Pad`` needs no pad tensor of the input's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hgdeploy.base.errors import HgDeployError
from hgdeploy.exporters.corner_pool_ops import (
    count_corner_pool_nodes,
    is_corner_pool_node,
    iter_model_nodes,
    register_corner_pool_schemas,
)
from hgdeploy.exporters.graph_names import UniqueNames
from hgdeploy.models.corner_pool import DIRECTIONS, PoolDirection

# Pad/Slice/Max take bfloat16 from opset 13 on (and Pad's constant_value is an input since 11).
MIN_DEFAULT_OPSET = 13
DEFAULT_DOMAINS = ("", "ai.onnx")
# Initializers larger than this are left out of the copy that shape inference sees (weights;
# never shape data), so inference does not serialize the model's weights.
_INFERENCE_MAX_INITIALIZER_ELEMENTS = 1024


@dataclass(frozen=True)
class _TensorType:
    elem_type: int
    dims: tuple[int | None, ...]  # None: dynamic or unknown


def lower_corner_pools(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every corner-pool node (any domain) as standard ONNX ops.

    Tensor names and node order stay valid: each pool becomes a chain from its input to its
    output at its own position. Raises HgDeployError when a pooled axis is not static.
    """
    pools = [node for node in model.graph.node if is_corner_pool_node(node)]
    _reject_nested_pools(model)
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    if not pools:
        return lowered
    _require_default_opset(lowered)
    types = _infer_types(model)
    names = UniqueNames(lowered.graph)
    constants = _Constants(lowered.graph, names)
    nodes: list[onnx.NodeProto] = []
    for node in lowered.graph.node:
        if is_corner_pool_node(node):
            tensor_type = _checked_type(node, types.get(node.input[0]))
            nodes.extend(_PoolLowering(node, tensor_type, names, constants).nodes())
        else:
            nodes.append(node)
    del lowered.graph.node[:]
    lowered.graph.node.extend(nodes)
    _drop_unused_opsets(lowered, {node.domain for node in pools})
    return lowered


def _reject_nested_pools(model: onnx.ModelProto) -> None:
    """Only the main graph is rewritten; say so rather than leave plugin nodes behind."""
    top_level = sum(1 for node in model.graph.node if is_corner_pool_node(node))
    everywhere = sum(1 for node in iter_model_nodes(model) if is_corner_pool_node(node))
    if everywhere != top_level:
        raise HgDeployError(
            "corner-pool nodes inside subgraphs or model-local functions cannot be lowered; "
            "inline the functions first (onnx.inliner.inline_local_functions)"
        )


def _require_default_opset(model: onnx.ModelProto) -> None:
    versions = [op.version for op in model.opset_import if op.domain in DEFAULT_DOMAINS]
    if not versions:
        model.opset_import.append(helper.make_opsetid("", MIN_DEFAULT_OPSET))
    elif versions[0] < MIN_DEFAULT_OPSET:
        raise HgDeployError(
            f"lowering corner pools needs ONNX opset >= {MIN_DEFAULT_OPSET}, the model has "
            f"{versions[0]}; export with a newer opset or run onnx.version_converter first"
        )


def _infer_types(model: onnx.ModelProto) -> dict[str, _TensorType]:
    """Tensor types by name, from shape inference on a weight-free copy of the graph."""
    register_corner_pool_schemas()  # lets inference see through pools that feed pools
    inferred = onnx.shape_inference.infer_shapes(_without_weights(model), data_prop=True)
    graph = inferred.graph
    types: dict[str, _TensorType] = {}
    for info in (*graph.input, *graph.value_info, *graph.output):
        tensor_type = info.type.tensor_type
        if info.type.HasField("tensor_type") and tensor_type.HasField("shape"):
            dims = tuple(
                d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
            )
            types[info.name] = _TensorType(tensor_type.elem_type, dims)
    return types


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with large initializers turned into typed graph inputs (same types/shapes)."""
    light = onnx.ModelProto(
        ir_version=model.ir_version, opset_import=model.opset_import, functions=model.functions
    )
    graph = light.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    graph.sparse_initializer.extend(model.graph.sparse_initializer)
    input_names = {info.name for info in model.graph.input}
    for initializer in model.graph.initializer:
        if int(np.prod(initializer.dims)) <= _INFERENCE_MAX_INITIALIZER_ELEMENTS:
            graph.initializer.append(initializer)
        elif initializer.name not in input_names:
            graph.input.append(
                helper.make_tensor_value_info(
                    initializer.name, initializer.data_type, list(initializer.dims)
                )
            )
    return light


class _Constants:
    """Initializers shared by all the lowered pools (one per distinct value)."""

    def __init__(self, graph: onnx.GraphProto, names: UniqueNames) -> None:
        self._graph = graph
        self._names = names
        self._cache: dict[tuple[object, ...], str] = {}

    def int64s(self, values: list[int]) -> str:
        key = ("int64", tuple(values))
        if key not in self._cache:
            name = self._names.fresh("corner_pool_i64_" + "_".join(map(str, values)))
            array = np.asarray(values, dtype=np.int64)
            self._add(key, numpy_helper.from_array(array, name))
        return self._cache[key]

    def negative_infinity(self, elem_type: int) -> str:
        key = ("-inf", elem_type)
        if key not in self._cache:
            name = self._names.fresh(f"corner_pool_neg_inf_{elem_type}")
            self._add(key, helper.make_tensor(name, elem_type, [], [float("-inf")]))
        return self._cache[key]

    def _add(self, key: tuple[object, ...], tensor: TensorProto) -> None:
        self._graph.initializer.append(tensor)
        self._cache[key] = tensor.name


_FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)


def _checked_type(node: onnx.NodeProto, tensor_type: _TensorType | None) -> _TensorType:
    """The pool input's type, if it is a float NCHW tensor whose scanned axis is static."""
    axis = DIRECTIONS[node.op_type].axis
    where = f"{node.op_type} node {node.name!r} (input {node.input[0]!r})"
    if tensor_type is None:
        raise HgDeployError(f"cannot lower {where}: its input's shape is unknown")
    if tensor_type.elem_type not in _FLOAT_TYPES:
        raise HgDeployError(
            f"cannot lower {where}: element type {tensor_type.elem_type} is not a float type"
        )
    if len(tensor_type.dims) != 4:
        raise HgDeployError(
            f"cannot lower {where}: expected an NCHW input, got rank {len(tensor_type.dims)}"
        )
    if tensor_type.dims[axis] is None:
        raise HgDeployError(
            f"cannot lower {where}: axis {axis} (H or W) is dynamic; export with a static input "
            "height and width (only the batch axis may be dynamic)"
        )
    return tensor_type


def _doubling_steps(length: int) -> list[int]:
    """1, 2, 4, ... < length: ceil(log2(length)) steps cover every distance up to length - 1."""
    steps, step = [], 1
    while step < length:
        steps.append(step)
        step *= 2
    return steps


class _PoolLowering:
    """Turns one pool node into its Slice/Pad/Max chain, keeping input and output names."""

    def __init__(
        self,
        node: onnx.NodeProto,
        tensor_type: _TensorType,
        names: UniqueNames,
        constants: _Constants,
    ) -> None:
        self._direction: PoolDirection = DIRECTIONS[node.op_type]
        self._length = tensor_type.dims[self._direction.axis] or 0
        self._elem_type = tensor_type.elem_type
        self._input, self._output = node.input[0], node.output[0]
        self._base = node.name or node.output[0]
        self._names = names
        self._constants = constants

    def nodes(self) -> list[onnx.NodeProto]:
        steps = _doubling_steps(self._length)
        if not steps:  # L <= 1: the pool is the identity
            return [self._node("Identity", [self._input], [self._output], "identity")]
        nodes: list[onnx.NodeProto] = []
        current = self._input
        for step in steps:
            shifted = self._names.fresh(f"{self._base}/shifted{step}")
            maximum = (
                self._output
                if step == steps[-1]
                else self._names.fresh(f"{self._base}/scanned{step}")
            )
            nodes += self._shift(current, shifted, step)
            nodes.append(self._node("Max", [current, shifted], [maximum], f"max{step}"))
            current = maximum
        return nodes

    def _shift(self, source: str, target: str, step: int) -> list[onnx.NodeProto]:
        """target[i] = source[i + step] (suffix max) or source[i - step] (prefix max), else -inf.

        Slice drops ``step`` elements at the end the values move away from; Pad refills the other
        end with -inf. The pads list every axis (rank 4) rather than use Pad's ``axes`` input,
        which only opset 18 added.
        """
        axis, length = self._direction.axis, self._length
        start, end = (step, length) if self._direction.reverse else (0, length - step)
        pads = [0] * 8
        pads[axis + (4 if self._direction.reverse else 0)] = step
        sliced = self._names.fresh(f"{self._base}/sliced{step}")
        constants = self._constants
        slice_inputs = [
            source,
            constants.int64s([start]),
            constants.int64s([end]),
            constants.int64s([axis]),
        ]
        pad_inputs = [
            sliced,
            constants.int64s(pads),
            constants.negative_infinity(self._elem_type),
        ]
        return [
            self._node("Slice", slice_inputs, [sliced], f"slice{step}"),
            self._node("Pad", pad_inputs, [target], f"pad{step}", mode="constant"),
        ]

    def _node(
        self, op_type: str, inputs: list[str], outputs: list[str], what: str, **attributes: object
    ) -> onnx.NodeProto:
        name = self._names.fresh(f"{self._base}/{what}")
        return helper.make_node(op_type, inputs, outputs, name=name, **attributes)


def _drop_unused_opsets(model: onnx.ModelProto, domains: set[str]) -> None:
    """Remove the opset imports of the pools' domains that nothing uses any more."""
    used = {node.domain for node in iter_model_nodes(model)}
    used |= {function.domain for function in model.functions}
    unused = {domain for domain in domains if domain not in DEFAULT_DOMAINS and domain not in used}
    kept = [op for op in model.opset_import if op.domain not in unused]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def runnable_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with any corner-pool plugin nodes lowered to standard ops: what every runtime
    without the TensorRT plugins (ONNX Runtime, OpenVINO, calibration) runs."""
    if any(count_corner_pool_nodes(model).values()):
        return lower_corner_pools(model)
    return model
