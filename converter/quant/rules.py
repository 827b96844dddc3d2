"""Per-op quantization rules: which inputs of an op take Q/DQ, the weight's channel axes, and
which ops pass their input's scale through to their output.

Rules only describe; ``converter.passes.qdq_placement`` decides with them and marks the graph.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx_ir as ir

AxisFn = Callable[[ir.Node], "int | None"]


def _attr_int(node: ir.Node, name: str, default: int = 0) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def _matmul_out_axis(node: ir.Node) -> int | None:
    return -1


def _matmul_in_axis(node: ir.Node) -> int | None:
    return -2


def _gemm_out_axis(node: ir.Node) -> int | None:
    return 0 if _attr_int(node, "transB") else 1


def _gemm_in_axis(node: ir.Node) -> int | None:
    return 1 if _attr_int(node, "transB") else 0


def _gemm_act_axis(node: ir.Node) -> int | None:
    return None if _attr_int(node, "transA") else -1


def _conv_in_axis(node: ir.Node) -> int | None:
    return 1 if _attr_int(node, "group", 1) == 1 else None


@dataclass(frozen=True)
class OpRule:
    """How one op type is quantized.

    ``activations``: input indices quantized per tensor from the calibration table.
    ``weight``: index of the constant weight input, quantized symmetric per output channel.
    ``weight_out_axis`` / ``weight_in_axis``: the weight's output- and input-channel axes
    (``weight_in_axis`` None: SmoothQuant cannot scale this op's input channels).
    ``act_channel_axis``: the activation axis that meets ``weight_in_axis`` (for SmoothQuant).
    ``bias``: index of a bias input stored as int32 with scale = input scale x weight scale.
    ``quantize_output``: the backend's integer kernel needs a Q on the output too (QLinearConv).
    ``dynamic_weight``: the op may also be quantized with a non-constant second operand
    (activation x activation MatMul, as in attention).
    ``feature_map_only``: an elementwise op (no weight) quantized only on 4-D (NCHW) activations and only
    for targets that quantize outputs, where ONNX Runtime runs it as a ``QLinear*`` kernel between two
    quantized layers (SiLU and SE gates: ``QLinearSigmoid``, ``QLinearMul``); in transformers (SwiGLU,
    rotary embeddings) the same ops stay float.
    """

    op_type: str
    activations: tuple[int, ...] = (0,)
    weight: int | None = 1
    weight_out_axis: AxisFn = _matmul_out_axis
    weight_in_axis: AxisFn = _matmul_in_axis
    act_channel_axis: AxisFn = lambda node: -1
    bias: int | None = None
    quantize_output: bool = False
    dynamic_weight: bool = False
    feature_map_only: bool = False


RULES: dict[str, OpRule] = {}

SCALE_SHARING_OPS: frozenset[str] = frozenset(
    {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "Identity", "Slice", "Gather"}
)
"""Ops whose output is a re-arrangement (or max) of the input values: a Q/DQ on their output can
reuse the input's scale and zero point, so backends run them directly on INT8 data."""

OUTPUT_FOLDING_OPS: frozenset[str] = frozenset({"Relu", "Clip"})
"""Activations that fold into their producer's output quantization: the Q goes after the activation
(its range is the activation's output), once, not before and again after it. ONNX Runtime then drops
the activation (``ReluQuantFusion`` / ``ClipQuantFusion``: the Q's range already clips) and fuses
``DQ -> Conv -> Q`` into ``QLinearConv``; TensorRT fuses Conv + ReLU the same way. The activation stays
in the graph, so the folded form computes the same function whatever the Q's range.
Not LeakyRelu or Sigmoid on ORT CPU: no integer Conv absorbs them, so folding leaves the Conv in float
(``FusedConv``); quantizing before and after instead gives ``QLinearConv`` + ``QLinearLeakyRelu`` /
``QLinearSigmoid``, measured 8.0 vs 12.2 ms (LeakyRelu) and 7.3 vs 14.0 ms (Sigmoid) on a 16->64 channel
3x3 Conv at 8x28x28, one AVX512-VNNI thread."""

def is_depthwise(op_type: str, group: int, weight_shape: Sequence[int] | None) -> bool:
    """A Conv with one input channel per group and as many groups as output channels. ONNX Runtime runs
    it on MLAS's depthwise kernel, which widens to int16 before it multiplies (no u8xs8 pair saturation)."""
    return (op_type == "Conv" and group > 1 and weight_shape is not None and len(weight_shape) == 4
            and weight_shape[1] == 1 and weight_shape[0] == group)


RANGE_HOSTILE_OPS: frozenset[str] = frozenset({"Softmax", "LayerNormalization", "Where", "Add", "Sub", "Div"})
"""Ops whose inputs are never quantized: Softmax inputs carry -inf/huge mask values, residual
adds and LayerNorm inputs have outlier channels; quantizing them costs accuracy and buys no
integer kernel on ONNX Runtime CPU."""


def register(rule: OpRule) -> OpRule:
    """Add (or replace) the rule for ``rule.op_type``."""
    RULES[rule.op_type] = rule
    return rule


def rule_for(op_type: str, domain: str = "") -> OpRule | None:
    """The rule for an op of the default ONNX domain, or None when the op is never quantized."""
    if domain not in ("", "ai.onnx"):
        return None
    return RULES.get(op_type)


register(OpRule("MatMul", dynamic_weight=True))
register(
    OpRule(
        "Gemm",
        weight_out_axis=_gemm_out_axis,
        weight_in_axis=_gemm_in_axis,
        act_channel_axis=_gemm_act_axis,
        bias=2,
    )
)
register(
    OpRule(
        "Conv",
        weight_out_axis=lambda node: 0,
        weight_in_axis=_conv_in_axis,
        act_channel_axis=lambda node: 1,
        bias=2,
        quantize_output=True,
    )
)
for _op, _inputs in (("Sigmoid", (0,)), ("Mul", (0, 1))):
    register(OpRule(_op, activations=_inputs, weight=None, quantize_output=True, feature_map_only=True))
"""SiLU (``x * Sigmoid(x)``) and squeeze-and-excitation gates (``x * Sigmoid(fc(pool(x)))``) between
quantized Convs. Left float, each costs a DequantizeLinear, two float passes and a QuantizeLinear over a
full feature map: an SE/SiLU net (``tools/zoo.py``, se-silu-net) ran INT8 at 148 ms vs FP32 108 ms at batch
8; onnxruntime's quantize_static, which quantizes them, 84 ms. HardSwish and HardSigmoid have no rule: ORT has no
integer kernel for them, so for ort-cpu preprocessing writes them as depthwise Conv + Clip + Mul
(``passes.hard_activations``), which the Conv and Mul rules cover."""
register(OpRule("Resize", weight=None, quantize_output=True, feature_map_only=True))
"""Upsampling of Conv feature maps (segmentation / U-Net heads): with Q/DQ of the same scale around it
ONNX Runtime CPU drops them and resizes the uint8 data directly (its QDQ drop-Q/DQ selector): a nearest
Resize's output reuses its input's range (``insert_qdq._range_preserving``). Linear mode still runs in
float on ORT 1.32, but its quantized output feeds ``QLinearConcat`` / ``QLinearConv``."""
register(OpRule("Concat", activations=tuple(range(64)), weight=None, quantize_output=True, feature_map_only=True))
"""Concatenation of Conv feature maps (U-Net skip connections): with every input DQ and the output Q,
ONNX Runtime CPU runs ``com.microsoft.QLinearConcat``. Transformers' Concats (KV cache, rotary halves) are
not 4-D Conv feature maps and stay float."""
for _op in ("GlobalAveragePool", "AveragePool"):
    register(OpRule(_op, weight=None, quantize_output=True, feature_map_only=True))
"""Pools of Conv feature maps (squeeze-and-excitation, classifier heads): ``QLinearGlobalAveragePool`` /
``QLinearAveragePool`` on ORT CPU. Between two quantized layers ORT forms them from the neighbours' Q/DQ
anyway; the rule also covers a pool whose consumer quantizes only after a Flatten or Reshape (a head
``GlobalAveragePool -> Flatten -> Gemm`` otherwise pools in float after a DequantizeLinear). Spatial
``ReduceMean`` (torch's ``adaptive_avg_pool2d``) is written as ``GlobalAveragePool`` first
(``passes.global_pool``). MaxPool shares its input's scale (``SCALE_SHARING_OPS``)."""
