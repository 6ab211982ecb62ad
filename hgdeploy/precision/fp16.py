"""FP32 ONNX -> FP16 ONNX with fp32 graph inputs/outputs, for strongly typed TensorRT builds.

TensorRT 11 has no FP16 builder flag: a strongly typed network runs each layer in the type its
ONNX tensors have, so the fp16 engine is built from an fp16 ONNX. The conversion is
``onnxconverter-common``'s ``convert_float_to_float16`` (Microsoft's ONNX converter library, pure
Python, no version pins on onnx/onnxruntime), with ``keep_io_types=True``: the engine keeps the
fp32 input/output bindings every runner and parity check uses, with one Cast at each boundary.

The converter types every tensor from shape inference, so the corner-pool plugin nodes (whose
registered schema allows float16 and passes the input type through) get fp16 inputs and outputs
like any other op; TensorRT then picks the plugin's fp16 format. Two adjustments:

* The converter turns *every* float constant into fp16, including inputs whose schema only
  allows float32 (Resize's ``scales``, which HRNet and the hourglass upsampling use). Those are
  restored from the original model, so nothing needs to be blocked into fp32 around Resize.
* Its default block list keeps Resize, Max, Min and Upsample in fp32 (for old ORT kernels);
  TensorRT runs them in fp16, so they are converted too. The list's other entries (TopK,
  NonMaxSuppression, ML ops, ...) stay fp32; none occurs in the zoo's networks.

Numerics (measured on Squeeze and HRNet with synthetic weights, ORT CPU): no op needs fp32.
The exporter folds BatchNorm into the preceding Conv where there is one (HRNet has no BN left;
Squeeze keeps 56 BNs after a Concat, harmless in fp16: variances are O(1)). The largest Conv
input over the sample images is 32 (Squeeze) / 252 (HRNet), far below fp16's 65504, and there
are no large reductions. Relative L2 error vs fp32 is 0.003-0.007 per output. Weights round
to nearest; only values beyond fp16's range would be clamped (to +-65504), and tiny non-zero
weights keep their sign (clamped to the smallest subnormal, 2**-24).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import TensorProto, defs

from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.onnx_files import PRECISION_KEY, set_metadata_props
from hgdeploy.exporters.corner_pool_ops import iter_nodes, register_corner_pool_schemas

FP16_MAX = 65504.0
FP16_SMALLEST_SUBNORMAL = 2.0**-24
# Ops TensorRT runs in fp16 although onnxconverter-common blocks them by default.
FP16_CAPABLE = frozenset({"Resize", "Upsample", "Max", "Min"})


def fp16_block_list() -> list[str]:
    """onnxconverter-common's default fp32-only ops, less those TensorRT runs in fp16."""
    from onnxconverter_common import float16

    return sorted(set(float16.DEFAULT_OP_BLOCK_LIST) - FP16_CAPABLE)


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An fp16 copy of ``model``: fp16 weights and activations, fp32 graph inputs/outputs.

    Raises HgDeployError if the model is already fp16 or the result fails onnx.checker.
    """
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise HgDeployError(
            "fp16 conversion needs onnxconverter-common: pip install 'onnxconverter-common>=1.16'"
        ) from None
    register_corner_pool_schemas()  # shape inference must type the plugin nodes' outputs
    with warnings.catch_warnings():
        # One warning per clamped tiny weight: expected and harmless (see the module doc).
        warnings.simplefilter("ignore", UserWarning)
        try:
            converted = float16.convert_float_to_float16(
                model,
                min_positive_val=FP16_SMALLEST_SUBNORMAL,
                max_finite_val=FP16_MAX,
                keep_io_types=True,
                op_block_list=fp16_block_list(),
            )
        except ValueError as exc:
            first = first_line(exc)
            raise HgDeployError(f"cannot convert the model to fp16: {first}") from None
    _restore_fp32_only_constants(converted, model)
    set_metadata_props(converted, {PRECISION_KEY: "fp16"})
    _check(converted)
    return converted


def _restore_fp32_only_constants(converted: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Point inputs whose schema excludes float16 at fp32 copies of the original constants."""
    originals = {t.name: t for t in original.graph.initializer}
    graph = converted.graph
    initializers = {t.name: t for t in graph.initializer}
    opsets = {op.domain or "": op.version for op in converted.opset_import}
    copies: dict[str, str] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            tensor = initializers.get(name)
            if tensor is None or tensor.data_type != TensorProto.FLOAT16:
                continue
            if _accepts_float16(node, index, opsets) or name not in originals:
                continue
            if name not in copies:
                copy = TensorProto()
                copy.CopyFrom(originals[name])
                copy.name = _fresh_name(f"{name}_fp32", initializers)
                graph.initializer.append(copy)
                initializers[copy.name] = copy
                copies[name] = copy.name
            node.input[index] = copies[name]
    if not copies:
        return
    used = {name for node in iter_nodes(graph) for name in node.input}
    used |= {v.name for v in (*graph.input, *graph.output)}
    kept = [t for t in graph.initializer if t.name not in copies or t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _accepts_float16(node: onnx.NodeProto, index: int, opsets: dict[str, int]) -> bool:
    """Whether the node's schema allows float16 at input ``index`` (unknown ops: assume yes)."""
    domain = node.domain or ""
    version = opsets.get(domain, opsets.get("ai.onnx", 1))
    try:
        schema = defs.get_schema(node.op_type, version, domain)
    except defs.SchemaError:
        return True
    if not schema.inputs:
        return True
    formal = schema.inputs[min(index, len(schema.inputs) - 1)]  # variadic: the last one
    constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    allowed = constraints.get(formal.type_str, [formal.type_str])
    return "tensor(float16)" in allowed


def _fresh_name(base: str, taken: dict[str, object]) -> str:
    name, suffix = base, 0
    while name in taken:
        suffix += 1
        name = f"{base}_{suffix}"
    return name


def _check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = first_line(exc)
        raise HgDeployError(f"the fp16 model failed onnx.checker: {first}") from None


def fp16_initializer_fraction(model: onnx.ModelProto) -> float:
    """Share of float initializer elements stored as fp16 (for reports and tests)."""
    counts = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0}
    for tensor in model.graph.initializer:
        if tensor.data_type in counts:
            counts[tensor.data_type] += int(np.prod(tensor.dims))
    total = sum(counts.values())
    return counts[TensorProto.FLOAT16] / total if total else 0.0
