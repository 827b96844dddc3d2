"""Q/DQ rules applied with a target's parameters: scales, zero points, types, axes and placement."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .graph import GraphIndex, QdqNode, label
from .report import ERROR, WARNING, Finding
from .targets import Target

_WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _attr(node: "onnx.NodeProto", name: str, default: int) -> int:  # noqa: F821
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _rank(q: QdqNode, index: GraphIndex) -> int | None:
    shape = index.shape(q.x)
    return len(shape) if shape is not None else None


def _output_channel_axis(consumer: "onnx.NodeProto", rank: int) -> int | None:  # noqa: F821
    """The output-channel axis of a weight fed to input 1 of ``consumer``."""
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "ConvTranspose":
        return 1
    if consumer.op_type == "Gemm":
        return 0 if _attr(consumer, "transB", 0) else 1
    if consumer.op_type == "MatMul":
        return rank - 1
    return None


def scale_rules(q: QdqNode, target: Target) -> Iterator[Finding]:
    if q.scale is None:
        if target.constant_qparams:
            yield Finding(ERROR, "scale", f"{q.name}: scale is computed at run time; {target.label} needs "
                          "constant (initializer) scales", q.name)
        return
    bad = ~np.isfinite(q.scale) | (q.scale <= 0)
    if bad.any():
        yield Finding(ERROR, "scale", f"{q.name}: {int(bad.sum())} scale value(s) are zero, negative or not finite "
                      f"(e.g. {q.scale.ravel()[bad.ravel()][0]!r}); the quantization parameters are broken", q.name)


def zero_point_rules(q: QdqNode, target: Target) -> Iterator[Finding]:
    if not target.symmetric_only or not q.zero_point_name:
        return
    if q.zero_point is None:
        if target.constant_qparams:
            yield Finding(ERROR, "zero-point", f"{q.name}: zero point is computed at run time; {target.label} needs "
                          "constant zero points equal to 0", q.name)
        return
    zp = q.zero_point.astype(np.float64)
    if np.any(zp != 0):
        vals = np.unique(zp[zp != 0])
        shown = ", ".join(str(int(v)) for v in vals[:4]) + (" ..." if vals.size > 4 else "")
        yield Finding(ERROR, "zero-point", f"{q.name} on {q.x!r}: zero point {shown} is not 0; {target.label} "
                      "supports symmetric quantization only (re-quantize with symmetric activations and weights)",
                      q.name)


def type_rules(q: QdqNode, index: GraphIndex, target: Target) -> Iterator[Finding]:
    problem = target.qdq_type_problem(q, index)
    if problem:
        yield Finding(ERROR, "quant-type", f"{q.name} on {q.x!r}: {problem}", q.name)


def axis_rules(q: QdqNode, index: GraphIndex, target: Target) -> Iterator[Finding]:
    if not q.per_channel or q.block_size:
        return
    rank = _rank(q, index)
    if rank is None:
        return
    axis = q.axis + rank if q.axis < 0 else q.axis
    if not 0 <= axis < rank:
        yield Finding(ERROR, "axis", f"{q.name}: per-channel axis {q.axis} is out of range for {q.x!r} of rank {rank}",
                      q.name)
        return
    dim = (index.shape(q.x) or ())[axis] if rank else None
    if q.scale is not None and q.scale.ndim != 1:
        yield Finding(ERROR, "axis", f"{q.name}: per-channel scale must be 1-D, got shape {list(q.scale.shape)}", q.name)
    elif dim and q.scale is not None and q.scale.size != dim:
        yield Finding(ERROR, "axis", f"{q.name}: {q.scale.size} per-channel scales for axis {axis} of {q.x!r}, "
                      f"which has {dim} channels", q.name)
    if not q.x_const:
        severity = ERROR if target.strict_activation_per_tensor else WARNING
        effect = "supports only per-tensor activation scales" if severity == ERROR else \
            "fuses only per-tensor activation scales; this Q/DQ runs as a float op"
        yield Finding(severity, "activation-per-channel", f"{q.name}: activation {q.x!r} is quantized per channel "
                      f"(axis {q.axis}); {target.label} {effect}", q.name)
        return
    if q.is_q:
        return
    for consumer, slot in index.consumers.get(q.node.output[0], []):
        if slot != 1:
            continue
        want = _output_channel_axis(consumer, rank)
        if want is None or want == axis:
            continue
        severity = ERROR if target.strict_weight_axis else WARNING
        effect = ("quantizes weights per output channel only" if severity == ERROR
                  else "fuses per-channel weights only along the output channel; this layer runs in float")
        yield Finding(severity, "weight-axis", f"{q.name}: weight {q.x!r} of {consumer.op_type} {label(consumer)!r} is "
                      f"quantized along axis {axis}, but its output-channel axis is {want}; {target.label} {effect}",
                      q.name)


def placement_rules(index: GraphIndex, qdq: list[QdqNode], target: Target) -> Iterator[Finding]:
    """Q without DQ, Q/DQ pairs around ops the target does not fuse, half-quantized weighted ops."""
    dq_outputs = {q.node.output[0] for q in qdq if not q.is_q}
    for q in qdq:
        out = q.node.output[0]
        if q.is_q:
            bad = [c for c, _ in index.consumers.get(out, []) if c.op_type != "DequantizeLinear"]
            if bad or out in index.graph_outputs:
                what = f"{bad[0].op_type} {label(bad[0])!r}" if bad else "a graph output"
                yield Finding(target.dangling_q, "dangling-q", f"{q.name}: quantized {q.qtype} tensor {out!r} goes to "
                              f"{what} instead of a DequantizeLinear; {target.label} expects every QuantizeLinear "
                              "to be followed by DequantizeLinear", q.name)
            continue
        source = index.producer.get(q.x)
        if q.x_const or source is None or source.op_type != "QuantizeLinear":
            continue
        consumers = [c for c, _ in index.consumers.get(out, [])]
        before = index.producer.get(source.input[0])
        fused = any(c.op_type in target.fuses for c in consumers) or (before is not None and before.op_type in target.fuses)
        if consumers and not fused:
            ops = ", ".join(sorted({c.op_type for c in consumers}))
            yield Finding(WARNING, "unfused-qdq", f"Q/DQ pair on {source.input[0]!r} ({label(source)} -> {q.name}) "
                          f"feeds only {ops}, which {target.label} does not run in int8: the pair adds quantization "
                          "error and runs as float ops", q.name)
    for node in index.graph.node:
        if node.op_type not in _WEIGHTED or len(node.input) < 2:
            continue
        a_q, b_q = node.input[0] in dq_outputs, node.input[1] in dq_outputs
        if a_q and not b_q:
            what = "its weight" if index.is_const(node.input[1]) else "its second input"
            yield Finding(WARNING, "half-quantized", f"{node.op_type} {label(node)!r}: input {node.input[0]!r} is "
                          f"quantized but {what} {node.input[1]!r} is not; {target.label} runs it in float", label(node))
        elif b_q and not a_q and not target.weight_only_ok:
            yield Finding(WARNING, "half-quantized", f"{node.op_type} {label(node)!r}: only the weight is quantized "
                          f"(input {node.input[0]!r} is float); {target.label} dequantizes it and runs in float",
                          label(node))
