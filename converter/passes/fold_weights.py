"""Preprocessing: fold ``Transpose(weight)`` feeding a MatMul/Gemm into a transposed initializer.

Exporters leave ``MatMul(x, Transpose(W))`` where a weight is shared between layers (ALBERT shares one set
of layer weights across all its layers: torch's constant folding keeps the one initializer and transposes
it at run time). A MatMul whose weight is computed is not a weighted op to placement, so it stayed float:
ALBERT ran all its projections and FFNs in float (1.06x FP32 at batch 8 vs 2.7-3x for BERT-likes). Folding
gives each use its own constant (exact: a transpose), which placement quantizes like any weight; in INT8
the copies together are still smaller than the one float original while there are fewer than four uses.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from ._utils import const_tensor, unique_name, used_names

log = logging.getLogger(__name__)

_WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1}


def _feeds_weight_only(value: ir.Value) -> bool:
    """True when every use of ``value`` is the weight input of a MatMul/Gemm."""
    uses = list(value.uses())
    return bool(uses) and all(_WEIGHT_INPUT.get(u.node.op_type) == u.idx and u.node.domain == "" for u in uses)


class FoldWeightTransposePass(InPlacePass):
    """Replace ``Transpose(initializer)`` that only feeds MatMul/Gemm weights with a transposed initializer."""

    def call(self, model: ir.Model) -> PassResult:
        graph, taken = model.graph, None
        folded = 0
        for node in list(graph):
            if node.op_type != "Transpose" or node.domain != "" or not node.inputs or node.inputs[0] is None:
                continue
            src, out = node.inputs[0], node.outputs[0]
            tensor = const_tensor(src)
            if tensor is None or src.is_graph_input() or out.is_graph_output() or not _feeds_weight_only(out):
                continue
            perm = node.attributes.get("perm")
            array = tensor.numpy()
            array = np.ascontiguousarray(np.transpose(array, perm.as_ints() if perm is not None else None))
            taken = taken if taken is not None else used_names(graph)
            name = unique_name(graph, f"{src.name}_transposed", taken)
            value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(src.dtype),
                             const_value=ir.tensor(array, name=name))
            graph.register_initializer(value)
            out.replace_all_uses_with(value)
            graph.remove(node, safe=True)
            folded += 1
        if folded:
            log.info("folded %d transposed weight(s) into initializers", folded)
        return PassResult(model, modified=bool(folded))
