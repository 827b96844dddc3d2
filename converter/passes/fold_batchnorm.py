"""Preprocessing: fold ``BatchNormalization`` that follows a ``Conv`` into the Conv's weight and bias.

paddle2onnx and tf2onnx leave inference-mode BN unfolded. ONNX Runtime folds it in float at load time, but
after Q/DQ insertion the Conv's output goes through a float BN before the next Q/DQ, so the INT8 Conv
cannot fuse with its activation and a float op runs per layer. Folding first is exact up to float rounding:
``w' = w * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)`` per output channel.
The folded Conv writes the BN's output name, so calibration tables keep their tensor names.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from ._utils import add_initializer, const_array, used_names

log = logging.getLogger(__name__)


def _bn_params(bn: ir.Node) -> tuple[np.ndarray, ...] | None:
    """(gamma, beta, mean, var) of an inference-mode BatchNormalization with constant parameters."""
    if len(bn.inputs) != 5 or len([o for o in bn.outputs if o is not None and (o.uses() or o.is_graph_output())]) != 1:
        return None
    training = bn.attributes.get("training_mode")
    if training is not None and training.as_int():
        return None
    params = [const_array(v) for v in bn.inputs[1:]]
    if any(p is None or p.ndim != 1 for p in params):
        return None
    return tuple(p.astype(np.float64) for p in params)  # type: ignore[union-attr]


class FoldBatchNormPass(InPlacePass):
    """Fold ``Conv -> BatchNormalization`` (constant weights, the Conv output used only by the BN)."""

    def call(self, model: ir.Model) -> PassResult:
        graph, taken, folded = model.graph, None, 0
        for bn in list(graph):
            if bn.op_type != "BatchNormalization" or bn.domain != "" or bn.inputs[0] is None:
                continue
            conv = bn.inputs[0].producer()
            if conv is None or conv.op_type != "Conv" or conv.domain != "" or conv.graph is not graph:
                continue
            conv_out = conv.outputs[0]
            if len(list(conv_out.uses())) != 1 or conv_out.is_graph_output():
                continue
            params = _bn_params(bn)
            weight = const_array(conv.inputs[1]) if len(conv.inputs) > 1 else None
            if params is None or weight is None or weight.dtype != np.float32:
                continue
            gamma, beta, mean, var = params
            if gamma.shape[0] != weight.shape[0]:
                continue
            eps = bn.attributes.get("epsilon")
            scale = gamma / np.sqrt(var + (eps.as_float() if eps is not None else 1e-5))
            bias = const_array(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
            if len(conv.inputs) > 2 and conv.inputs[2] is not None and bias is None:
                continue  # a computed bias
            bias = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
            new_w = (weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32)
            new_b = ((bias - mean) * scale + beta).astype(np.float32)
            taken = taken if taken is not None else used_names(graph)
            base = conv.name or conv_out.name
            w_val = add_initializer(graph, f"{base}.bn_folded.weight", new_w, taken)
            b_val = add_initializer(graph, f"{base}.bn_folded.bias", new_b, taken)
            conv.replace_input_with(1, w_val)
            if len(conv.inputs) < 3:
                conv.resize_inputs(3)
            conv.replace_input_with(2, b_val)
            bn_out = bn.outputs[0]
            name, shape, dtype = bn_out.name, bn_out.shape, bn_out.type
            bn_out.replace_all_uses_with(conv_out, replace_graph_outputs=True)
            graph.remove(bn, safe=True)
            conv_out.name, conv_out.shape, conv_out.type = name, shape, dtype
            folded += 1
        if folded:
            log.info("folded %d BatchNormalization(s) into the preceding Conv", folded)
        return PassResult(model, modified=bool(folded))
