"""Fuse exported self-attention into ONNX Runtime's ``com.microsoft`` Attention / MultiHeadAttention.

onnxruntime.transformers' optimizer fuses LayerNorm, SkipLayerNorm and Gelu in our exports but not their
attention: torch's dynamo exporter writes ``scaled_dot_product_attention`` as its own pattern (the
scale split as ``sqrt(scale)`` on Q and on K, K transposed through a 3-D reshape, the padding mask as
an additive ``Where(mask, 0, -inf)``, a ``Where(IsNaN(softmax), 0, softmax)`` guard), which ORT's
pattern matcher does not recognise. This pass matches the structure instead of one exporter's spelling:

    x -> MatMul(Wq) [+ bq] -> Reshape [B,S,N,H] -> Transpose(0,2,1,3) ------ [* c] --.
    x -> MatMul(Wk) [+ bk] -> Reshape -> (any transposition to [B,N,H,S]) -- [* c] -- MatMul [* c] [+ bias]
    x -> MatMul(Wv) [+ bv] -> Reshape -> Transpose(0,2,1,3) --.                          |
                                          MatMul(P, V) <- [NaN guard] <- Softmax(-1) <---'
                                          [-> Reshape 4-D] -> Transpose(0,2,1,3) -> Reshape [B,S,N*H]

Q, K and V projected from one tensor by constant weights become one ``Attention`` (packed QKV GEMM, the
op ORT's own BERT fusion emits); otherwise ``MultiHeadAttention`` on the three projections. The scalar
factors multiply into the op's ``scale``; the additive mask becomes its ``attention_bias``. Every K
layout is checked by the permutation it composes to, so a chain that is not a transpose of the last two
axes is left alone. The build verifies the fused graph against the original on CPU (both ops have CPU
kernels) before anything is written.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
FUSED_OPS = ("Attention", "MultiHeadAttention")


class _Graph:
    """Producer / consumer / constant look-ups over one ``onnx.GraphProto``."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.init = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}

    def const(self, name: str) -> np.ndarray | None:
        if name in self.init:
            return numpy_helper.to_array(self.init[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Identity":  # the legacy exporter's shared initializers
            return self.const(node.input[0])
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def scalar(self, name: str) -> float | None:
        value = self.const(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        """The one node that reads ``name`` besides Shape nodes (exporters read shapes to build the next
        Reshape's target; once the chain is fused they are dead and pruned with it)."""
        users = [u for u in self.consumers.get(name, []) if u.op_type != "Shape"]
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def make(self, name: str) -> onnx.NodeProto | None:
        return self.producer.get(name)


def _perm(node: onnx.NodeProto) -> list[int] | None:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return None


def _strip_scale(g: _Graph, name: str) -> tuple[str, float]:
    """Follow Mul/Div by a scalar constant back from ``name``; the tensor before them and their product."""
    scale = 1.0
    while (node := g.make(name)) is not None and node.op_type in ("Mul", "Div"):
        a, b = node.input
        if (s := g.scalar(b)) is not None:
            scale, name = scale * (s if node.op_type == "Mul" else 1.0 / s), a
        elif node.op_type == "Mul" and (s := g.scalar(a)) is not None:
            scale, name = scale * s, b
        else:
            break
    return name, scale


def _heads_reshape(g: _Graph, name: str) -> tuple[str, int | None, int | None] | None:
    """``Reshape(x3d, [B, S, N, H])``: (x3d, N, H) with N / H when the shape says them (else None)."""
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
    heads, size = dims[2], dims[3]
    return node.input[0], (heads if heads > 0 else None), (size if size > 0 else None)


def _to_heads(g: _Graph, name: str) -> tuple[str, int | None, int | None] | None:
    """``Transpose(0,2,1,3)(Reshape(x3d, [B,S,N,H]))``: [B,N,S,H]."""
    node = g.make(name)
    if node is None or node.op_type != "Transpose" or _perm(node) != [0, 2, 1, 3]:
        return None
    return _heads_reshape(g, node.input[0])


def _key_transposed(g: _Graph, name: str) -> tuple[str, int | None, int | None, float] | None:
    """K as [B,N,H,S] from its projection, through any chain of Transposes and merge/split Reshapes
    whose composition is the transposition of the last two axes of [B,N,S,H]; scalar factors collected."""
    name, scale = _strip_scale(g, name)
    node = g.make(name)
    if node is None:
        return None
    if node.op_type == "Transpose" and _perm(node) == [0, 2, 3, 1]:  # straight from [B,S,N,H]
        found = _heads_reshape(g, node.input[0])
        return (*found, scale) if found else None
    if node.op_type == "Transpose" and _perm(node) == [0, 1, 3, 2]:
        inner, s = _strip_scale(g, node.input[0])
        found = _to_heads(g, inner)
        return (*found, scale * s) if found else None
    # dynamo: Reshape([B,N,H,S]) <- Transpose(0,2,1) <- Reshape([B*N,S,H]) <- [B,N,S,H]
    if node.op_type == "Reshape":
        tr = g.make(node.input[0])
        if tr is not None and tr.op_type == "Transpose" and _perm(tr) == [0, 2, 1]:
            merge = g.make(tr.input[0])
            if merge is not None and merge.op_type == "Reshape" and _merges_leading(g, merge.input[1]) \
                    and _splits_leading(g, node.input[1], merge.input[1]):
                inner, s = _strip_scale(g, merge.input[0])
                found = _to_heads(g, inner)
                return (*found, scale * s) if found else None
    return None


def _merges_leading(g: _Graph, shape_name: str) -> bool:
    """A 3-D shape ``[-1, S, H]``: batch and heads merged, the last two axes kept."""
    concat = g.make(shape_name)
    first = g.const(concat.input[0]) if concat is not None and concat.op_type == "Concat" else g.const(shape_name)
    if first is None:
        return False
    n = len(concat.input) if concat is not None and concat.op_type == "Concat" else first.size
    return n == 3 and int(first.reshape(-1)[0]) == -1


def _splits_leading(g: _Graph, shape_name: str, merged_shape: str) -> bool:
    """The shape after the transpose is [B, N, H, S]: it ends with the merged shape's last two entries
    swapped (the same tensors, so the same symbolic dims) after the leading [B, N]."""
    split, merged = g.make(shape_name), g.make(merged_shape)
    if split is None or merged is None or split.op_type != "Concat" or merged.op_type != "Concat":
        return False
    return len(split.input) >= 3 and list(split.input[-2:]) == [merged.input[2], merged.input[1]]


@dataclass
class _Match:
    softmax: onnx.NodeProto
    q: str
    k: str
    v: str
    heads: int
    scale: float
    bias: str  # additive attention bias, or ""
    output: str  # the [B, S, hidden] tensor the fused op writes


def _projection(g: _Graph, name: str) -> tuple[str, np.ndarray, np.ndarray | None] | None:
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


def _match(g: _Graph, softmax: onnx.NodeProto) -> _Match | None:
    axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
    if axis not in (-1, 3):
        return None
    # forward: [NaN guard] -> MatMul(P, V) -> Transpose(0,2,1,3) -> Reshape
    probs = softmax.output[0]
    users = g.consumers.get(probs, [])
    if len(users) == 2 and {u.op_type for u in users} == {"IsNaN", "Where"}:
        isnan = next(u for u in users if u.op_type == "IsNaN")
        where = next(u for u in users if u.op_type == "Where")
        zero = g.scalar(where.input[1])
        if list(where.input) != [isnan.output[0], where.input[1], probs] or zero != 0.0:
            return None
        probs = where.output[0]
    pv = g.only_consumer(probs)
    if pv is None or pv.op_type != "MatMul" or pv.input[0] != probs:
        return None
    tr = g.only_consumer(pv.output[0])
    if tr is not None and tr.op_type == "Reshape" and _heads_reshape(g, tr.output[0]) is not None:
        tr = g.only_consumer(tr.output[0])  # the legacy exporter re-states the [B, N, S, H] shape first
    if tr is None or tr.op_type != "Transpose" or _perm(tr) != [0, 2, 1, 3]:
        return None
    merge = g.only_consumer(tr.output[0])
    if merge is None or merge.op_type != "Reshape":
        return None
    # backward: [+ bias] <- [* c] <- MatMul(Q, K^T)
    scores, bias = softmax.input[0], ""
    node = g.make(scores)
    if node is not None and node.op_type == "Add":
        for i, j in ((0, 1), (1, 0)):
            inner = g.make(_strip_scale(g, node.input[i])[0])
            if inner is not None and inner.op_type == "MatMul":
                scores, bias = node.input[i], node.input[j]
                break
        else:
            return None
    scores, scale = _strip_scale(g, scores)
    qk = g.make(scores)
    if qk is None or qk.op_type != "MatMul":
        return None
    q_name, qs = _strip_scale(g, qk.input[0])
    q = _to_heads(g, q_name)
    k = _key_transposed(g, qk.input[1])
    v = _to_heads(g, pv.input[1])
    if q is None or k is None or v is None:
        return None
    known = {d for d in (q[1], k[1], v[1]) if d}
    sizes = {d for d in (q[2], k[2], v[2]) if d}
    hidden = _width(g, q[0])
    if len(known) > 1 or len(sizes) > 1 or hidden is None:
        return None
    heads = known.pop() if known else (hidden // sizes.pop() if sizes else None)
    if not heads or hidden % heads:
        return None
    return _Match(softmax, q[0], k[0], v[0], heads, scale * qs * k[3], bias, merge.output[0])


def _width(g: _Graph, name: str) -> int | None:
    """The last dimension of a projection's output (its weight's column count)."""
    proj = _projection(g, name)
    return int(proj[1].shape[1]) if proj else None


def _fuse_one(g: _Graph, m: _Match, index: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """The fused node (and the packed weights it needs) for one match."""
    projections = [_projection(g, t) for t in (m.q, m.k, m.v)]
    attrs = {"num_heads": m.heads, "scale": float(m.scale)}
    name = f"{m.softmax.name or 'softmax'}_fused_attention_{index}"
    same_input = all(p is not None for p in projections) and len({p[0] for p in projections}) == 1
    widths = {p[1].shape[1] for p in projections if p is not None}
    if same_input and len(widths) == 1:
        x = projections[0][0]
        dtype = projections[0][1].dtype
        weight = np.concatenate([p[1] for p in projections], axis=1).astype(dtype)
        bias = np.concatenate([p[2] if p[2] is not None else np.zeros(p[1].shape[1], dtype) for p in projections])
        w_name, b_name = f"{name}.qkv_weight", f"{name}.qkv_bias"
        inits = [numpy_helper.from_array(weight, w_name), numpy_helper.from_array(bias.astype(dtype), b_name)]
        inputs = [x, w_name, b_name, "", "", m.bias]
        node = helper.make_node("Attention", _trim(inputs), [m.output], name=name, domain=MS_DOMAIN, **attrs)
        return [node], inits, "Attention"
    inputs = [m.q, m.k, m.v, "", "", m.bias]
    node = helper.make_node("MultiHeadAttention", _trim(inputs), [m.output], name=name, domain=MS_DOMAIN, **attrs)
    return [node], [], "MultiHeadAttention"


def _trim(inputs: list[str]) -> list[str]:
    while inputs and not inputs[-1]:
        inputs.pop()
    return inputs


def _softmaxes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    yield from (n for n in list(graph.node) if n.op_type == "Softmax" and n.domain in ("", "ai.onnx"))


def fuse_attention(model: onnx.ModelProto) -> dict[str, int]:
    """Fuse every self-attention block of ``model`` in place; returns ``{fused op type: count}``.

    Nodes the fused ops replace are removed (with initializers nothing uses any more) and the graph is
    re-sorted. A model without a matching block is left unchanged.
    """
    from onnxruntime.transformers.onnx_model import OnnxModel

    g = _Graph(model.graph)
    matches = [m for s in _softmaxes(model.graph) if (m := _match(g, s)) is not None]
    counts: dict[str, int] = {}
    if not matches:
        return counts
    for index, m in enumerate(matches):
        nodes, inits, op = _fuse_one(g, m, index)
        old = g.producer[m.output]
        model.graph.node.remove(old)  # the output Reshape: its tensor is now written by the fused op
        model.graph.node.extend(nodes)
        model.graph.initializer.extend(inits)
        counts[op] = counts.get(op, 0) + 1
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    wrapped = OnnxModel(model)
    wrapped.prune_graph()
    wrapped.topological_sort()
    log.info("fused attention: %s", ", ".join(f"{n} {op}" for op, n in counts.items()))
    return counts
