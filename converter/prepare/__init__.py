"""Preparation of ONNX files other exporters wrote (paddle2onnx, tf2onnx, old model-zoo files), before
calibration and quantization: initializers listed as graph inputs become constants, opsets below 13 are
upgraded. Each step is its own module; ``prepare_proto`` runs them on a ModelProto in place.
"""
from __future__ import annotations

import onnx
import onnx_ir as ir

from .initializer_inputs import drop_initializer_inputs
from .opset import MIN_OPSET, default_opset, upgrade_opset

__all__ = ["MIN_OPSET", "default_opset", "drop_initializer_inputs", "needs_preparation", "prepare_proto",
           "upgrade_opset"]


def needs_preparation(model: onnx.ModelProto | ir.Model) -> bool:
    """True when ``prepare_proto`` would change ``model`` (a ModelProto, or an onnx-ir model: checked
    without serializing it)."""
    if isinstance(model, ir.Model):
        return model.opset_imports.get("", 1) < MIN_OPSET or any(v.is_initializer() for v in model.graph.inputs)
    inits = {t.name for t in model.graph.initializer}
    return default_opset(model) < MIN_OPSET or any(i.name in inits for i in model.graph.input)


def prepare_proto(proto: onnx.ModelProto, label: str = "model") -> onnx.ModelProto:
    """``proto`` ready for qdq: initializer inputs dropped (in place), opset upgraded (a new proto when it
    was below 13). Raises ``OpsetUpgradeError`` naming the op that could not be converted."""
    drop_initializer_inputs(proto, label)
    return upgrade_opset(proto, MIN_OPSET, label)
