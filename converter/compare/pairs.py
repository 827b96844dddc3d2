"""Match the quantized tensors of a QDQ model to their float twins in the reference model."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass(frozen=True)
class TensorPair:
    """``float_name`` in the reference, its quantize→dequantize output ``dq_name`` in the candidate."""

    float_name: str
    dq_name: str
    consumer_ops: tuple[str, ...]
    qrange: tuple[float, float] | None = None  # the representable float range of the Q/DQ, per-tensor only


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _qrange(q: onnx.NodeProto, consts: dict[str, np.ndarray]) -> tuple[float, float] | None:
    """[(qmin - zp) * scale, (qmax - zp) * scale] for a per-tensor QuantizeLinear."""
    scale = consts.get(q.input[1]) if len(q.input) > 1 else None
    if scale is None or scale.size != 1:
        return None
    zp = consts.get(q.input[2]) if len(q.input) > 2 and q.input[2] else None
    dtype = zp.dtype if zp is not None else np.dtype(np.uint8)
    info = np.iinfo(dtype)
    z = float(zp.reshape(-1)[0]) if zp is not None else 0.0
    sc = float(scale.reshape(-1)[0])
    return ((info.min - z) * sc, (info.max - z) * sc)


def _produced_names(model: onnx.ModelProto) -> set[str]:
    names = {i.name for i in model.graph.input}
    for node in model.graph.node:
        names.update(o for o in node.output if o)
    return names


def match_quantized_tensors(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> list[TensorPair]:
    """Pairs for every activation QuantizeLinear→DequantizeLinear in ``candidate`` whose float input exists in ``reference``.

    Weights (DequantizeLinear of a constant) have no runtime twin and are skipped.
    """
    ref_names = _produced_names(reference)
    consts = _constants(candidate)
    g = candidate.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    pairs: list[TensorPair] = []
    seen: set[str] = set()
    for q in g.node:
        if q.op_type != "QuantizeLinear" or q.input[0] not in ref_names:
            continue
        for dq in consumers.get(q.output[0], []):
            if dq.op_type != "DequantizeLinear" or dq.output[0] in seen:
                continue
            seen.add(dq.output[0])
            ops = tuple(sorted({n.op_type for n in consumers.get(dq.output[0], [])}))
            pairs.append(TensorPair(q.input[0], dq.output[0], ops, _qrange(q, consts)))
    return pairs


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the (float) tensors ``names`` as graph outputs."""
    from ..graph_outputs import add_outputs

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return add_outputs(copy, names)
