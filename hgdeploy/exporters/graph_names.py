"""Fresh names for graph passes that add tensors and nodes to an existing ONNX graph."""

from __future__ import annotations

import onnx

from hgdeploy.exporters.corner_pool_ops import iter_nodes


class UniqueNames:
    """Names that collide with nothing already in the graph (tensors, nodes, subgraphs)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._taken: set[str] = {info.name for info in (*graph.input, *graph.output)}
        self._taken |= {info.name for info in graph.value_info}
        self._taken |= {tensor.name for tensor in graph.initializer}
        for node in iter_nodes(graph):
            self._taken.update(node.output)
            self._taken.update(node.input)
            self._taken.add(node.name)

    def fresh(self, base: str) -> str:
        name, suffix = base, 0
        while name in self._taken:
            suffix += 1
            name = f"{base}_{suffix}"
        self._taken.add(name)
        return name
