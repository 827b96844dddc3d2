"""A read-only index over an ONNX graph for the compatibility rules: producers, consumers, constants,
inferred types/shapes, and the Q/DQ nodes with their scales, zero points, types and axes."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def type_name(elem_type: int | None) -> str:
    """ONNX element type -> short name (``int8``, ``uint8``, ``float8e4m3fn``, ...)."""
    import onnx

    if not elem_type:
        return "unknown"
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def label(node: "onnx.NodeProto") -> str:  # noqa: F821
    """How findings name a node: its name, else its op type and first output."""
    return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"


def iter_nodes(graph: "onnx.GraphProto") -> Iterator["onnx.NodeProto"]:  # noqa: F821
    """Every node, including those in If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g and attr.g.node:
                yield from iter_nodes(attr.g)
            for g in attr.graphs:
                yield from iter_nodes(g)


class GraphIndex:
    """Lookups over the main graph of ``model`` (shape inference is best-effort)."""

    def __init__(self, model: "onnx.ModelProto") -> None:  # noqa: F821
        import onnx

        self.model = model
        self.graph = model.graph
        self.opsets = {(o.domain if o.domain != "ai.onnx" else ""): o.version for o in model.opset_import}
        self.inits = {i.name: i for i in self.graph.initializer}
        self.constants = {n.output[0]: n for n in self.graph.node if n.op_type == "Constant" and not n.domain}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for node in self.graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for i, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((node, i))
        self.graph_outputs = {o.name for o in self.graph.output}
        self.graph_inputs = {i.name for i in self.graph.input if i.name not in self.inits}
        self._types: dict[str, tuple[int, tuple | None]] = {}
        inferred = self.graph
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
        except Exception as exc:  # noqa: BLE001 - inference is an aid, not a requirement
            log.debug("shape inference failed (%s); types come from initializers and declared values", exc)
        for vi in [*inferred.input, *inferred.value_info, *inferred.output]:
            t = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and t.elem_type:
                shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim) \
                    if t.HasField("shape") else None
                self._types[vi.name] = (t.elem_type, shape)
        for init in self.graph.initializer:
            self._types[init.name] = (init.data_type, tuple(init.dims))

    @property
    def opset(self) -> int:
        return self.opsets.get("", 0)

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant-node output, else None."""
        from onnx import numpy_helper

        if not name:
            return None
        try:
            if name in self.inits:
                return numpy_helper.to_array(self.inits[name])
            node = self.constants.get(name)
            if node is not None:
                for attr in node.attribute:
                    if attr.name == "value":
                        return numpy_helper.to_array(attr.t)
        except Exception as exc:  # noqa: BLE001 - e.g. external data not loaded
            log.debug("cannot read constant %s: %s", name, exc)
        return None

    def is_const(self, name: str) -> bool:
        return name in self.inits or name in self.constants

    def elem_type(self, name: str) -> int | None:
        return self._types.get(name, (None, None))[0]

    def shape(self, name: str) -> tuple | None:
        return self._types.get(name, (None, None))[1]


@dataclass
class QdqNode:
    """One QuantizeLinear or DequantizeLinear node, with what the rules need to know about it."""

    node: "onnx.NodeProto"  # noqa: F821
    x: str
    scale: np.ndarray | None  # None when the scale is not a constant
    zero_point: np.ndarray | None  # None when absent or not constant
    zero_point_name: str  # "" when absent
    qtype: str  # quantized element type name, e.g. "int8"
    axis: int
    block_size: int
    x_const: bool  # the input is a constant (DQ: quantized weights; Q: float weights)

    @property
    def is_q(self) -> bool:
        return self.node.op_type == "QuantizeLinear"

    @property
    def per_channel(self) -> bool:
        return self.scale is not None and self.scale.size > 1

    @property
    def name(self) -> str:
        return label(self.node)


def _attr(node: "onnx.NodeProto", name: str, default: int) -> int:  # noqa: F821
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def qdq_nodes(index: GraphIndex) -> list[QdqNode]:
    """Every Q/DQ node of the main graph."""
    out = []
    for node in index.graph.node:
        if node.op_type not in QDQ_OPS or node.domain not in ("", "ai.onnx"):
            continue
        x = node.input[0]
        scale_name = node.input[1] if len(node.input) > 1 else ""
        zp_name = node.input[2] if len(node.input) > 2 else ""
        if node.op_type == "QuantizeLinear":
            qtype = index.elem_type(zp_name) if zp_name else (_attr(node, "output_dtype", 0) or None)
            qtype = qtype or 2  # ONNX: no zero point and no output_dtype means uint8
        else:
            qtype = index.elem_type(x) or (index.elem_type(zp_name) if zp_name else None)
        out.append(QdqNode(
            node=node,
            x=x,
            scale=index.const(scale_name),
            zero_point=index.const(zp_name) if zp_name else None,
            zero_point_name=zp_name,
            qtype=type_name(qtype),
            axis=_attr(node, "axis", 1),
            block_size=_attr(node, "block_size", 0),
            x_const=index.is_const(x),
        ))
    return out
