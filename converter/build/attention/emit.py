"""The ``com.microsoft`` node (and the few helper nodes and packed weights) that replace one matched core."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import Graph
from .layout import Operand, projection
from .scores import Context, Term

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class Match:
    softmax: onnx.NodeProto
    context: Context
    q: Operand
    k: Operand
    v: Operand
    per_head: bool  # K and V given as [B,N,S,H] (rotary / repeated KV heads); else all three [B,S,N*H]
    exclusive: bool  # nothing else reads Q, K or V on their way from the projections (else packing them repeats work)
    heads: int
    scale: float
    biases: tuple[Term, ...]


@dataclass
class Emitted:
    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    op: str
    removes: onnx.NodeProto | None  # the merge Reshape, when the fused op writes its output itself


def emit(g: Graph, m: Match, index: int) -> Emitted:
    """Nodes for one match: packed ``Attention`` when Q, K and V are projections of one tensor by weights of
    one width, else ``MultiHeadAttention``; the additive terms summed into its ``attention_bias``."""
    name = f"{m.softmax.name or 'softmax'}_fused_attention_{index}"
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    bias = _sum(g, m.biases, name, nodes, inits)
    output, removes = _output(g, m.context, name)
    attrs = {"num_heads": m.heads, "scale": float(m.scale)}
    projections = [projection(g, o.bsd) if o.bsd else None for o in (m.q, m.k, m.v)]
    same_input = not m.per_head and all(projections) and len({p[0] for p in projections}) == 1 and m.exclusive
    if same_input and len({p[1].shape[1] for p in projections}) == 1:
        x, dtype = projections[0][0], projections[0][1].dtype
        weight = np.concatenate([p[1] for p in projections], axis=1).astype(dtype)
        packed = np.concatenate([p[2] if p[2] is not None else np.zeros(p[1].shape[1], dtype) for p in projections])
        w_name, b_name = f"{name}.qkv_weight", f"{name}.qkv_bias"
        inits += [numpy_helper.from_array(weight, w_name), numpy_helper.from_array(packed.astype(dtype), b_name)]
        nodes.append(helper.make_node("Attention", _trim([x, w_name, b_name, "", "", bias]), [output], name=name,
                                      domain=MS_DOMAIN, **attrs))
        return Emitted(nodes, inits, "Attention", removes)
    if m.per_head:
        query = m.q.bsd or _merge_heads(m.q.bnsh, name, nodes)
        inputs = [query, m.k.bnsh, m.v.bnsh]
    else:
        inputs = [m.q.bsd, m.k.bsd, m.v.bsd]
    nodes.append(helper.make_node("MultiHeadAttention", _trim([*inputs, "", "", bias]), [output], name=name,
                                  domain=MS_DOMAIN, **attrs))
    return Emitted(nodes, inits, "MultiHeadAttention", removes)


def _sum(g: Graph, terms: tuple[Term, ...], name: str, nodes: list[onnx.NodeProto],
         inits: list[onnx.TensorProto]) -> str:
    """One tensor for the additive terms (broadcast [B|1, N|1, S, T] each): Add nodes when there are several."""
    total = ""
    for i, term in enumerate(terms):
        value = term.tensor
        if term.fill:  # masked fill -> additive: Where(cond, 0, fill) or Where(cond, fill, 0)
            zero = f"{name}.zero_{i}"
            inits.append(numpy_helper.from_array(np.zeros((), g.const(term.fill).dtype), zero))
            value = f"{name}.mask_{i}"
            branches = [term.fill, zero] if term.fill_first else [zero, term.fill]
            nodes.append(helper.make_node("Where", [term.tensor, *branches], [value], name=value))
        if term.reshape:
            nodes.append(helper.make_node("Reshape", [value, term.reshape], [f"{name}.split_{i}"],
                                          name=f"{name}.split_{i}"))
            value = f"{name}.split_{i}"
        if total:
            nodes.append(helper.make_node("Add", [total, value], [f"{name}.bias_{i}"], name=f"{name}.bias_{i}"))
            value = f"{name}.bias_{i}"
        total = value
    return total


def _merge_heads(bnsh: str, name: str, nodes: list[onnx.NodeProto]) -> str:
    """[B,N,S,H] -> [B,S,N*H]: the query layout MultiHeadAttention takes."""
    shape = f"{name}.bsd_shape"
    nodes.append(helper.make_node("Constant", [], [shape], name=shape,
                                  value=numpy_helper.from_array(np.array([0, 0, -1], np.int64))))
    nodes.append(helper.make_node("Transpose", [bnsh], [f"{name}.q_bsnh"], name=f"{name}.q_bsnh", perm=[0, 2, 1, 3]))
    nodes.append(helper.make_node("Reshape", [f"{name}.q_bsnh", shape], [f"{name}.q_bsd"], name=f"{name}.q_bsd"))
    return f"{name}.q_bsd"


def _output(g: Graph, ctx: Context, name: str) -> tuple[str, onnx.NodeProto | None]:
    """The fused op writes [B, S, N*H]: the merge Reshape's own output when that is 3-D (the Reshape goes),
    else a new tensor the Reshape now reads (GPT-2 merges to [B*S, N*H] for its Gemm)."""
    if _rank(g, ctx.merge) == 3:
        return ctx.merge.output[0], ctx.merge
    out = f"{name}.output"
    ctx.merge.input[0] = out
    return out, None


def _rank(g: Graph, reshape: onnx.NodeProto) -> int | None:
    dims = g.dims(reshape.output[0])
    if dims is not None:
        return len(dims)
    shape = g.const(reshape.input[1])
    if shape is not None:
        return int(shape.size)
    concat = g.make(reshape.input[1])
    if concat is not None and concat.op_type == "Concat" and all(
            (c := g.const(i)) is not None and c.size == 1 or g.dims(i) == [1] for i in concat.input):
        return len(concat.input)
    return None


def _trim(inputs: list[str]) -> list[str]:
    while inputs and not inputs[-1]:
        inputs.pop()
    return inputs
