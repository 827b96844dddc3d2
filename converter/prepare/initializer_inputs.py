"""Initializers that are also listed as graph inputs (IR version < 4 exporters: old paddle2onnx, caffe2,
early model-zoo files). ONNX Runtime then treats them as overridable feeds: no constant folding, no
weight for placement to quantize, and a user-facing input list full of weights. They become constants."""
from __future__ import annotations

import logging

import onnx

log = logging.getLogger(__name__)


def drop_initializer_inputs(proto: onnx.ModelProto, label: str = "model") -> int:
    """Remove graph inputs that name an initializer (in place); returns how many were removed."""
    inits = {t.name for t in proto.graph.initializer}
    keep = [vi for vi in proto.graph.input if vi.name not in inits]
    dropped = len(proto.graph.input) - len(keep)
    if dropped:
        del proto.graph.input[:]
        proto.graph.input.extend(keep)
        if proto.ir_version < 4:
            proto.ir_version = 4  # from IR 4 on, initializers need not be inputs
        log.warning("%s: %d initializer(s) were also graph inputs; treated as constants (inputs now: %s)",
                 label, dropped, ", ".join(vi.name for vi in keep) or "none")
    return dropped
