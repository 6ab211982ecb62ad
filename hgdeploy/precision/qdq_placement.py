"""Where the int8 Q/DQ pairs go: the inputs TensorRT can fuse into int8 kernels.

TensorRT's explicit-quantization rules, as NVIDIA states them (TensorRT developer guide,
explicit quantization: quantize the inputs of weighted operations, not their outputs; the
TensorRT quantization toolkits: "Q/DQ nodes need to be added to residual connections") and as
NVIDIA ModelOpt's ONNX quantizer applies them (``qdq_graph.build_non_residual_input_map``):

* quantize every input of a weighted op (Conv, ConvTranspose): the activation through
  ``Q -> DQ``, the weight through ``DQ`` (see ``int8.py``);
* quantize the *residual* input of a residual Add, i.e. ``Add(conv_branch, skip)`` where
  ``conv_branch`` is a Conv (optionally followed by BatchNormalization and/or Relu), so that
  TensorRT can fuse the Add (and a following Relu) into the conv branch's int8 kernel, which then
  reads the skip tensor in int8 (the fusion NVIDIA documents; not yet observed here, since no
  TensorRT machine has been available);
* do not quantize the conv branch's input of that Add (it is the fused kernel's own output), nor
  the outputs of weighted ops in general.

When both inputs of an Add come from conv branches (a residual block whose skip is a 1x1
conv), the one on the longer path from their lowest common ancestor is the main branch TensorRT
fuses; the other is the residual. Adds of two non-conv tensors (the corner-pool sums) and Adds
with a constant are not residual Adds and stay in the unquantized precision.

Every site reads the same Q/DQ pair of its tensor, so a tensor that feeds both a Conv and a
residual Add has one scale and TensorRT sees one quantized tensor.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import onnx

WEIGHTED_OPS = ("Conv", "ConvTranspose")
# What may sit between a Conv and the Add it fuses into: BatchNormalization, then Relu.
FUSIBLE_TAIL = ("Relu", "BatchNormalization")


@dataclass(frozen=True)
class QuantizedInput:
    """One quantized input: ``node.input[index]`` reads the Q/DQ of ``tensor``."""

    node: int  # the node's position in graph.node
    index: int
    tensor: str
    reason: str  # "weighted" or "residual"


def quantized_inputs(model: onnx.ModelProto) -> list[QuantizedInput]:
    """Every activation input the int8 graph quantizes, in graph order."""
    graph = _Graph(model.graph)
    sites = []
    for position, node in enumerate(graph.nodes):
        if node.op_type in WEIGHTED_OPS:
            sites.append(QuantizedInput(position, 0, node.input[0], "weighted"))
        elif node.op_type == "Add":
            index = graph.residual_index(position)
            if index is not None:
                sites.append(QuantizedInput(position, index, node.input[index], "residual"))
    return sites


def activation_tensors(model: onnx.ModelProto) -> list[str]:
    """The tensors that need a calibrated amax, each once, in graph order.

    The lowering of corner pools keeps tensor names, so the same list holds for the plugin form
    (which TensorRT builds) and the lowered form (which ONNX Runtime calibrates).
    """
    return tensors_of(quantized_inputs(model))


def tensors_of(sites: list[QuantizedInput]) -> list[str]:
    """The distinct tensors the sites read, in order (a tensor may feed several sites)."""
    return list(dict.fromkeys(site.tensor for site in sites))


class _Graph:
    """Nodes by position, each tensor's producing node, and the constant tensors."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.producer = {out: i for i, node in enumerate(self.nodes) for out in node.output}
        self.constants = {t.name for t in graph.initializer}
        self.constants |= {out for n in self.nodes if n.op_type == "Constant" for out in n.output}

    def residual_index(self, add: int) -> int | None:
        """Which input of Add node ``add`` is the residual to quantize (None: no residual Add)."""
        inputs = self.nodes[add].input
        if len(inputs) != 2 or any(name in self.constants for name in inputs):
            return None
        sources = [self.producer.get(name) for name in inputs]
        if sources[0] is None or sources[1] is None:  # a graph input: nothing to fuse into
            return None
        convs = [self.fusible_conv(source) for source in sources]
        if convs[0] is None and convs[1] is None:
            return None
        ancestor, depths = self.lowest_common_ancestor(sources[0], sources[1])
        if convs[0] is not None and convs[1] is not None:
            if convs[0] == convs[1]:
                return None
            main = 0 if depths[0] > depths[1] else 1
            return 1 - main
        main = 0 if convs[0] is not None else 1
        if ancestor == convs[main]:
            # The conv's own output reaches the Add by both paths: no skip connection.
            return None
        return 1 - main

    def fusible_conv(self, position: int) -> int | None:
        """The Conv whose kernel can absorb this node (Conv [-> BatchNormalization] [-> Relu])."""
        for op_type in FUSIBLE_TAIL:
            if self.nodes[position].op_type == op_type:
                parent = self.producer.get(self.nodes[position].input[0])
                if parent is None:
                    return None
                position = parent
        return position if self.nodes[position].op_type in WEIGHTED_OPS else None

    def lowest_common_ancestor(self, first: int, second: int) -> tuple[int | None, tuple[int, int]]:
        """The shared ancestor (either node itself included) nearest to both, and its distances.

        Nearest = smallest sum of the two shortest-path lengths; (None, (0, 0)) if none.
        """
        first_depths = dict(self.ancestors(first))
        best: tuple[int, int, int] | None = None
        best_node = None
        for node, depth in self.ancestors(second):
            if node in first_depths:
                candidate = (first_depths[node] + depth, first_depths[node], depth)
                if best is None or candidate < best:
                    best, best_node = candidate, node
        if best is None:
            return None, (0, 0)
        return best_node, (best[1], best[2])

    def ancestors(self, start: int) -> Iterator[tuple[int, int]]:
        """Breadth-first over ``start`` and its ancestors: (position, shortest distance)."""
        seen = {start}
        queue = deque([(start, 0)])
        while queue:
            node, depth = queue.popleft()
            yield node, depth
            for name in self.nodes[node].input:
                parent = self.producer.get(name)
                if parent is not None and parent not in seen:
                    seen.add(parent)
                    queue.append((parent, depth + 1))
