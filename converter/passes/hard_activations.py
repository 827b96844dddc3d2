"""Preprocessing for targets without integer HardSigmoid/HardSwish: write them with ops that have kernels.

``HardSwish(x) = x * HardSigmoid(x)`` and ``HardSigmoid(x) = Clip(alpha * x + beta, 0, 1)``, where
``alpha * x + beta`` on a 4-D feature map is a 1x1 depthwise Conv (weights ``alpha``, bias ``beta``). So

    HardSwish(x)   ->  Mul(x, Clip(DepthwiseConv1x1(x; alpha=1/6, beta=1/2), 0, 1))
    HardSigmoid(x) ->  Clip(DepthwiseConv1x1(x; alpha, beta), 0, 1)

computes the same function (exactly, up to float rounding), and on ONNX Runtime CPU it runs as
``QLinearConv`` (the Clip folds into its output range, ``rules.OUTPUT_FOLDING_OPS``) + ``QLinearMul``.
ONNX Runtime has no integer HardSigmoid: left as it is, every HardSwish of an INT8 MobileNetV3 runs in
float between a DequantizeLinear and a QuantizeLinear over a full feature map (0.83x FP32 at batch 8 in
``tools/zoo.py``, where FP32 fuses Conv + HardSwish into one NCHWc Conv). The gate's range is derived
from the calibrated range of ``x`` (``insert_qdq.lookup_range``): tables calibrated on the original model
quantize the rewritten one. Only on feature maps a Conv produced (not excluded), for profiles with
``hard_activations_as_conv`` (ort-cpu); TensorRT fuses Conv + HardSwish itself.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from ..quant.config import QuantConfig
from ._utils import add_initializer, is_float32, shape_of, unique_name, used_names

log = logging.getLogger(__name__)

_HARDSWISH = (1.0 / 6.0, 0.5)  # HardSwish's HardSigmoid: alpha, beta


def _channels(value: ir.Value) -> int | None:
    """The static channel count of a 4-D float value, else None."""
    shape = value.shape
    if not is_float32(value) or shape is None or len(shape) != 4 or not isinstance(shape[1], int):
        return None
    return shape[1]


class HardActivationsPass(InPlacePass):
    """Rewrite HardSwish and HardSigmoid on Conv feature maps as depthwise Conv + Clip (+ Mul)."""

    def __init__(self, config: QuantConfig) -> None:
        super().__init__()
        self.config = config

    def _applies(self, node: ir.Node) -> int | None:
        """The channel count when ``node`` (HardSwish/HardSigmoid) reads a 4-D output of a quantized Conv."""
        if node.op_type not in ("HardSwish", "HardSigmoid") or node.domain not in ("", "ai.onnx") or not node.inputs:
            return None
        x = node.inputs[0]
        producer = x.producer() if x is not None else None
        if producer is None or producer.op_type != "Conv" or producer.domain not in ("", "ai.onnx"):
            return None
        if "Conv" not in self.config.op_types or self.config.is_excluded(producer.name or "", "Conv"):
            return None
        if self.config.is_excluded(node.name or "", node.op_type):
            return None
        return _channels(x)

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        taken = used_names(graph)
        consts: dict[str, ir.Value] = {}
        count = 0

        def scalar(name: str, v: float) -> ir.Value:
            if name not in consts:
                consts[name] = add_initializer(graph, name, np.array(v, np.float32), taken)
            return consts[name]

        def value(name: str, like: ir.Value) -> ir.Value:
            return ir.Value(name=unique_name(graph, name, taken), shape=shape_of(like), type=like.type)

        for node in list(graph):
            channels = self._applies(node)
            if channels is None:
                continue
            x, y = node.inputs[0], node.outputs[0]
            if node.op_type == "HardSwish":
                alpha, beta = _HARDSWISH
            else:
                alpha, beta = node.attributes.get_float("alpha", 0.2), node.attributes.get_float("beta", 0.5)
            base = node.name or y.name or "hard"
            w = add_initializer(graph, f"{base}_gate_weight", np.full((channels, 1, 1, 1), alpha, np.float32), taken)
            b = add_initializer(graph, f"{base}_gate_bias", np.full((channels,), beta, np.float32), taken)
            lin = value(f"{base}_gate_linear", x)
            conv = ir.Node("", "Conv", [x, w, b], outputs=[lin], name=unique_name(graph, f"{base}_gate_conv", taken),
                           attributes=[ir.AttrInt64("group", channels)])
            new = [conv]
            if node.op_type == "HardSigmoid":
                out = ir.Value(name=y.name, shape=shape_of(y) or shape_of(x), type=y.type)
                y.name = None
                new.append(ir.Node("", "Clip", [lin, scalar("hard_gate_zero", 0.0), scalar("hard_gate_one", 1.0)],
                                   outputs=[out], name=node.name))
            else:
                gate = value(f"{base}_gate", x)
                new.append(ir.Node("", "Clip", [lin, scalar("hard_gate_zero", 0.0), scalar("hard_gate_one", 1.0)],
                                   outputs=[gate], name=unique_name(graph, f"{base}_gate_clip", taken)))
                out = ir.Value(name=y.name, shape=shape_of(y) or shape_of(x), type=y.type)
                y.name = None
                new.append(ir.Node("", "Mul", [x, gate], outputs=[out], name=node.name))
            graph.insert_before(node, new)
            y.replace_all_uses_with(out, replace_graph_outputs=True)
            graph.remove(node, safe=True)
            count += 1
        if count:
            log.info("rewrote %d HardSwish/HardSigmoid as depthwise Conv + Clip (+ Mul): integer kernels on %s",
                     count, self.config.profile.key)
        return PassResult(model, modified=count > 0)
