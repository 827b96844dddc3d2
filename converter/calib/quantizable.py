"""The tensors `qdq quantize` can put a Q/DQ on: the default set that `calibrate` observes.

The set is the union, over every target, of what the QDQ placement pass marks on the model with
every op type that has a quantization rule (``converter.quant.rules``). Nothing runs: it takes a
fraction of a second (the passes read a few constants, e.g. to recognise attention-mask guards).
"""
from __future__ import annotations

import logging
import os

import onnx

from .table import CalibrationError

log = logging.getLogger(__name__)


def quantizable_tensors(proto: onnx.ModelProto, base_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the activation tensors any target's QDQ placement needs a range for.

    ``base_dir``: the model's folder, where weights stored as external data are found.
    """
    import onnx_ir as ir

    from ..passes import pipeline
    from ..passes.qdq_placement import needed_tensors
    from ..quant.config import TARGETS, QuantConfig
    from ..quant.rules import RULES

    names: dict[str, None] = {}
    for target in TARGETS:
        config = QuantConfig(target=target, op_types=tuple(RULES))
        model = ir.from_proto(proto)
        if base_dir is not None:
            ir.external_data.set_base_dir(model.graph, base_dir)
        try:
            model = pipeline.preprocess(model, config)
        except OSError as exc:  # a constant the passes read lives in an external file that is not there
            raise CalibrationError(f"cannot read the model's external weights ({exc}); pass the model's path "
                                   f"with its data files beside it") from None
        names.update(dict.fromkeys(needed_tensors(model, config)))
    log.debug("%d quantizable tensors", len(names))
    return list(names)
