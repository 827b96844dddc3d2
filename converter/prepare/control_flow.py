"""If/Loop/Scan subgraphs (tf2onnx guards, exported while-loops): qdq quantizes the main graph and leaves
their bodies float; this module says which nodes that leaves, and stops when only subgraphs hold weights."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import onnx_ir as ir

from converter.quant.errors import QuantizationError

log = logging.getLogger(__name__)

WEIGHTED = ("Conv", "MatMul", "Gemm", "ConvTranspose")


@dataclass(frozen=True)
class ControlFlowNode:
    """A main-graph node with subgraphs: how many nodes its bodies hold, and how many of them are weighted."""

    name: str
    op_type: str
    inner: int
    weighted: int

    def describe(self) -> str:
        return f"{self.op_type} {self.name!r}"


def _subgraph_nodes(node: ir.Node) -> Iterator[ir.Node]:
    for attr in node.attributes.values():
        graphs = [attr.as_graph()] if attr.type == ir.AttributeType.GRAPH else (
            list(attr.as_graphs()) if attr.type == ir.AttributeType.GRAPHS else [])
        for graph in graphs:
            for inner in graph:
                yield inner
                yield from _subgraph_nodes(inner)


def control_flow_nodes(model: ir.Model) -> list[ControlFlowNode]:
    """The main graph's nodes that carry subgraphs (If, Loop, Scan, ...)."""
    found = []
    for node in model.graph:
        inner = list(_subgraph_nodes(node))
        if inner:
            weighted = sum(1 for n in inner if n.op_type in WEIGHTED and n.domain == "")
            found.append(ControlFlowNode(node.name or node.outputs[0].name, node.op_type, len(inner), weighted))
    return found


def report_subgraphs(model: ir.Model, main_graph_quantizable: bool) -> list[ControlFlowNode]:
    """Log one line naming the control-flow nodes whose bodies stay float; raise ``QuantizationError`` when
    nothing in the main graph can be quantized but subgraphs hold weighted ops."""
    nodes = control_flow_nodes(model)
    if not nodes:
        return nodes
    weighted = [n for n in nodes if n.weighted]
    if not main_graph_quantizable and weighted:
        first = weighted[0]
        raise QuantizationError(
            f"the weighted ops live only inside subgraphs ({first.describe()} holds {first.weighted} "
            f"{'/'.join(WEIGHTED[:3])}); qdq quantizes the main graph: re-export without control flow "
            f"(trace with fixed inputs, or fold the {first.op_type} with onnxsim/onnx-ir constant folding)")
    shown = ", ".join(f"{n.describe()} ({n.inner} nodes{f', {n.weighted} weighted' if n.weighted else ''})"
                      for n in nodes[:4])
    log.warning("left float: the subgraphs of %d control-flow node(s): %s%s (qdq quantizes the main graph only)",
                len(nodes), shown, " ..." if len(nodes) > 4 else "")
    return nodes
