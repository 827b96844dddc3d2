"""Preprocessing: remove the NaN guard that exporters put after attention Softmax.

``torch.onnx`` (dynamo) exports scaled-dot-product attention as
``Where(IsNaN(Softmax(s)), 0, Softmax(s))``. The guard only fires when a Softmax row is NaN,
which needs a non-finite input row (all ``-inf`` keys). On ONNX Runtime CPU the two elementwise
ops over every attention probability cost ~10% of a MiniLM forward pass. The pass removes the
guard only when no ``-inf`` constant reaches the Softmax input within a few ops, so for finite
inputs the function is unchanged (the mask already uses the finite ``float32`` minimum).
"""
from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from ._utils import const_array

log = logging.getLogger(__name__)

_SEARCH_DEPTH = 8


def _has_neg_inf_upstream(value: ir.Value, depth: int = _SEARCH_DEPTH) -> bool:
    """True if a constant containing -inf feeds ``value`` within ``depth`` producer hops."""
    stack = [(value, 0)]
    seen: set[int] = set()
    while stack:
        v, d = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        arr = const_array(v)
        if arr is not None:
            if arr.dtype.kind == "f" and np.isneginf(arr).any():
                return True
            continue
        producer = v.producer()
        if producer is None or d >= depth:
            continue
        stack.extend((i, d + 1) for i in producer.inputs if i is not None)
    return False


def _match_guard(where: ir.Node) -> ir.Value | None:
    """For ``Where(IsNaN(x), 0, x)`` with x from Softmax, return x."""
    if where.op_type != "Where" or where.domain != "" or len(where.inputs) != 3:
        return None
    cond, zero, x = where.inputs
    if cond is None or x is None or zero is None:
        return None
    isnan = cond.producer()
    if isnan is None or isnan.op_type != "IsNaN" or isnan.inputs[0] is not x:
        return None
    z = const_array(zero)
    if z is None or z.size != 1 or float(z.reshape(-1)[0]) != 0.0:
        return None
    softmax = x.producer()
    if softmax is None or softmax.op_type != "Softmax":
        return None
    if _has_neg_inf_upstream(softmax.inputs[0]):
        return None
    return x


class StripNanGuardsPass(InPlacePass):
    """Replace ``Where(IsNaN(Softmax(s)), 0, Softmax(s))`` with ``Softmax(s)`` (exact for finite s)."""

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        removed = []
        for node in list(graph):
            x = _match_guard(node)
            if x is None:
                continue
            out = node.outputs[0]
            if out.is_graph_output():
                continue
            out.replace_all_uses_with(x)
            isnan = node.inputs[0].producer()
            graph.remove(node, safe=True)
            if isnan is not None and not isnan.outputs[0].uses():
                graph.remove(isnan, safe=True)
            removed.append(node.name)
        if removed:
            log.info("removed %d Softmax NaN guards", len(removed))
        return PassResult(model, modified=bool(removed))
