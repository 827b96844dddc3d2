"""QDQ placement: decide, from the op rules and the target backend, where Q/DQ pairs go.

The pass only marks nodes (``node.meta["qdq"]``); ``insert_qdq`` materialises the marks.

Policy (measured on ONNX Runtime 1.32 CPU, AVX512-VNNI, all-MiniLM-L6-v2; see
``tools/bench_quantize.py``):

* MatMul/Gemm with a constant weight: quantize the activation input (per tensor) and the weight
  (per output channel); the output stays float. ORT fuses ``DQ(x), DQ(W) -> MatMul`` into
  ``MatMulIntegerToFloat`` (bias and following Add/Gelu/LayerNorm stay fused in float). Putting a
  Q on the MatMul output instead gives QLinearMatMul, which forces a Q/DQ round trip around every
  bias add, residual add and LayerNorm: slower and much less accurate.
* Conv: input, weight, int32 bias and output, the form ORT turns into ``QLinearConv``. A Relu or
  Clip that alone consumes the Conv output folds into it (``rules.OUTPUT_FOLDING_OPS``): the output
  is quantized once, after the activation, with the activation's range (ReLU6 outputs span [0, 6],
  the pre-activation tensor often [-40, 40]: 8 bits spent where they count). ORT removes the
  activation and fuses the rest into ``QLinearConv``.
* Activation x activation MatMuls (attention Q.K^T and P.V): quantized on ORT CPU (both become
  ``MatMulIntegerToFloat``; ~8% faster for -0.0003 mean cosine on MiniLM), kept float for
  TensorRT (``QuantConfig.resolved_quantize_attention``). Their inputs are the scaled Q/K
  projections and the Softmax output in [0, 1]; the Softmax *input* (scores + mask) never is.
* A layer kept in float (excluded, or one placement skips) must not read a DequantizeLinear output:
  ONNX Runtime (1.32's ``WeightBiasQuantization``, from the basic level on) then quantizes its float weight itself, per
  tensor (EfficientNet-Lite0 with one depthwise Conv excluded: top-1 93% exact, 59% fused). The
  producer whose quantized output it would read keeps a float output instead (``_keep_float_inputs``).
* Sigmoid and two-activation Mul on Conv feature maps (SiLU, squeeze-and-excitation gates), ort-cpu only:
  inputs and output quantized, which ORT runs as ``QLinearSigmoid`` / ``QLinearMul`` between QLinearConvs
  (an SE/SiLU net at batch 8: 0.91x FP32 with them float, 1.25x quantized). Not in transformers: the rule
  needs 4-D values that trace back to a Conv (``_on_feature_maps``), so rotary products stay float.
* HardSwish / HardSigmoid on Conv feature maps, ort-cpu only: ORT has no integer kernel for them, so
  preprocessing writes them as a 1x1 depthwise Conv + Clip (+ Mul) (``passes.hard_activations``), which
  the Conv and Mul rules quantize: ``QLinearConv`` + ``QLinearMul`` (MobileNetV3 at batch 8: 0.83x FP32 with
  HardSwish in float, 1.4-1.6x rewritten). Spatial ReduceMean becomes GlobalAveragePool
  (``passes.global_pool``); pools of feature maps are quantized in and out (``QLinearGlobalAveragePool``).
  TensorRT fuses Conv + HardSwish itself: its graphs keep the ops.
* LeakyRelu (and Sigmoid) after a Conv do not fold (``rules.OUTPUT_FOLDING_OPS``): the Conv's output and
  the next layer's input are quantized, which ORT runs as ``QLinearConv`` + ``QLinearLeakyRelu``.
* Score heads stay float (``_float_score_heads``): the weighted layers (Conv, Gemm, MatMul) whose output
  reaches a graph output only through data movement (Reshape, Concat, Split, ...), a bias Add and a
  Sigmoid/Softmax, and the Concats on that path. A score's decisive values are its extremes (the objects of
  a detector, the chosen class), which the calibration data (mostly background) barely reach: YOLOv8n's
  class logits calibrated to [-17, 0.3] capped every detection's score at 0.5-0.57 (nudenet, through its
  own pipeline); its 3 per-scale Concats also joined the class maps with the box maps under one range.
* Never quantized: inputs of Softmax, residual/mask Add, LayerNorm and other range-hostile ops
  (``rules.RANGE_HOSTILE_OPS``): only the ops in the rule registry get Q/DQ.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from ..quant.config import QuantConfig
from ..quant.rules import OUTPUT_FOLDING_OPS, SCALE_SHARING_OPS, OpRule, rule_for
from ._utils import const_tensor, is_float32

log = logging.getLogger(__name__)

META_KEY = "qdq"
_NUMPY_FLOATS = frozenset({ir.DataType.FLOAT16, ir.DataType.FLOAT, ir.DataType.DOUBLE})
"""Weight and bias types the insertion pass quantizes (numpy float kinds)."""


@dataclass
class NodePlan:
    """What to quantize around one node: activation inputs, weight (index, axis), bias, output.

    ``folded``: activation nodes after the output (Relu, Clip) whose last output is quantized
    instead of the node's own (see ``quantized_output``).
    """

    activations: list[int] = field(default_factory=list)
    weight: tuple[int, int | None] | None = None
    bias: int | None = None
    output: bool = False
    folded: tuple[ir.Node, ...] = ()


def quantized_output(node: ir.Node, plan: NodePlan) -> ir.Value:
    """The value that carries ``node``'s output quantization: its output, or that of the last
    activation folded into it."""
    return (plan.folded[-1] if plan.folded else node).outputs[0]


def _folded_activations(node: ir.Node) -> tuple[ir.Node, ...]:
    """The chain of foldable activations (Relu, Clip) that alone consume ``node``'s output (not one
    whose output is a graph output: that stays float)."""
    chain: list[ir.Node] = []
    value = node.outputs[0]
    while not value.is_graph_output() and len(value.uses()) == 1:
        user = value.uses()[0].node
        if user.op_type not in OUTPUT_FOLDING_OPS or user.domain not in ("", "ai.onnx") or user.inputs[0] is not value:
            break
        if not is_float32(user.outputs[0]) or user.outputs[0].is_graph_output():
            break
        chain.append(user)
        value = user.outputs[0]
    return tuple(chain)


def plan_of(node: ir.Node) -> NodePlan | None:
    """The placement mark of a node, or None when it is not quantized."""
    return node.meta.get(META_KEY)


def data_dependent(graph: ir.Graph) -> set[int]:
    """ids of the values computed from the values of the graph's inputs, by the rule calibration uses
    (``calib.collector``: Shape/Size outputs carry no input values). The others (initializers, and what
    is computed from them and from input shapes only, e.g. DeBERTa's relative-position projections)
    get no calibrated range, so placement never treats them as activations."""
    from ..calib.collector import SHAPE_OPS

    dynamic = {id(v) for v in graph.inputs if v.const_value is None}
    for node in graph:
        if node.op_type in SHAPE_OPS:
            continue
        has_subgraph = any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values())
        if has_subgraph or any(v is not None and id(v) in dynamic for v in node.inputs):
            dynamic.update(id(v) for v in node.outputs)
    return dynamic


def _plan_node(node: ir.Node, config: QuantConfig, dynamic: set[int]) -> NodePlan | None:
    rule = rule_for(node.op_type, node.domain)
    if rule is None or (node.op_type not in config.op_types and not rule.feature_map_only):
        return None
    if rule.feature_map_only and not _on_feature_maps(node, rule, config):
        return None
    if config.is_excluded(node.name or "", node.op_type):
        log.debug("excluded from quantization: %s (%s)", node.name, node.op_type)
        return None
    inputs = list(node.inputs)
    acts = [i for i in rule.activations if i < len(inputs)]
    if not acts or any(not is_float32(inputs[i]) or const_tensor(inputs[i]) is not None for i in acts):
        return None
    if any(id(inputs[i]) not in dynamic for i in acts):
        return None  # an "activation" computed from weights alone: no calibrated range exists
    plan = NodePlan(activations=list(acts))
    if rule.weight is not None and rule.weight < len(inputs):
        w = inputs[rule.weight]
        weight = const_tensor(w)  # dtype and shape only: the data is not read here
        if weight is not None:
            w_rank = len(weight.shape)
            if weight.dtype not in _NUMPY_FLOATS or w_rank < 2 or (node.op_type == "MatMul" and w_rank != 2):
                return None
            axis = rule.weight_out_axis(node) if config.per_channel else None
            plan.weight = (rule.weight, None if axis is None else axis % w_rank)
        elif (rule.dynamic_weight and config.resolved_quantize_attention and is_float32(w)
              and id(w) in dynamic):
            plan.activations.append(rule.weight)
        else:
            return None
    if plan.weight is not None and rule.bias is not None and rule.bias < len(inputs):
        b = const_tensor(inputs[rule.bias])
        channels = weight.shape[rule.weight_out_axis(node) % w_rank]
        if b is not None and b.dtype in _NUMPY_FLOATS and len(b.shape) == 1 and b.shape[0] == channels:
            plan.bias = rule.bias  # stored int32; other bias shapes stay float
    if rule.quantize_output and config.profile.quantize_outputs and (plan.weight is not None or rule.weight is None):
        plan.folded = _folded_activations(node)
        plan.output = not quantized_output(node, plan).is_graph_output()
    return plan


def _on_feature_maps(node: ir.Node, rule: OpRule, config: QuantConfig) -> bool:
    """An elementwise rule applies on ort-cpu-like targets (outputs quantized) to 4-D activations only."""
    if not config.profile.quantize_outputs or node.op_type not in config.profile.fuses:
        return False
    values = [node.inputs[i] for i in rule.activations if i < len(node.inputs)] + [node.outputs[0]]
    if not all(v is not None and v.shape is not None and len(v.shape) == 4 for v in values):
        return False
    return any(_after_conv(v) for v in values[:-1])  # not rotary embeddings' 4-D products in attention


_CONV_OPS = frozenset({"Conv", "ConvTranspose"})
_PASS_THROUGH = frozenset({"Sigmoid", "HardSigmoid", "Mul", "Relu", "Clip", "Add", "GlobalAveragePool",
                           "ReduceMean", "HardSwish", "LeakyRelu", "Resize", "Concat", "MaxPool"})


def _after_conv(value: ir.Value, depth: int = 4) -> bool:
    """Whether ``value`` is a Conv output, or reaches back to one within ``depth`` elementwise/pooling ops."""
    node = value.producer()
    if node is None or depth == 0:
        return False
    if node.op_type in _CONV_OPS:
        return True
    return node.op_type in _PASS_THROUGH and any(v is not None and _after_conv(v, depth - 1) for v in node.inputs)


class QDQPlacementPass(InPlacePass):
    """Mark the nodes to quantize (``node.meta['qdq']``) following the rules and the config."""

    def __init__(self, config: QuantConfig) -> None:
        super().__init__()
        self.config = config

    def call(self, model: ir.Model) -> PassResult:
        count = 0
        dynamic = data_dependent(model.graph)
        for node in model.graph:
            plan = _plan_node(node, self.config, dynamic)
            if plan is None:
                node.meta.pop(META_KEY, None)
                continue
            node.meta[META_KEY] = plan
            count += 1
        count -= _float_score_heads(model.graph)
        _keep_float_inputs(model.graph)
        log.info("QDQ placement: %d nodes to quantize (target %s)", count, self.config.profile.key)
        return PassResult(model, modified=count > 0)


SQUASHING_OPS = frozenset({"Sigmoid", "Softmax", "LogSoftmax"})
"""Ops that turn logits into scores or probabilities."""
_SCORE_PATH_OPS = SCALE_SHARING_OPS | SQUASHING_OPS | {"Concat", "Split", "Add"}
"""Ops a score head's output may pass through on its way to a graph output (Add: a constant bias only)."""


def _score_layers(value: ir.Value, squashed: bool, path: list[ir.Node], seen: set[int]) -> list[ir.Node]:
    """The weighted layers that produce ``value`` through ``_SCORE_PATH_OPS`` only, behind at least one
    squashing op; the data-movement nodes walked are appended to ``path``."""
    node = value.producer()
    if node is None or id(node) in seen or node.domain not in ("", "ai.onnx"):
        return []
    seen.add(id(node))
    if node.op_type in WEIGHT_QUANTIZED_BY_ORT:
        has_weight = len(node.inputs) > 1 and node.inputs[1] is not None and const_tensor(node.inputs[1]) is not None
        return [node] if squashed and has_weight else []
    if node.op_type not in _SCORE_PATH_OPS:
        return []
    dynamic = [v for v in node.inputs if v is not None and const_tensor(v) is None]
    if node.op_type == "Add" and len(dynamic) != 1:
        return []  # a residual Add, not a bias
    path.append(node)
    squashed = squashed or node.op_type in SQUASHING_OPS
    if node.op_type in ("Reshape", "Slice", "Gather", "Squeeze", "Unsqueeze"):
        dynamic = dynamic[:1]  # the data, not the shape/indices
    return [layer for v in dynamic for layer in _score_layers(v, squashed, path, seen)]


def _float_score_heads(graph: ir.Graph) -> int:
    """Unmark the score heads (see the module docstring) and the nodes between them and the graph outputs;
    returns how many marked nodes that unmarked."""
    path: list[ir.Node] = []
    layers = [layer for out in graph.outputs for layer in _score_layers(out, False, path, set())]
    unmarked = [n for n in dict.fromkeys((*layers, *path)) if plan_of(n) is not None]  # outputs may share nodes
    for node in unmarked:
        node.meta.pop(META_KEY, None)
    marked_layers = [n for n in layers if n in unmarked]
    if marked_layers:
        names = ", ".join(n.name or n.op_type for n in marked_layers[:4])
        log.info("%d score layer(s) stay float (their output reaches a graph output through a Sigmoid/Softmax; "
                 "calibration data rarely reach a score's extremes): %s%s", len(marked_layers), names,
                 ", ..." if len(marked_layers) > 4 else "")
    return len(unmarked)


WEIGHT_QUANTIZED_BY_ORT = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
"""Ops whose float constant weight ONNX Runtime quantizes per tensor when their input is a DQ output."""


def _keep_float_inputs(graph: ir.Graph) -> None:
    """Unmark the output quantization of producers whose quantized output a float layer (weight op with a
    constant float weight, not marked) would read."""
    owners = {}
    for node in graph:
        plan = plan_of(node)
        if plan is not None and plan.output:
            owners[id(quantized_output(node, plan))] = (node, plan)
    for node in graph:
        if (plan_of(node) is not None or node.op_type not in WEIGHT_QUANTIZED_BY_ORT
                or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2 or const_tensor(node.inputs[1]) is None):
            continue
        owner = owners.get(id(node.inputs[0])) if node.inputs[0] is not None else None
        if owner is not None:
            producer, plan = owner
            plan.output = False
            log.info("%s stays float: %s keeps a float output (ONNX Runtime would quantize %s's weights per "
                     "tensor behind a DequantizeLinear)", node.name, producer.name, node.name)


def required_tensors(model: ir.Model) -> list[str]:
    """Names of the activation tensors whose calibrated ranges the marked graph needs."""
    names: dict[str, None] = {}
    for node in model.graph:
        plan = plan_of(node)
        if plan is None:
            continue
        for i in plan.activations:
            names[node.inputs[i].name] = None
        if plan.output:
            names[quantized_output(node, plan).name] = None
    return list(names)


def needed_tensors(model: ir.Model, config: QuantConfig) -> list[str]:
    """The tensors placement under ``config`` would quantize, leaving ``model`` unmarked."""
    QDQPlacementPass(config)(model)
    names = required_tensors(model)
    for node in model.graph:
        node.meta.pop(META_KEY, None)
    return names
