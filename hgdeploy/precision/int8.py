"""Explicit INT8 quantization: QuantizeLinear/DequantizeLinear pairs TensorRT builds from.

TensorRT 11 builds strongly typed networks only, so INT8 is not a builder flag any more: the
ONNX itself says which tensors are int8. This pass writes the explicit-quantization pattern
TensorRT's ONNX parser fuses into int8 convolutions:

* every Conv/ConvTranspose activation input ``x`` goes through ``Q(x) -> DQ``, per tensor,
  symmetric (zero point 0, scale = amax / 127, amax from calibration);
* every Conv/ConvTranspose weight is stored as an int8 initializer behind one ``DQ`` with
  per-output-channel scales (axis 0 for Conv ``[Cout, Cin/g, kh, kw]``, axis 1 for
  ConvTranspose ``[Cin, Cout/g, kh, kw]``), zero points 0;
* biases stay fp32 (TensorRT folds them into the int8 kernel's fp32 epilogue);
* everything else, the corner-pool plugin nodes included, stays fp32 and untouched.

Why insert the nodes here rather than run ``onnxruntime.quantization.quantize_static``: the
ORT quantizer has to run the model it quantizes to calibrate it, and ONNX Runtime cannot run
the plugin nodes; it also quantizes biases to int32 and other ops (Add, Concat, ...) unless
told otherwise, and its node naming and placement change between releases. Inserting the
pattern directly is a few dozen lines, depends only on ``onnx``, keeps the plugin-form graph
otherwise byte-identical, and is a pure function of (model, amax): the same calibration cache
always gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hgdeploy.errors import HgDeployError
from hgdeploy.exporters.graph_names import UniqueNames

QUANTIZED_OPS = ("Conv", "ConvTranspose")
# The output-channel axis of each op's weight: per-channel scales run along it.
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}
INT8_MAX = 127
# Per-axis QuantizeLinear/DequantizeLinear (the `axis` attribute) exist from opset 13 on.
MIN_OPSET = 13
# A zero amax (an all-zero weight channel or a dead activation) would give scale 0, which
# TensorRT rejects and which divides by zero; such a tensor quantizes to zeros at any scale.
MIN_AMAX = 1e-6
PRECISION_KEY = "hgdeploy.precision"
QUANTIZATION_KEY = "hgdeploy.quantization"
SCHEME = (
    "int8 explicit Q/DQ, symmetric (zero point 0, scale = amax/127): Conv/ConvTranspose "
    "weights per output channel, activations per tensor; biases and other ops fp32"
)


def quantized_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The main graph's Conv/ConvTranspose nodes, in graph order."""
    return [node for node in model.graph.node if node.op_type in QUANTIZED_OPS]


def activation_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of the tensors that need a calibrated amax: every quantized op's data input.

    The lowering of corner pools keeps tensor names, so the same list holds for the plugin form
    (which TensorRT builds) and the lowered form (which ONNX Runtime calibrates).
    """
    return list(dict.fromkeys(node.input[0] for node in quantized_nodes(model)))


def quantize_int8(plugin_model: onnx.ModelProto, amax: Mapping[str, float]) -> onnx.ModelProto:
    """A copy of ``plugin_model`` with explicit int8 Q/DQ on every Conv/ConvTranspose input.

    ``amax`` maps activation tensor names (see ``activation_tensors``) to their calibrated
    absolute maximum. Raises HgDeployError when it lacks a tensor or holds a non-finite value,
    or when a weight is not a constant initializer.
    """
    _require_opset(plugin_model)
    needed = activation_tensors(plugin_model)
    _check_amax(needed, amax)
    model = onnx.ModelProto()
    model.CopyFrom(plugin_model)
    _Quantizer(model).run({name: float(amax[name]) for name in needed})
    _set_props(model, {PRECISION_KEY: "int8", QUANTIZATION_KEY: SCHEME})
    return model


def symmetric_scale(amax: float | np.ndarray) -> np.ndarray:
    """float32 scale(s) for symmetric int8: amax / 127, with zero amax floored at MIN_AMAX."""
    return (np.maximum(np.float32(amax), np.float32(MIN_AMAX)) / np.float32(INT8_MAX)).astype(
        np.float32
    )


def quantize_weight(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 per-channel scales) along ``axis``, as QuantizeLinear would round."""
    reduce_axes = tuple(i for i in range(weight.ndim) if i != axis)
    amax = np.abs(weight).max(axis=reduce_axes)
    scale = symmetric_scale(amax)
    shape = [1] * weight.ndim
    shape[axis] = -1
    quantized = np.rint(weight.astype(np.float32) / scale.reshape(shape))
    return np.clip(quantized, -INT8_MAX - 1, INT8_MAX).astype(np.int8), scale


def _require_opset(model: onnx.ModelProto) -> None:
    versions = [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")]
    if versions and versions[0] < MIN_OPSET:
        raise HgDeployError(
            f"int8 Q/DQ needs ONNX opset >= {MIN_OPSET}, the model has {versions[0]}; "
            "export with a newer --opset"
        )


def _check_amax(needed: Iterable[str], amax: Mapping[str, float]) -> None:
    needed = list(needed)
    missing = [name for name in needed if name not in amax]
    if missing:
        raise HgDeployError(
            f"the calibration ranges lack {len(missing)} of the {len(needed)} tensors this model "
            f"quantizes (first: {missing[0]!r}); the cache was made for a different graph"
        )
    bad = [name for name in needed if not math.isfinite(float(amax[name]))]
    if bad:
        raise HgDeployError(f"calibration amax of {bad[0]!r} is not finite: {amax[bad[0]]}")


def _set_props(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Add/replace metadata entries, keeping the others (model name, corner-pool form)."""
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


class _Quantizer:
    """Rewrites one graph in place: Q/DQ after each calibrated tensor, DQ on int8 weights."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self._graph = model.graph
        self._initializers = {t.name: t for t in self._graph.initializer}
        self._names = UniqueNames(self._graph)
        self._new_initializers: list[TensorProto] = []

    def run(self, amax: dict[str, float]) -> None:
        graph = self._graph
        dequantized = {name: self._fresh(f"{name}_dequantized") for name in amax}
        # Q/DQ pairs go right after the tensor's producer (or first, for graph inputs), so the
        # node list stays topologically sorted without a re-sort.
        pairs = {
            name: self._activation_pair(name, value, dequantized[name])
            for name, value in amax.items()
        }
        nodes: list[onnx.NodeProto] = []
        graph_inputs = {v.name for v in graph.input} | set(self._initializers)
        for name in amax:
            if name in graph_inputs:
                nodes.extend(pairs[name])
        weight_cache: dict[str, str] = {}
        for node in graph.node:
            if node.op_type in QUANTIZED_OPS:
                nodes.extend(self._weight_dq(node, weight_cache))
                node.input[0] = dequantized[node.input[0]]
            nodes.append(node)
            for output in node.output:
                if output in pairs:
                    nodes.extend(pairs[output])
        del graph.node[:]
        graph.node.extend(nodes)
        self._drop_unused_initializers(set(weight_cache))
        graph.initializer.extend(self._new_initializers)

    def _activation_pair(self, name: str, amax: float, output: str) -> list[onnx.NodeProto]:
        scale = self._constant(f"{name}_scale", symmetric_scale(amax).reshape(()))
        zero = self._constant(f"{name}_zero_point", np.zeros((), np.int8))
        quantized = self._fresh(f"{name}_quantized")
        return [
            helper.make_node(
                "QuantizeLinear",
                [name, scale, zero],
                [quantized],
                name=self._fresh(f"{name}_QuantizeLinear"),
            ),
            helper.make_node(
                "DequantizeLinear",
                [quantized, scale, zero],
                [output],
                name=self._fresh(f"{name}_DequantizeLinear"),
            ),
        ]

    def _weight_dq(self, node: onnx.NodeProto, cache: dict[str, str]) -> list[onnx.NodeProto]:
        """Point the node's weight at a DQ of its int8 copy (one DQ per shared weight)."""
        weight_name = node.input[1]
        if weight_name in cache:
            node.input[1] = cache[weight_name]
            return []
        tensor = self._initializers.get(weight_name)
        if tensor is None or tensor.data_type != TensorProto.FLOAT:
            raise HgDeployError(
                f"cannot quantize {node.op_type} node {node.name!r}: its weight {weight_name!r} "
                "is not an fp32 initializer"
            )
        axis = WEIGHT_AXIS[node.op_type]
        quantized, scale = quantize_weight(numpy_helper.to_array(tensor), axis)
        q_name = self._constant(f"{weight_name}_quantized", quantized)
        scale_name = self._constant(f"{weight_name}_scale", scale)
        zero_name = self._constant(f"{weight_name}_zero_point", np.zeros(scale.shape, np.int8))
        output = self._fresh(f"{weight_name}_dequantized")
        cache[weight_name] = output
        node.input[1] = output
        return [
            helper.make_node(
                "DequantizeLinear",
                [q_name, scale_name, zero_name],
                [output],
                name=self._fresh(f"{weight_name}_DequantizeLinear"),
                axis=axis,
            )
        ]

    def _drop_unused_initializers(self, candidates: set[str]) -> None:
        """Remove fp32 weights that only the quantized ops read (now replaced by int8 copies)."""
        used = {name for node in self._graph.node for name in node.input}
        used |= {v.name for v in self._graph.output}
        kept = [t for t in self._graph.initializer if t.name not in candidates or t.name in used]
        del self._graph.initializer[:]
        self._graph.initializer.extend(kept)

    def _constant(self, base: str, value: np.ndarray) -> str:
        name = self._fresh(base)
        self._new_initializers.append(numpy_helper.from_array(value, name))
        return name

    def _fresh(self, base: str) -> str:
        return self._names.fresh(base)
