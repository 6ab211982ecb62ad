"""The ONNX contract of the corner-pool plugin ops, shared by the exporter, passes and plugins.

A corner pool is exported as one node ``<DOMAIN>::<op_type>`` with op_type one of the
``DIRECTIONS`` keys (TopPool, BottomPool, LeftPool, RightPool), one input ``X`` (NCHW), one output
``Y`` of the same type and shape, and the string attributes ``plugin_version`` and
``plugin_namespace``. TensorRT's ONNX parser ignores the node's domain and picks the plugin
registered as ``<plugin_namespace>::<op_type>`` with version ``plugin_version``; so the constants
below are the single source of truth for the TensorRT plugin registration as well.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import onnx
import torch
from onnx import defs, helper

from hgdeploy.models.corner_pool import DIRECTIONS, torch_op

DOMAIN = "hgdeploy"
DOMAIN_VERSION = 1  # the opset version of DOMAIN that models import
PLUGIN_NAMESPACE = "hgdeploy"
PLUGIN_VERSION = "1"
# INT attribute read by TensorRT's ONNX parser for `tensorrt.plugin` plugins that define both
# implementations: 1 = the AOT kernel (PTX embedded in the engine, runs without Python),
# 0 = the JIT implementation (needs Python, torch and triton at run time).
AOT_ATTRIBUTE = "aot"
OP_TYPES: tuple[str, ...] = tuple(DIRECTIONS)
FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(bfloat16)")


def _same_type_as_input(ctx: onnx.shape_inference.InferenceContext) -> None:
    """Y has X's type and shape, so shape inference can see through chained pools."""
    ctx.set_output_type(0, ctx.get_input_type(0))


def _schema(op_type: str) -> defs.OpSchema:
    direction = DIRECTIONS[op_type]
    scan = "j >= i" if direction.reverse else "j <= i"
    schema = defs.OpSchema(
        op_type,
        DOMAIN,
        DOMAIN_VERSION,
        doc=f"Corner pool: Y[..., i, ...] = max(X[..., j, ...] for {scan}) along axis "
        f"{direction.axis} of an NCHW tensor. Runs as the TensorRT plugin named by the "
        "plugin_namespace and plugin_version attributes.",
        inputs=[defs.OpSchema.FormalParameter("X", "T", "NCHW input")],
        outputs=[defs.OpSchema.FormalParameter("Y", "T", "same type and shape as X")],
        type_constraints=[("T", list(FLOAT_TYPES), "floating-point tensors")],
        attributes=[
            # Required: TensorRT defaults a missing namespace to "", which finds no plugin.
            defs.OpSchema.Attribute(
                "plugin_version", defs.OpSchema.AttrType.STRING, "TensorRT plugin version"
            ),
            defs.OpSchema.Attribute(
                "plugin_namespace", defs.OpSchema.AttrType.STRING, "TensorRT plugin namespace"
            ),
            defs.OpSchema.Attribute(
                AOT_ATTRIBUTE,
                defs.OpSchema.AttrType.INT,
                "1: TensorRT runs the AOT (PTX) kernel, 0: the JIT (Python) one",
                required=False,
            ),
        ],
    )
    schema.set_type_and_shape_inference_function(_same_type_as_input)
    return schema


def register_corner_pool_schemas() -> None:
    """Register the four op schemas in DOMAIN (idempotent).

    The dynamo exporter refuses to emit an op without a schema, and the checker and shape
    inference need it to accept plugin-form models.
    """
    for op_type in OP_TYPES:
        if not defs.has(op_type, DOMAIN):
            defs.register_schema(_schema(op_type))


def _translation(op_type: str) -> Callable[[Any], Any]:
    import onnxscript  # only the exporter needs onnxscript

    opset = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)

    def translate(x: Any) -> Any:
        return getattr(opset, op_type)(
            x, plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE, aot=1
        )

    translate.__name__ = f"{op_type}_to_onnx"
    return translate


def custom_translation_table() -> dict[torch._ops.OpOverload, Callable[[Any], Any]]:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``: one node per pool.

    Registers the schemas first, since the translation looks the op up at export time.
    """
    register_corner_pool_schemas()
    return {torch_op(op_type): _translation(op_type) for op_type in OP_TYPES}


def corner_pool_opset_import() -> onnx.OperatorSetIdProto:
    """The opset import a model with corner-pool nodes needs, for building models by hand."""
    return helper.make_opsetid(DOMAIN, DOMAIN_VERSION)


def make_corner_pool_node(
    direction_name: str,
    input: str,
    output: str,
    name: str | None = None,
    *,
    domain: str = DOMAIN,
    aot: bool = True,
) -> onnx.NodeProto:
    """One plugin-form corner-pool node, as the exporter emits it (AOT unless `aot=False`)."""
    if direction_name not in DIRECTIONS:
        raise ValueError(f"unknown corner pool {direction_name!r}; expected one of {OP_TYPES}")
    return helper.make_node(
        direction_name,
        [input],
        [output],
        name=name,
        domain=domain,
        plugin_version=PLUGIN_VERSION,
        plugin_namespace=PLUGIN_NAMESPACE,
        **{AOT_ATTRIBUTE: int(aot)},
    )


def is_corner_pool_node(node: onnx.NodeProto) -> bool:
    """True for a corner-pool node in any domain (TensorRT ignores the domain too)."""
    return node.op_type in DIRECTIONS


def _walk(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.NodeProto]:
    for node in nodes:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attribute.g.node)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _walk(subgraph.node)


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of a graph, including those in subgraphs (If/Loop/Scan bodies)."""
    return _walk(graph.node)


def iter_model_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node of a model: its graph, their subgraphs and the model's local functions."""
    yield from _walk(model.graph.node)
    for function in model.functions:
        yield from _walk(function.node)


def count_corner_pool_nodes(model: onnx.ModelProto) -> dict[str, int]:
    """Corner-pool nodes per op_type (every op_type present, zeros included), any domain."""
    counts = Counter(node.op_type for node in iter_model_nodes(model) if is_corner_pool_node(node))
    return {op_type: counts[op_type] for op_type in OP_TYPES}
