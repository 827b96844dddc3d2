"""The tensors `qdq quantize` can put a Q/DQ on: the default set that `calibrate` observes.

The set is the union, over every target, of what the QDQ placement pass marks on the model with
every op type that has a quantization rule (``converter.quant.rules``). It is computed on the
graph only (no weights are read) and takes a fraction of a second.
"""
from __future__ import annotations

import logging

import onnx

log = logging.getLogger(__name__)


def quantizable_tensors(proto: onnx.ModelProto) -> list[str]:
    """Names of the activation tensors any target's QDQ placement needs a range for."""
    import onnx_ir as ir

    from ..passes import pipeline
    from ..passes.qdq_placement import QDQPlacementPass, required_tensors
    from ..quant.config import TARGETS, QuantConfig
    from ..quant.rules import RULES

    names: dict[str, None] = {}
    for target in TARGETS:
        config = QuantConfig(target=target, op_types=tuple(RULES))
        model = pipeline.preprocess(ir.from_proto(proto), config)
        QDQPlacementPass(config)(model)
        names.update(dict.fromkeys(required_tensors(model)))
    log.debug("%d quantizable tensors", len(names))
    return list(names)
