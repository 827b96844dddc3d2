"""The quantization pass pipeline: preprocess -> SmoothQuant -> QDQ placement -> Q/DQ insertion.

It composes ``converter.passes`` and ``converter.smoothquant`` (which sit below it) and answers which
tensors that pipeline quantizes, the set ``calibrate`` observes by default.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import onnx_ir as ir
import numpy as np
import onnx
from onnx_ir.passes.common import (
    LiftConstantsToInitializersPass,
    RemoveUnusedNodesPass,
    ShapeInferencePass,
    TopologicalSortPass,
)

from .calib.table import CalibrationError, CalibrationTable
from .passes._utils import run_passes
from .passes.cleanup import StripNanGuardsPass
from .passes.embeddings import QuantizeEmbeddingsPass
from .passes.fold_batchnorm import FoldBatchNormPass
from .passes.fold_weights import FoldWeightTransposePass
from .passes.global_pool import GlobalPoolPass
from .passes.hard_activations import HardActivationsPass
from .passes.insert_qdq import InsertQDQPass
from .passes.ort_cpu import ResidualSumPass
from .passes.qdq_placement import QDQPlacementPass, needed_tensors
from .quant.config import TARGETS, QuantConfig
from .quant.rules import RULES
from .smoothquant.smoothing import smooth

__all__ = ["preprocess", "smooth", "insert_qdq", "quantizable_tensors", "run_passes"]

log = logging.getLogger(__name__)



def preprocess(model: ir.Model, config: QuantConfig) -> ir.Model:
    """Cleanups that keep the float function: constants as initializers, transposed weights and
    Conv-BatchNormalization folded, NaN guards, dead nodes."""
    passes = [LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=16), FoldWeightTransposePass(),
              FoldBatchNormPass(), ShapeInferencePass(strict_mode=False)]  # element types of intermediate values
    if config.strip_nan_guards:
        passes.append(StripNanGuardsPass())
    if config.profile.residual_sum and config.avoid_skip_layernorm:
        passes.append(ResidualSumPass())
    if config.profile.hard_activations_as_conv:
        passes.append(HardActivationsPass(config))
    if config.profile.reduce_mean_as_pool:
        passes.append(GlobalPoolPass())
    passes += [RemoveUnusedNodesPass(), TopologicalSortPass()]
    return run_passes(passes, model)


def insert_qdq(model: ir.Model, table: CalibrationTable, config: QuantConfig,
               hessians: Mapping[str, np.ndarray] | None = None) -> ir.Model:
    """Mark placements and insert Q/DQ nodes from ``table`` (``hessians``: per-layer input statistics
    for output-aware weight rounding, by node name)."""
    passes = [QDQPlacementPass(config), InsertQDQPass(table, config, hessians)]
    if config.quantize_embeddings:
        passes.append(QuantizeEmbeddingsPass(config))
    return run_passes(passes + [RemoveUnusedNodesPass(), TopologicalSortPass()], model)


def quantizable_tensors(proto: onnx.ModelProto, base_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the activation tensors any target's QDQ placement needs a range for: the union, over
    every target, of what placement marks with every op type that has a quantization rule. Nothing
    runs (the passes read a few constants, e.g. to recognise attention-mask guards).

    ``base_dir``: the model's folder, where weights stored as external data are found.
    """
    names: dict[str, None] = {}
    for target in TARGETS:
        config = QuantConfig(target=target, op_types=tuple(RULES))
        model = ir.from_proto(proto)
        if base_dir is not None:
            ir.external_data.set_base_dir(model.graph, base_dir)
        try:
            model = preprocess(model, config)
        except OSError as exc:  # a constant the passes read lives in an external file that is not there
            raise CalibrationError(f"cannot read the model's external weights ({exc}); pass the model's path "
                                   f"with its data files beside it") from None
        names.update(dict.fromkeys(needed_tensors(model, config)))
    log.debug("%d quantizable tensors", len(names))
    return list(names)
