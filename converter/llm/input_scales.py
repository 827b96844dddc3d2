"""Divide quantized MatMuls' input by their AWQ scale s in the ONNX graph: folded into the norm, else a Mul.

AWQ (converter.llm.awq) quantizes W·diag(s), so the layer must read x / s. Where the torch model folded
1/s into a norm, the exported graph has that norm's weight as the constant of a ``Mul`` producing x;
when every reader of x is one of the layers scaled by the same s, the constant is divided by s (the
graph keeps its shape and cost). Otherwise an explicit ``Mul(x, 1/s)`` is put in front of those layers.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

log = logging.getLogger(__name__)


def _norm_constant(x: ir.Value, k: int) -> ir.Value | None:
    """The constant [K] operand of the Mul producing ``x`` (a norm's weight), if it is one."""
    producer = x.producer()
    if producer is None or producer.op_type != "Mul" or producer.domain not in ("", "ai.onnx"):
        return None
    for value in producer.inputs:
        tensor = value.const_value if value is not None else None
        if tensor is not None and tensor.dtype == ir.DataType.FLOAT and tuple(tensor.shape)[-1:] == (k,) \
                and int(np.prod(tensor.shape)) == k:
            return value
    return None


def apply_input_scales(graph: ir.Graph, scaled: Iterable[tuple[ir.Node, np.ndarray]]) -> tuple[int, int]:
    """For each (new node reading x as input 0, s [K]): make it read x / s. Returns (folded, inserted Muls)."""
    by_input: dict[int, tuple[ir.Value, np.ndarray, list[ir.Node]]] = {}
    for node, s in scaled:
        x = node.inputs[0]
        entry = by_input.setdefault(id(x), (x, s, []))
        if not np.array_equal(entry[1], s):
            raise ValueError(f"MatMuls reading {x.name} were given different AWQ scales")
        entry[2].append(node)
    folded = inserted = 0
    for x, s, nodes in by_input.values():
        readers = {id(use.node) for use in x.uses()}
        const = _norm_constant(x, s.size)
        if const is not None and readers == {id(n) for n in nodes} and len(const.uses()) == 1 \
                and not const.is_graph_output():
            tensor = const.const_value
            const.const_value = ir.tensor((tensor.numpy() / s.reshape(tensor.shape)).astype(np.float32),
                                          name=tensor.name)
            folded += 1
            continue
        inv = ir.Value(name=f"{x.name}_awq_inv_scale", const_value=ir.tensor((1.0 / s).astype(np.float32)))
        inv.shape, inv.type = ir.Shape([s.size]), ir.TensorType(ir.DataType.FLOAT)
        graph.register_initializer(inv)
        mul = ir.node("Mul", [x, inv], name=f"{x.name}_awq_scale")
        mul.outputs[0].name = f"{x.name}_awq_scaled"
        mul.outputs[0].type, mul.outputs[0].shape = x.type, x.shape
        producer = x.producer()  # right after x is made: before every reader, without searching for them
        if producer is not None:
            graph.insert_after(producer, mul)
        else:
            graph.insert_before(next(iter(graph)), mul)
        for node in nodes:
            node.replace_input_with(0, mul.outputs[0])
        inserted += 1
    if folded or inserted:
        log.info("AWQ input scales: %d folded into norm weights, %d as Mul nodes", folded, inserted)
    return folded, inserted
