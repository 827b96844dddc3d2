"""Pack quantized weights into what ONNX Runtime runs, and build the replacement nodes.

``matmulnbits``: com.microsoft MatMulNBits. B is uint8 [N, ceil(K/G), G*bits/8] (for 4 bits, element
2j in the low nibble and 2j+1 in the high nibble of byte j; a last partial block padded with its
zero point), scales float [N * ceil(K/G)], zero points uint8 [N * ceil(ceil(K/G) * bits/8)] packed
the same way along the blocks of each column (omitted when symmetric: ONNX Runtime then uses 2^(bits-1)).

``qdq``: opset-21 block-wise DequantizeLinear (axis 0, block_size G) on an int4/int8 (symmetric) or
uint4/uint8 (asymmetric) weight [K, N] with scales [ceil(K/G), N], feeding the original MatMul.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx_ir as ir

from .quantizers import QuantizedWeight

MS_DOMAIN = "com.microsoft"


def _pack_nibbles(levels: np.ndarray) -> np.ndarray:
    """Pack uint8 values < 16 pairwise along the last axis (padding odd lengths), low nibble first."""
    if levels.shape[-1] % 2:
        levels = np.concatenate([levels, np.zeros((*levels.shape[:-1], 1), levels.dtype)], axis=-1)
    return (levels[..., 0::2] | (levels[..., 1::2] << 4)).astype(np.uint8)


def pack_matmulnbits(qw: QuantizedWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(B, scales, zero_points or None) in MatMulNBits' layout for W [N, K]."""
    n = qw.q.shape[0]
    levels = qw.padded_levels().reshape(n, qw.blocks, qw.group_size)
    if qw.bits == 4:
        packed = _pack_nibbles(levels)
        zp = None if qw.symmetric else _pack_nibbles(qw.zero_points).reshape(-1)
    elif qw.bits == 8:
        packed = levels.astype(np.uint8)
        zp = None if qw.symmetric else qw.zero_points.astype(np.uint8).reshape(-1)
    else:
        raise ValueError(f"MatMulNBits packing supports 4 and 8 bits, got {qw.bits}")
    return np.ascontiguousarray(packed), qw.scales.astype(np.float32).reshape(-1), zp


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def matmulnbits_node(
    graph: ir.Graph, activation: ir.Value, qw: QuantizedWeight, prefix: str, accuracy_level: int = 0
) -> ir.Node:
    """A MatMulNBits node computing activation @ Wᵀ, with its weights registered as initializers."""
    n, k = qw.q.shape
    packed, scales, zp = pack_matmulnbits(qw)
    inputs = [activation, _initializer(graph, f"{prefix}_Q{qw.bits}", packed), _initializer(graph, f"{prefix}_scales", scales)]
    if zp is not None:
        inputs.append(_initializer(graph, f"{prefix}_zero_points", zp))
    attrs = {"K": k, "N": n, "bits": qw.bits, "block_size": qw.group_size}
    if accuracy_level:
        attrs["accuracy_level"] = accuracy_level
    return ir.node("MatMulNBits", inputs, attrs, domain=MS_DOMAIN, name=f"{prefix}_MatMulNBits")


def blockwise_dq_nodes(
    graph: ir.Graph, activation: ir.Value, qw: QuantizedWeight, prefix: str
) -> tuple[ir.Node, ir.Node]:
    """DequantizeLinear(axis=0, block_size=G) of the [K, N] weight, then MatMul."""
    mid = 2 ** (qw.bits - 1)
    if qw.symmetric:
        dtype = ml_dtypes.int4 if qw.bits == 4 else np.int8
        data = (qw.q.astype(np.int16) - mid).T.astype(dtype)
        zp = None
    else:
        dtype = ml_dtypes.uint4 if qw.bits == 4 else np.uint8
        data = qw.q.T.astype(dtype)
        zp = qw.zero_points.T.astype(dtype)
    inputs = [_initializer(graph, f"{prefix}_q{qw.bits}", np.ascontiguousarray(data)),
              _initializer(graph, f"{prefix}_scale", np.ascontiguousarray(qw.scales.T.astype(np.float32)))]
    if zp is not None:
        inputs.append(_initializer(graph, f"{prefix}_zero_point", np.ascontiguousarray(zp)))
    dq = ir.node("DequantizeLinear", inputs, {"axis": 0, "block_size": qw.group_size}, name=f"{prefix}_DequantizeLinear")
    mm = ir.node("MatMul", [activation, dq.outputs[0]], name=f"{prefix}_MatMul")
    return dq, mm
