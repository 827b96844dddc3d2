"""Producer / consumer / constant / shape look-ups over one ``onnx.GraphProto``, for the attention matcher."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


class Graph:
    """Look-ups over ``graph`` as it was when built (the matcher reads; the fuser edits afterwards)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.init = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}
        self.shapes = {v.name: v.type.tensor_type for v in [*graph.value_info, *graph.input, *graph.output]
                       if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}

    def const(self, name: str) -> np.ndarray | None:
        if name in self.init:
            return numpy_helper.to_array(self.init[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Identity":  # the legacy exporter's shared initializers
            return self.const(node.input[0])
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def scalar(self, name: str) -> float | None:
        value = self.const(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        """The one node that reads ``name`` besides Shape nodes (exporters read shapes to build the next
        Reshape's target; once the chain is fused they are dead and pruned with it)."""
        users = [u for u in self.consumers.get(name, []) if u.op_type != "Shape"]
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def make(self, name: str) -> onnx.NodeProto | None:
        return self.producer.get(name)

    def dims(self, name: str) -> list[int | None] | None:
        """The shape the exporter recorded for ``name`` (None per symbolic dim), or None when it recorded none."""
        t = self.shapes.get(name)
        if t is None:
            return None
        return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def perm(node: onnx.NodeProto) -> list[int] | None:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return None


def strip_scale(g: Graph, name: str) -> tuple[str, float]:
    """Follow Mul/Div by a scalar constant back from ``name``; the tensor before them and their product."""
    scale = 1.0
    while (node := g.make(name)) is not None and node.op_type in ("Mul", "Div"):
        a, b = node.input
        if (s := g.scalar(b)) is not None:
            scale, name = scale * (s if node.op_type == "Mul" else 1.0 / s), a
        elif node.op_type == "Mul" and (s := g.scalar(a)) is not None:
            scale, name = scale * s, b
        else:
            break
    return name, scale


def exclusive(g: Graph, start: str, end: str, limit: int = 8) -> bool:
    """Every tensor on the single-input chain from ``start`` to ``end`` (both included) has one reader (Shape
    nodes aside): fusing the chain away leaves nothing of it computed for someone else."""
    name = end
    for _ in range(limit):
        if name != end and g.only_consumer(name) is None:
            return False
        if name == start:
            return True
        node = g.make(name)
        if node is None:
            return False
        data = [i for i in node.input[:1 if node.op_type in ("Reshape", "Transpose") else 2] if g.const(i) is None]
        if len(data) != 1:
            return False
        name = data[0]
    return False
