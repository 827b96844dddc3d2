"""INT8 KV cache: an exported LM whose past/present keys and values are int8 with per-token, per-head scales.

    from converter.llm.kv_int8 import quantize_kv_cache
    quantize_kv_cache("lm.onnx", "lm.kv8.onnx")

Each ``past_key_values.{i}.key/value`` input [batch, kv_heads, past, head_dim] becomes int8, with a
float companion ``past_key_values.{i}.key_scale`` [batch, kv_heads, past, 1]; inside the graph they are
dequantized (``Cast * scale``) where the float past was used. Each ``present.{i}.key/value`` output is
quantized symmetrically with one scale per token and head (``max |x| / 127`` over head_dim) and returned
as int8 plus ``present.{i}.key_scale``. Where the present is ``Concat(past, new)`` (as ``qdq export-lm``
writes it) only the new tokens are quantized and appended to the int8 past, so a decode step quantizes one
token, and the past's integers are passed through unchanged; elsewhere the whole present is re-quantized
(which reproduces the past's integers: each token's largest element sits on +-127). Attention in the step
that computes a token uses its float key and value; later steps read them from the int8 cache. The cache a decoder
keeps between steps shrinks from 4 bytes to 1 + 4/head_dim bytes per element (3.8x at head_dim 64).
``runtime.generate`` feeds the scales back with the caches.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from ..onnx_files import write_onnx
from .config import WeightQuantError
from .memory_budget import check_memory, onnx_weight_bytes
from .weight_only import load_model

log = logging.getLogger(__name__)

KV_CACHE_KEY = "qdq.kv_cache"
SCALE_SUFFIX = "_scale"
_PAST = re.compile(r"^past_key_values\.\d+\.(key|value)$")
_PRESENT = re.compile(r"^present\.\d+\.(key|value)$")
QMAX = 127.0
MIN_SCALE = 1e-12  # an all-zero row (padding) keeps a finite scale


@dataclass(frozen=True)
class KVCacheResult:
    """Where the model went and how many cache tensors became int8."""

    path: Path
    pasts: int
    presents: int


def _const(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def _scale_shape(shape: ir.Shape | None) -> ir.Shape | None:
    return None if shape is None or len(shape) != 4 else ir.Shape([*list(shape)[:3], 1])


def _dequantize_past(graph: ir.Graph, index: int) -> tuple[ir.Value, ir.Value]:
    """Input ``index`` (float past) -> int8 input + scale input, dequantized where the float one was used."""
    old = graph.inputs[index]
    name = old.name
    old.name = f"{name}/float"
    q = ir.Value(name=name, type=ir.TensorType(ir.DataType.INT8), shape=old.shape)
    scale = ir.Value(name=name + SCALE_SUFFIX, type=ir.TensorType(ir.DataType.FLOAT), shape=_scale_shape(old.shape))
    cast = ir.node("Cast", [q], attributes={"to": ir.DataType.FLOAT}, name=f"{name}/Cast")
    mul = ir.node("Mul", [cast.outputs[0], scale], name=f"{name}/Dequantize")
    old.replace_all_uses_with(mul.outputs[0])
    mul.outputs[0].name, mul.outputs[0].type, mul.outputs[0].shape = f"{name}/dequantized", old.type, old.shape
    graph.inputs[index] = q
    graph.inputs.insert(index + 1, scale)
    graph.insert_before(graph.node(0), [cast, mul])
    return q, scale


def _appended_past(present: ir.Value, pasts: dict[str, ir.Value]) -> tuple[str, ir.Value, int] | None:
    """``(past name, new tokens, axis)`` when ``present`` is ``Concat(past, new)`` along the sequence axis."""
    node = present.producer()
    if node is None or node.op_type != "Concat" or len(node.inputs) != 2 or node.inputs[0] is None:
        return None
    axis = node.attributes.get_int("axis", 0)
    past = node.inputs[0].name
    if past not in pasts or axis not in (2, -2):
        return None
    return past, node.inputs[1], axis


def _quantize(x: ir.Value, name: str, consts: dict[str, ir.Value]) -> tuple[list[ir.Node], ir.Value, ir.Value]:
    """Nodes quantizing ``x`` per token and head: (nodes, int8 values, scales [..., 1])."""
    nodes = [ir.node("Abs", [x], name=f"{name}/Abs")]
    nodes.append(ir.node("ReduceMax", [nodes[-1].outputs[0], consts["axes"]], attributes={"keepdims": 1},
                         name=f"{name}/Max"))
    nodes.append(ir.node("Div", [nodes[-1].outputs[0], consts["qmax"]], name=f"{name}/ScaleRaw"))
    nodes.append(ir.node("Max", [nodes[-1].outputs[0], consts["floor"]], name=f"{name}/Scale"))
    scale = nodes[-1].outputs[0]
    nodes.append(ir.node("Div", [x, scale], name=f"{name}/Divide"))
    nodes.append(ir.node("Round", [nodes[-1].outputs[0]], name=f"{name}/Round"))
    nodes.append(ir.node("Clip", [nodes[-1].outputs[0], consts["qmin"], consts["qmax"]], name=f"{name}/Clip"))
    nodes.append(ir.node("Cast", [nodes[-1].outputs[0]], attributes={"to": ir.DataType.INT8}, name=f"{name}/Cast"))
    return nodes, nodes[-1].outputs[0], scale


def _quantize_present(graph: ir.Graph, index: int, consts: dict[str, ir.Value],
                      pasts: dict[str, tuple[ir.Value, ir.Value]], appended: tuple[str, ir.Value, int] | None) -> None:
    """Output ``index`` (float present) -> int8 output + per-token, per-head scale output."""
    old = graph.outputs[index]
    name = old.name
    old.name = f"{name}/float"
    if appended is not None:  # int8 past ++ quantized new tokens
        past, new, axis = appended
        nodes, q_new, s_new = _quantize(new, name, consts)
        past_q, past_scale = pasts[past]
        nodes.append(ir.node("Concat", [past_q, q_new], attributes={"axis": axis}, name=f"{name}/Concat"))
        nodes.append(ir.node("Concat", [past_scale, s_new], attributes={"axis": axis}, name=f"{name}/ConcatScale"))
        q, scale = nodes[-2].outputs[0], nodes[-1].outputs[0]
    else:
        nodes, q, scale = _quantize(old, name, consts)
    q.name, q.type, q.shape = name, ir.TensorType(ir.DataType.INT8), old.shape
    scale.name, scale.type, scale.shape = name + SCALE_SUFFIX, ir.TensorType(ir.DataType.FLOAT), _scale_shape(old.shape)
    graph.outputs[index] = q
    graph.outputs.insert(index + 1, scale)
    graph.extend(nodes)


def quantize_kv_cache(model: str | os.PathLike[str], output: str | os.PathLike[str]) -> KVCacheResult:
    """Write a copy of an exported KV-cache LM (fp32 or weight-quantized) whose cache is int8 (see module doc)."""
    if not isinstance(model, ir.Model):
        check_memory("quantize-kv", onnx_weight_bytes(model), str(model))
    ir_model = load_model(model)
    graph = ir_model.graph
    if ir_model.metadata_props.get(KV_CACHE_KEY) == "int8":
        raise WeightQuantError(f"{model}: its KV cache is already int8")
    pasts = [i for i, v in enumerate(graph.inputs) if _PAST.match(v.name or "")]
    presents = [i for i, v in enumerate(graph.outputs) if _PRESENT.match(v.name or "")]
    if not pasts or len(pasts) != len(presents):
        raise WeightQuantError(f"{model} has no past_key_values.N.key/value inputs with matching present.N outputs; "
                               "export it with qdq export-lm")
    past_names = {graph.inputs[i].name: graph.inputs[i] for i in pasts}
    appended = {i: _appended_past(graph.outputs[i], past_names) for i in presents}
    quantized: dict[str, tuple[ir.Value, ir.Value]] = {}
    for i in reversed(pasts):  # inserting scale inputs shifts later indices
        if graph.inputs[i].dtype != ir.DataType.FLOAT:
            raise WeightQuantError(f"{graph.inputs[i].name} is {graph.inputs[i].dtype}, expected a float cache")
        name = graph.inputs[i].name
        quantized[name] = _dequantize_past(graph, i)
    consts = {"axes": _const(graph, "kv_int8/axes", np.array([-1], np.int64)),
              "qmax": _const(graph, "kv_int8/qmax", np.array(QMAX, np.float32)),
              "qmin": _const(graph, "kv_int8/qmin", np.array(-QMAX, np.float32)),
              "floor": _const(graph, "kv_int8/min_scale", np.array(MIN_SCALE, np.float32))}
    for i in reversed(presents):
        _quantize_present(graph, i, consts, quantized, appended[i])
    ir_model.metadata_props[KV_CACHE_KEY] = "int8"
    held = [ir_model]
    npast, npresent, nappended = len(pasts), len(presents), sum(a is not None for a in appended.values())
    del ir_model, graph, quantized, past_names, appended, consts
    path = write_onnx(held.pop, output)
    log.info("int8 KV cache: %d past inputs, %d present outputs (%d appended in int8) -> %s", npast,
             npresent, nappended, path)
    return KVCacheResult(Path(path), npast, npresent)


__all__ = ["KV_CACHE_KEY", "KVCacheResult", "quantize_kv_cache"]
