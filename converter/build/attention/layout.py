"""Where an attention core's Q, K and V come from: a [B, S, N*H] tensor (a projection, reshaped to heads
and transposed) when the graph has one, else the [B, N, S, H] tensor itself (after rotary embeddings or
repeated KV heads, which only exist per head)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import Graph, perm, strip_scale


@dataclass(frozen=True)
class Operand:
    """One of Q, K, V. ``bsd``: its [B, S, N*H] source (None when the graph has none), times ``bsd_scale``
    to give the head tensor; ``bnsh``: the [B, N, S, H] tensor as the scores read it (None when the graph
    never materialises it). ``heads`` / ``size``: N and H where the graph states them."""

    bsd: str | None
    bsd_scale: float
    bnsh: str | None
    heads: int | None
    size: int | None


def heads_reshape(g: Graph, name: str, from_3d: bool = True) -> tuple[str, int | None, int | None, float] | None:
    """``Reshape(c * x3d, [B, S, N, H])``: (x3d, N, H, c) with N / H when the shape says them (else None);
    ``from_3d=False`` accepts any source (a Reshape that re-states a 4-D shape)."""
    node = g.make(name)
    if node is None or node.op_type != "Reshape":
        return None
    shape = g.const(node.input[1])
    if shape is not None:
        dims = [int(d) for d in shape.reshape(-1)]
    else:
        concat = g.make(node.input[1])
        if concat is None or concat.op_type != "Concat":
            return None
        parts = [g.const(i) for i in concat.input]
        if any(p is not None and p.size != 1 for p in parts):
            return None
        dims = [int(p.reshape(-1)[0]) if p is not None else 0 for p in parts]
    if len(dims) != 4:
        return None
    source = g.dims(node.input[0])
    if from_3d and source is not None and len(source) != 3:
        return None
    x, scale = strip_scale(g, node.input[0])  # Whisper scales the query projection before the reshape
    heads, size = dims[2], dims[3]
    return x, (heads if heads > 0 else None), (size if size > 0 else None), scale


def to_heads(g: Graph, name: str) -> tuple[str, int | None, int | None, float] | None:
    """``Transpose(0,2,1,3)(Reshape(x3d, [B,S,N,H]))``: [B,N,S,H]."""
    node = g.make(name)
    if node is None or node.op_type != "Transpose" or perm(node) != [0, 2, 1, 3]:
        return None
    return heads_reshape(g, node.input[0])


def _stated(g: Graph, name: str) -> tuple[int | None, int | None]:
    """N and H of a [B, N, S, H] tensor from its recorded shape."""
    dims = g.dims(name)
    return (dims[1], dims[3]) if dims is not None and len(dims) == 4 else (None, None)


def head_operand(g: Graph, name: str) -> Operand:
    """Q or V as the scores read them ([B, N, S, H], or [B*N, S, H] merged from it)."""
    node = g.make(name)
    if node is not None and node.op_type == "Reshape" and merges_leading(g, node.input[1]):
        dims = g.dims(node.input[0])
        if dims is not None and len(dims) == 4:
            name = node.input[0]
    heads, size = _stated(g, name)
    found = to_heads(g, name)
    if found is None:
        return Operand(None, 1.0, name, heads, size)
    x, n, h, scale = found
    return Operand(x, scale, name, n or heads, h or size)


def key_operand(g: Graph, name: str) -> tuple[Operand, float] | None:
    """K from the scores' right operand Kᵀ ([B, N, H, S]), through any chain of Transposes and merge/split
    Reshapes whose composition is the transposition of the last two axes of [B, N, S, H]; the scalar
    factors on the way are returned apart (they multiply into the op's scale)."""
    name, scale = strip_scale(g, name)
    node = g.make(name)
    if node is None:
        return None
    if node.op_type == "Transpose" and perm(node) == [0, 2, 3, 1]:  # straight from [B,S,N,H]
        found = heads_reshape(g, node.input[0])
        if found is None:
            return None
        x, n, h, s = found
        return Operand(x, s, None, n, h), scale
    if node.op_type == "Transpose" and perm(node) == [0, 1, 3, 2]:  # from [B,N,S,H]: maybe rotary / GQA
        inner, s = strip_scale(g, node.input[0])
        operand = head_operand(g, inner)
        dims = g.dims(inner)
        if operand.bsd is None and (dims is None or len(dims) != 4):
            return None
        return operand, scale * s
    if node.op_type == "Transpose" and perm(node) == [0, 2, 1]:  # [B*N,H,S] from [B*N,S,H] (DeBERTa)
        inner, s = strip_scale(g, node.input[0])
        merge = g.make(inner)
        if merge is None or merge.op_type != "Reshape" or not merges_leading(g, merge.input[1]):
            return None
        operand = head_operand(g, inner)
        return (operand, scale * s) if operand.bnsh != inner else None
    # dynamo: Reshape([B,N,H,S]) <- Transpose(0,2,1) <- Reshape([B*N,S,H]) <- [B,N,S,H]
    if node.op_type == "Reshape":
        tr = g.make(node.input[0])
        if tr is not None and tr.op_type == "Transpose" and perm(tr) == [0, 2, 1]:
            merge = g.make(tr.input[0])
            if merge is not None and merge.op_type == "Reshape" and merges_leading(g, merge.input[1]) \
                    and _splits_leading(g, node.input[1], merge.input[1]):
                inner, s = strip_scale(g, merge.input[0])
                operand = head_operand(g, inner)
                return (operand, scale * s) if operand.bsd is not None else None
    return None


def merges_leading(g: Graph, shape_name: str) -> bool:
    """A 3-D shape ``[-1, S, H]``: batch and heads merged, the last two axes kept."""
    concat = g.make(shape_name)
    first = g.const(concat.input[0]) if concat is not None and concat.op_type == "Concat" else g.const(shape_name)
    if first is None:
        return False
    n = len(concat.input) if concat is not None and concat.op_type == "Concat" else first.size
    return n == 3 and int(first.reshape(-1)[0]) == -1


def _splits_leading(g: Graph, shape_name: str, merged_shape: str) -> bool:
    """The shape after the transpose is [B, N, H, S]: it ends with the merged shape's last two entries
    swapped (the same tensors, so the same symbolic dims) after the leading [B, N]."""
    split, merged = g.make(shape_name), g.make(merged_shape)
    if split is None or merged is None or split.op_type != "Concat" or merged.op_type != "Concat":
        return False
    return len(split.input) >= 3 and list(split.input[-2:]) == [merged.input[2], merged.input[1]]


def projection(g: Graph, name: str) -> tuple[str, np.ndarray, np.ndarray | None] | None:
    """``x @ W (+ b)`` with constant W [hidden_in, hidden] and b [hidden]: (x, W, b)."""
    node = g.make(name)
    bias = None
    if node is not None and node.op_type == "Add":
        for i, j in ((0, 1), (1, 0)):
            b = g.const(node.input[j])
            if b is not None and b.ndim == 1:
                bias, node = b, g.make(node.input[i])
                break
        else:
            return None
    if node is None or node.op_type != "MatMul":
        return None
    w = g.const(node.input[1])
    if w is None or w.ndim != 2:
        return None
    return node.input[0], w, bias


def width(g: Graph, name: str) -> int | None:
    """The last dimension of a [B, S, D] tensor: its projection's weight columns, else its recorded shape."""
    proj = projection(g, name)
    if proj:
        return int(proj[1].shape[1])
    dims = g.dims(name)
    return dims[-1] if dims is not None and len(dims) == 3 else None
