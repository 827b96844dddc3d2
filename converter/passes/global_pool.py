"""Preprocessing: ``ReduceMean`` over the spatial axes of a 4-D feature map, kept dims, as ``GlobalAveragePool``.

torch's dynamo exporter writes ``adaptive_avg_pool2d(x, 1)`` and ``x.mean((2, 3), keepdim=True)`` (the
squeeze-and-excitation pools of MobileNetV3 / EfficientNet, classifier heads) as ``ReduceMean``, which ONNX
Runtime has no QDQ fusion for: the full feature map is dequantized and averaged in float. The same
values as ``GlobalAveragePool`` run as ``QLinearGlobalAveragePool`` between quantized layers (MobileNetV3
of ``tools/zoo.py``: 1.48x -> 1.62x FP32 at batch 8 in one run on a loaded machine). For profiles with
``reduce_mean_as_pool`` (ort-cpu).
"""
from __future__ import annotations

import logging

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from ._utils import const_array, is_float32

log = logging.getLogger(__name__)


def _spatial_mean(node: ir.Node) -> bool:
    """``ReduceMean(x, axes=[2, 3] or [-2, -1], keepdims=1)`` on a 4-D float ``x``."""
    if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx") or not node.inputs:
        return False
    x = node.inputs[0]
    if not is_float32(x) or x.shape is None or len(x.shape) != 4 or not node.attributes.get_int("keepdims", 1):
        return False
    if node.attributes.get_int("noop_with_empty_axes", 0):
        return False
    if len(node.inputs) > 1 and node.inputs[1] is not None:  # opset 18+: axes as an input
        axes = const_array(node.inputs[1])
        axes = None if axes is None else axes.reshape(-1).tolist()
    else:
        axes = node.attributes.get_ints("axes", None)
        axes = None if axes is None else list(axes)
    return axes is not None and sorted(a % 4 for a in axes) == [2, 3]


class GlobalPoolPass(InPlacePass):
    """Replace spatial ``ReduceMean`` on 4-D feature maps (dims kept) with ``GlobalAveragePool``."""

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        count = 0
        for node in list(graph):
            if not _spatial_mean(node):
                continue
            y = node.outputs[0]
            out = ir.Value(name=y.name, shape=None if y.shape is None else y.shape.copy(), type=y.type)
            y.name = None
            pool = ir.Node("", "GlobalAveragePool", [node.inputs[0]], outputs=[out], name=node.name)
            graph.insert_before(node, pool)
            y.replace_all_uses_with(out, replace_graph_outputs=True)
            graph.remove(node, safe=True)
            count += 1
        if count:
            log.info("rewrote %d spatial ReduceMean as GlobalAveragePool (QLinearGlobalAveragePool on ORT CPU)", count)
        return PassResult(model, modified=count > 0)
