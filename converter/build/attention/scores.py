"""The attention core around one Softmax: scores ``c * (Q @ Kᵀ) + bias₁ + bias₂ ...`` before it, the
product with V and the merge of the heads after it."""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from .graph import Graph, perm, strip_scale
from .layout import heads_reshape, merges_leading


FILL_LIMIT = -1e30
"""A masked fill at or below this (torch.finfo(float32).min, -inf) is exactly additive in FP32: x + fill
rounds to fill for any score, so a row that is masked entirely stays uniform as with the fill itself."""


@dataclass(frozen=True)
class Term:
    """One additive term of the scores, as the fused op's ``attention_bias`` needs it."""

    tensor: str  # the term, or the condition of a masked fill
    fill: str = ""  # Where(cond, scores, fill) [fill_first=False] or Where(cond, fill, scores): the fill constant
    fill_first: bool = False
    reshape: str = ""  # the shape that splits batch and heads again (DeBERTa computes [B*N, S, T] scores)


@dataclass(frozen=True)
class Scores:
    qk: onnx.NodeProto  # MatMul(Q [B,N,S,H], Kᵀ [B,N,H,T]) (or batch and heads merged: [B*N,S,H] @ [B*N,H,T])
    scale: float  # scalar factors between that MatMul and the first additive term
    biases: tuple[Term, ...]  # additive terms (relative-position bias, padding / causal mask)


@dataclass(frozen=True)
class Context:
    pv: onnx.NodeProto  # MatMul(P, V)
    transpose: onnx.NodeProto  # [B,N,S,H] -> [B,S,N,H]
    merge: onnx.NodeProto  # Reshape [B,S,N,H] -> [B,S,N*H] (or [B*S, N*H])


def _reaches_qk(g: Graph, name: str, depth: int = 4) -> bool:
    """``name`` is (scalar factors of) Q @ Kᵀ, or a sum with it as one term."""
    node = g.make(strip_scale(g, name)[0])
    if node is None or depth == 0:
        return False
    if node.op_type == "MatMul":
        return True
    if node.op_type == "Reshape":
        return _reaches_qk(g, node.input[0], depth - 1)
    return node.op_type == "Add" and any(_reaches_qk(g, i, depth - 1) for i in node.input)


def scores(g: Graph, softmax: onnx.NodeProto) -> Scores | None:
    """Split the Softmax's input into the Q @ Kᵀ product, its scale and the additive terms."""
    axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
    if axis not in (-1, 3):
        return None
    name, biases, split = softmax.input[0], [], ""
    while (node := g.make(name)) is not None and node.op_type in ("Add", "Where", "Reshape"):
        if g.only_consumer(name) is None and name != softmax.input[0]:
            return None
        if node.op_type == "Add":
            sides = [i for i in (0, 1) if _reaches_qk(g, node.input[i])]
            if len(sides) != 1:
                return None
            biases.append(Term(node.input[1 - sides[0]], reshape=split))
            name = node.input[sides[0]]
        elif node.op_type == "Where":  # masked_fill(~mask, min): the same as adding Where(mask, 0, min)
            cond, a, b = node.input
            fill_first = (g.scalar(a) or 0.0) <= FILL_LIMIT
            if not fill_first and (g.scalar(b) or 0.0) > FILL_LIMIT or not _reaches_qk(g, b if fill_first else a):
                return None
            biases.append(Term(cond, a if fill_first else b, fill_first, split))
            name = b if fill_first else a
        else:  # scores computed with batch and heads merged, split to [B, N, S, T] for the mask
            out, src = g.dims(name), g.dims(node.input[0])
            if split or not _reaches_qk(g, node.input[0]) or out is None or src is None \
                    or len(out) != 4 or len(src) != 3:
                return None
            split, name = node.input[1], node.input[0]
    name, scale = strip_scale(g, name)
    qk = g.make(name)
    if qk is None or qk.op_type != "MatMul":
        return None
    merged = g.dims(qk.output[0])
    if biases and not split and merged is not None and len(merged) == 3:
        return None  # terms added to scores with batch and heads merged, never split back to [B,N,S,T]
    return Scores(qk, scale, tuple(reversed(biases)))


def context(g: Graph, softmax: onnx.NodeProto) -> Context | None:
    """Forward from the Softmax: [NaN guard] -> MatMul(P, V) -> [Reshape] -> Transpose(0,2,1,3) -> Reshape."""
    probs = softmax.output[0]
    users = g.consumers.get(probs, [])
    if len(users) == 2 and {u.op_type for u in users} == {"IsNaN", "Where"}:
        isnan = next(u for u in users if u.op_type == "IsNaN")
        where = next(u for u in users if u.op_type == "Where")
        if list(where.input) != [isnan.output[0], where.input[1], probs] or g.scalar(where.input[1]) != 0.0:
            return None
        probs = where.output[0]
    pv = g.only_consumer(probs)
    if pv is not None and pv.op_type == "Reshape" and merges_leading(g, pv.input[1]):
        probs = pv.output[0]  # DeBERTa multiplies with V with batch and heads merged
        pv = g.only_consumer(probs)
    if pv is None or pv.op_type != "MatMul" or pv.input[0] != probs:
        return None
    tr = g.only_consumer(pv.output[0])
    if tr is not None and tr.op_type == "Reshape" and heads_reshape(g, tr.output[0], from_3d=False) is not None:
        tr = g.only_consumer(tr.output[0])  # the legacy exporter re-states the [B, N, S, H] shape first
    if tr is None or tr.op_type != "Transpose" or perm(tr) != [0, 2, 1, 3]:
        return None
    merge = g.only_consumer(tr.output[0])
    if merge is None or merge.op_type != "Reshape":
        return None
    shape = g.dims(merge.output[0])
    if shape is not None and len(shape) not in (2, 3):
        return None
    return Context(pv, tr, merge)
