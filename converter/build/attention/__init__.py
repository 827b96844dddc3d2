"""Fuse exported attention into ONNX Runtime's ``com.microsoft`` Attention / MultiHeadAttention.

onnxruntime.transformers' optimizer fuses LayerNorm, SkipLayerNorm and Gelu in our exports but not their
attention: torch's dynamo exporter writes it as its own pattern (the scale split as ``sqrt(scale)`` on Q
and on K, K transposed through a 3-D reshape, the padding mask as an additive ``Where(mask, 0, -inf)``, a
``Where(IsNaN(softmax), 0, softmax)`` guard), which ORT's pattern matcher does not recognise. This pass
matches the attention *core* around each Softmax instead of one exporter's spelling (``scores.py``):

    Q [B,N,S,H] --[* c]--.
    Kᵀ [B,N,H,T] -[* c]-- MatMul [* c] [+ bias₁ + bias₂ ...] -> Softmax -> [NaN guard] -> MatMul(P, V [B,N,T,H])
                                                                -> Transpose(0,2,1,3) -> Reshape [B,S,N*H]

and traces Q, K and V back (``layout.py``): to a [B,S,N*H] tensor reshaped to heads when there is one
(a projection; GPT-2's split of a packed one), else to the per-head tensor itself (after rotary
embeddings, or K/V heads repeated for grouped-query attention). Q, K and V projected from one tensor by
constant weights of one width become one ``Attention`` (packed QKV GEMM, the op ORT's own BERT fusion
emits); otherwise ``MultiHeadAttention`` (``emit.py``), with K and V per head ([B,N,T,H]) where that is
all the graph has. The scalar factors multiply into the op's ``scale`` (T5: 1.0); the additive terms
(padding or causal mask, relative-position bias) are summed into its ``attention_bias``. Every K layout is
checked by the permutation it composes to, so a chain that is not a transpose of the last two axes is left
alone. The build verifies the fused graph against the original on CPU (both ops have CPU kernels) before
anything is written.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

import onnx
from onnx import helper

from .emit import MS_DOMAIN, Match, emit
from .graph import Graph, exclusive, strip_scale
from .layout import head_operand, key_operand, width
from .scores import context, scores

log = logging.getLogger(__name__)

FUSED_OPS = ("Attention", "MultiHeadAttention")
__all__ = ["FUSED_OPS", "MS_DOMAIN", "fuse_attention"]


def _match(g: Graph, softmax: onnx.NodeProto) -> Match | None:
    ctx, sc = context(g, softmax), scores(g, softmax)
    if ctx is None or sc is None:
        return None
    q_name, qs = strip_scale(g, sc.qk.input[0])
    q = head_operand(g, q_name)
    found = key_operand(g, sc.qk.input[1])
    v = head_operand(g, ctx.pv.input[1])
    if found is None:
        return None
    k, ks = found
    if q.bsd and k.bsd and v.bsd and v.bsd_scale == 1.0:
        per_head, scale = False, sc.scale * qs * ks * q.bsd_scale * k.bsd_scale
    elif k.bnsh and v.bnsh:
        per_head, scale = True, sc.scale * qs * ks * (q.bsd_scale if q.bsd else 1.0)
    else:
        return None
    known = {d for d in (q.heads, k.heads, v.heads) if d}
    sizes = {d for d in (q.size, k.size, v.size) if d}
    if len(known) > 1 or len(sizes) > 1:
        return None  # K/V with fewer heads than Q (grouped-query attention not repeated): not MultiHeadAttention
    hidden = width(g, q.bsd) if q.bsd else (known and sizes and next(iter(known)) * next(iter(sizes)))
    heads = next(iter(known)) if known else (hidden // next(iter(sizes)) if hidden and sizes else None)
    if not heads or not hidden or hidden % heads:
        return None
    for term in sc.biases:  # attention_bias is 4-D, broadcast over batch and heads only
        dims = [0] * 4 if term.reshape else g.dims(term.tensor)
        if (dims is None and len(sc.biases) > 1) or (dims is not None and (len(dims) != 4 or 1 in dims[2:])):
            return None  # (the bias must have the scores' query and key lengths; a recorded 1 broadcasts)
    private = not per_head and exclusive(g, q.bsd, sc.qk.input[0]) and exclusive(g, k.bsd, sc.qk.input[1]) \
        and exclusive(g, v.bsd, ctx.pv.input[1])
    return Match(softmax, ctx, q, k, v, per_head, private, heads, scale, sc.biases)


def _softmaxes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    yield from (n for n in list(graph.node) if n.op_type == "Softmax" and n.domain in ("", "ai.onnx"))


def fuse_attention(model: onnx.ModelProto) -> dict[str, int]:
    """Fuse every attention core of ``model`` in place; returns ``{fused op type: count}``.

    Nodes the fused ops replace are removed (with initializers nothing uses any more) and the graph is
    re-sorted. A model without a matching block is left unchanged.
    """
    from onnxruntime.transformers.onnx_model import OnnxModel

    g = Graph(model.graph)
    matches = [m for s in _softmaxes(model.graph) if (m := _match(g, s)) is not None]
    counts: dict[str, int] = {}
    if not matches:
        return counts
    for index, m in enumerate(matches):
        fused = emit(g, m, index)
        if fused.removes is not None:
            model.graph.node.remove(fused.removes)  # its tensor is now written by the fused op
        model.graph.node.extend(fused.nodes)
        model.graph.initializer.extend(fused.initializers)
        counts[fused.op] = counts.get(fused.op, 0) + 1
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    wrapped = OnnxModel(model)
    wrapped.prune_graph()
    wrapped.topological_sort()
    log.info("fused attention: %s", ", ".join(f"{n} {op}" for op, n in counts.items()))
    return counts
