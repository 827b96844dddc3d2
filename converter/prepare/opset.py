"""Opsets below 13 (paddle2onnx, tf2onnx and old zoo files write 9-11): per-axis QuantizeLinear/
DequantizeLinear need 13, so the model is upgraded with ``onnx.version_converter`` first."""
from __future__ import annotations

import logging
import re

import onnx

from converter.errors import ConverterError

log = logging.getLogger(__name__)

MIN_OPSET = 13  # per-axis QuantizeLinear / DequantizeLinear


class OpsetUpgradeError(ConverterError):
    """The model's opset is too old and onnx.version_converter cannot upgrade one of its ops."""


def default_opset(proto: onnx.ModelProto) -> int:
    """The model's ai.onnx opset version (1 when it imports none)."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)


def _failed_op(message: str, proto: onnx.ModelProto) -> str:
    """The op (and a node of that type) a version_converter message is about, as well as it can be told."""
    ops = {n.op_type: n.name for n in proto.graph.node}
    for op in re.findall(r"[A-Z][A-Za-z0-9]+", message):
        if op in ops:
            return f"{op} node {ops[op]!r}" if ops[op] else f"{op} node"
    return "an op"


def upgrade_opset(proto: onnx.ModelProto, target: int = MIN_OPSET, label: str = "model") -> onnx.ModelProto:
    """``proto`` converted to opset ``target`` when its opset is lower (one log line), else ``proto``."""
    opset = default_opset(proto)
    if opset >= target:
        return proto
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(proto, target)
    except Exception as exc:  # the C++ converter raises RuntimeError/ValidationError with a message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OpsetUpgradeError(
            f"{label}: opset {opset} cannot be upgraded to {target} (needed for per-channel Q/DQ): "
            f"onnx.version_converter fails on {_failed_op(str(exc), proto)} ({first[:160]}); re-export with "
            f"opset >= {target}") from None
    upgraded.ir_version = max(upgraded.ir_version, 7)
    log.warning("%s: opset %d upgraded to %d with onnx.version_converter (Q/DQ needs opset >= %d)",
                label, opset, target, target)
    return upgraded
