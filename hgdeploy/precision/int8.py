"""Explicit INT8 quantization: QuantizeLinear/DequantizeLinear pairs TensorRT builds from.

TensorRT 11 builds strongly typed networks only, so INT8 is not a builder flag any more: the
ONNX itself says which tensors are int8 and which type every other layer runs in. This pass
writes the explicit-quantization pattern TensorRT's ONNX parser fuses into int8 kernels:

* the activations ``qdq_placement`` picks (every Conv/ConvTranspose data input and the residual
  input of residual Adds) go through ``Q(x) -> DQ``, per tensor, symmetric (zero point 0,
  scale = amax / 127, amax from calibration); all consumers of a tensor share its pair;
* every Conv/ConvTranspose weight is stored as an int8 initializer behind one ``DQ`` with
  per-output-channel scales (axis 0 for Conv ``[Cout, Cin/g, kh, kw]``, axis 1 for
  ConvTranspose ``[Cin, Cout/g, kh, kw]``), zero points 0;
* biases stay in the high-precision type (TensorRT folds them into the int8 kernel's epilogue);
* everything else, the corner-pool plugin nodes included, runs in the *high-precision* type:
  fp16 by default (what NVIDIA ModelOpt's ``high_precision_dtype`` defaults to), or fp32. In a
  strongly typed network this is what decides the type of every unquantized layer and of the
  int8 kernels' outputs: with fp32, each Conv writes fp32 and the Adds, Resizes and corner
  pools run in fp32 on tensors twice the size.

For fp16 the Q/DQ model is made in fp32 and then converted by ``fp16.convert_fp16`` (fp32 graph
inputs/outputs kept); Q/DQ scales become fp16 (opset >= 19 allows that), so each scale is
rounded to an fp16 value *before* the weights are quantized with it, and floored at fp16's
smallest normal number: the int8 values and the scales TensorRT reads are exactly those the
rounding used, and the conversion changes no scale.

Why insert the nodes here rather than run ``onnxruntime.quantization.quantize_static``: the
ORT quantizer has to run the model it quantizes to calibrate it, and ONNX Runtime cannot run
the plugin nodes; it also quantizes biases to int32 and other ops (Concat, pools, ...) unless
told otherwise, and its node naming and placement change between releases. Inserting the
pattern directly depends only on ``onnx``, keeps the plugin-form graph otherwise unchanged, and
is a pure function of (model, amax, high precision): the same calibration cache always gives
the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.onnx_files import PRECISION_KEY, set_metadata_props
from hgdeploy.base.precisions import INT8_HIGH_PRECISIONS
from hgdeploy.exporters.graph_names import UniqueNames
from hgdeploy.precision.fp16 import convert_fp16
from hgdeploy.precision.qdq_placement import (
    WEIGHTED_OPS,
    QuantizedInput,
    quantized_inputs,
    tensors_of,
)

# The output-channel axis of each op's weight: per-channel scales run along it.
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}
INT8_MAX = 127
HIGH_PRECISIONS = INT8_HIGH_PRECISIONS
DEFAULT_HIGH_PRECISION = HIGH_PRECISIONS[0]
# Per-axis Q/DQ (the `axis` attribute) exist from opset 13 on; fp16 scales from opset 19.
MIN_OPSET = {"fp32": 13, "fp16": 19}
# The smallest scale: a zero amax (an all-zero weight channel or a dead activation) would give
# scale 0, which TensorRT rejects and which divides by zero; such a tensor quantizes to zeros at
# any scale. For fp16 scales, fp16's smallest normal number (2**-14): no subnormal scales.
MIN_SCALE = {"fp32": np.float32(1e-6 / INT8_MAX), "fp16": np.float32(2.0**-14)}
QUANTIZATION_KEY = "hgdeploy.quantization"
HIGH_PRECISION_KEY = "hgdeploy.high_precision"


def check_high_precision(precision: str, high_precision: str | None) -> str:
    """The unquantized layers' type for a `precision` build (default fp16), or a one-line
    refusal: only int8 graphs have one, and only the listed types."""
    if precision != "int8" and high_precision is not None:
        raise HgDeployError("--high-precision only applies to --int8")
    high_precision = high_precision or DEFAULT_HIGH_PRECISION
    if high_precision not in HIGH_PRECISIONS:
        raise HgDeployError(f"--high-precision must be one of {', '.join(HIGH_PRECISIONS)}")
    return high_precision


def scheme(high_precision: str) -> str:
    """One line describing the quantization, for metadata and sidecars."""
    return (
        "int8 explicit Q/DQ, symmetric (zero point 0, scale = amax/127): Conv/ConvTranspose "
        "weights per output channel; Conv/ConvTranspose inputs and residual Add inputs per "
        f"tensor; biases and all other ops {high_precision}"
    )


def layer_names(model: onnx.ModelProto) -> list[str]:
    """The quantizable layers (nodes with a quantized input: convolutions, residual Adds) by
    node name, in graph order: what `keep` names (a nameless node is `#<position>`)."""
    nodes = model.graph.node
    positions = dict.fromkeys(site.node for site in quantized_inputs(model))
    return [_layer_name(nodes[position], position) for position in positions]


def _layer_name(node: onnx.NodeProto, position: int) -> str:
    return node.name or f"#{position}"


def quantize_int8(
    plugin_model: onnx.ModelProto,
    amax: Mapping[str, float],
    high_precision: str = DEFAULT_HIGH_PRECISION,
    keep: Collection[str] = (),
) -> onnx.ModelProto:
    """A copy of ``plugin_model`` with explicit int8 Q/DQ (see the module doc).

    ``amax`` maps activation tensor names (see ``activation_tensors``) to their calibrated
    absolute maximum; ``high_precision`` is the type of everything not quantized; the layers
    named in ``keep`` (see ``layer_names``) are left in it too: no Q/DQ on their inputs, float
    weights (ModelOpt's nodes_to_exclude). Raises HgDeployError when ``amax`` lacks a tensor or
    holds a non-finite value, when a weight is not a constant initializer, when ``keep`` names
    no quantizable layer, or when the opset is too old.
    """
    if high_precision not in HIGH_PRECISIONS:
        raise HgDeployError(
            f"high precision must be one of {', '.join(HIGH_PRECISIONS)}, got {high_precision!r}"
        )
    _require_opset(plugin_model, high_precision)
    unknown = set(keep) - set(layer_names(plugin_model))
    if unknown:
        raise HgDeployError(f"no quantizable layer named {min(unknown)!r} in the model")
    nodes = plugin_model.graph.node
    kept = {p for p, node in enumerate(nodes) if _layer_name(node, p) in set(keep)}
    sites = [site for site in quantized_inputs(plugin_model) if site.node not in kept]
    needed = tensors_of(sites)
    _check_amax(needed, amax, high_precision)
    model = onnx.ModelProto()
    model.CopyFrom(plugin_model)
    _Quantizer(model, high_precision).run(
        sites, {name: float(amax[name]) for name in needed}, skip_weights=kept
    )
    if high_precision == "fp16":
        model = convert_fp16(model)
    set_metadata_props(
        model,
        {
            PRECISION_KEY: "int8",
            HIGH_PRECISION_KEY: high_precision,
            QUANTIZATION_KEY: scheme(high_precision),
        },
    )
    return model


def symmetric_scale(amax: float | np.ndarray, high_precision: str = "fp32") -> np.ndarray:
    """float32 scale(s) for symmetric int8: amax / 127, floored at MIN_SCALE.

    For fp16 the scale is rounded to the nearest fp16 value, so the fp16 conversion of the
    model keeps it exactly.
    """
    scale = np.float32(amax) / np.float32(INT8_MAX)
    scale = np.maximum(scale, MIN_SCALE[high_precision]).astype(np.float32)
    if high_precision == "fp16":
        scale = scale.astype(np.float16).astype(np.float32)
    return scale


def quantize_weight(
    weight: np.ndarray, axis: int, high_precision: str = "fp32"
) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 per-channel scales) along ``axis``, as QuantizeLinear would round."""
    reduce_axes = tuple(i for i in range(weight.ndim) if i != axis)
    amax = np.abs(weight).max(axis=reduce_axes)
    scale = symmetric_scale(amax, high_precision)
    shape = [1] * weight.ndim
    shape[axis] = -1
    quantized = np.rint(weight.astype(np.float32) / scale.reshape(shape))
    return np.clip(quantized, -INT8_MAX - 1, INT8_MAX).astype(np.int8), scale


def _require_opset(model: onnx.ModelProto, high_precision: str) -> None:
    versions = [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")]
    needed = MIN_OPSET[high_precision]
    if versions and versions[0] < needed:
        raise HgDeployError(
            f"int8 Q/DQ with {high_precision} layers needs ONNX opset >= {needed}, the model has "
            f"{versions[0]}; export with a newer --opset"
        )


def _check_amax(
    needed: Iterable[str], amax: Mapping[str, float], high_precision: str = "fp32"
) -> None:
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
    # A range whose scale the layers' type cannot hold would become an inf scale in the graph.
    limit = float(np.finfo(np.float16 if high_precision == "fp16" else np.float32).max) * INT8_MAX
    huge = [name for name in needed if float(amax[name]) >= limit]
    if huge:
        raise HgDeployError(
            f"calibration amax of {huge[0]!r} ({amax[huge[0]]:g}) gives a scale {high_precision} "
            "cannot hold; the calibration cache is corrupt or from a broken model"
        )


class _Quantizer:
    """Rewrites one graph in place: Q/DQ after each calibrated tensor, DQ on int8 weights."""

    def __init__(self, model: onnx.ModelProto, high_precision: str) -> None:
        self._high_precision = high_precision
        self._graph = model.graph
        self._initializers = {t.name: t for t in self._graph.initializer}
        self._names = UniqueNames(self._graph)
        self._new_initializers: list[TensorProto] = []

    def run(
        self, sites: list[QuantizedInput], amax: dict[str, float], skip_weights: set[int]
    ) -> None:
        graph = self._graph
        rewired: dict[int, list[QuantizedInput]] = {}
        for site in sites:
            rewired.setdefault(site.node, []).append(site)
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
        for position, node in enumerate(graph.node):
            if node.op_type in WEIGHTED_OPS and position not in skip_weights:
                nodes.extend(self._weight_dq(node, weight_cache))
            for site in rewired.get(position, ()):
                node.input[site.index] = dequantized[site.tensor]
            nodes.append(node)
            for output in node.output:
                if output in pairs:
                    nodes.extend(pairs[output])
        del graph.node[:]
        graph.node.extend(nodes)
        self._drop_unused_initializers(set(weight_cache))
        graph.initializer.extend(self._new_initializers)

    def _activation_pair(self, name: str, amax: float, output: str) -> list[onnx.NodeProto]:
        value = symmetric_scale(amax, self._high_precision).reshape(())
        scale = self._constant(f"{name}_scale", value)
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
        quantized, scale = quantize_weight(
            numpy_helper.to_array(tensor), axis, self._high_precision
        )
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
