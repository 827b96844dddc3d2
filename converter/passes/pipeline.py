"""The quantization pass pipeline: preprocess -> SmoothQuant -> QDQ placement -> Q/DQ insertion."""
from __future__ import annotations

import copy
import logging
from collections.abc import Mapping

import onnx_ir as ir
from onnx_ir.passes import PassError, PassManager
from onnx_ir.passes.common import (
    LiftConstantsToInitializersPass,
    RemoveUnusedNodesPass,
    ShapeInferencePass,
    TopologicalSortPass,
)

from ..calib.table import CalibrationTable
from ..quant.config import QuantConfig
from .cleanup import StripNanGuardsPass
from .embeddings import QuantizeEmbeddingsPass
from .fold_weights import FoldWeightTransposePass
from .global_pool import GlobalPoolPass
from .hard_activations import HardActivationsPass
from .insert_qdq import InsertQDQPass
from .ort_cpu import ResidualSumPass
from .qdq_placement import QDQPlacementPass
from ..smoothquant.smoothing import SmoothQuantPass

log = logging.getLogger(__name__)



def preprocess(model: ir.Model, config: QuantConfig) -> ir.Model:
    """Cleanups that keep the float function: constants as initializers, transposed weights folded, NaN
    guards, dead nodes."""
    passes = [LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=16), FoldWeightTransposePass(),
              ShapeInferencePass(strict_mode=False)]  # element types of intermediate values
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


def run_passes(passes: list, model: ir.Model) -> ir.Model:
    """Run passes in order; errors raised inside a pass surface as themselves, not as PassError."""
    try:
        return PassManager(passes)(model).model
    except PassError as exc:
        cause = exc
        while isinstance(cause, PassError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if cause is exc:
            raise
        raise cause from None


def smooth(model: ir.Model, table: CalibrationTable, config: QuantConfig,
           alphas: float | Mapping[str, float | None] | None) -> tuple[ir.Model, CalibrationTable]:
    """Apply SmoothQuant (no-op when ``alphas`` is None); returns the model and the updated table copy."""
    table = copy_table(table)
    if alphas is None:
        return model, table
    model = run_passes([SmoothQuantPass(table, alphas, config), TopologicalSortPass()], model)
    return model, table


def insert_qdq(model: ir.Model, table: CalibrationTable, config: QuantConfig,
               hessians: Mapping[str, "np.ndarray"] | None = None) -> ir.Model:
    """Mark placements and insert Q/DQ nodes from ``table`` (``hessians``: per-layer input statistics
    for output-aware weight rounding, by node name)."""
    passes = [QDQPlacementPass(config), InsertQDQPass(table, config, hessians)]
    if config.quantize_embeddings:
        passes.append(QuantizeEmbeddingsPass(config))
    return run_passes(passes + [RemoveUnusedNodesPass(), TopologicalSortPass()], model)


def copy_table(table: CalibrationTable) -> CalibrationTable:
    """A copy whose dicts can be changed without touching the caller's table."""
    return CalibrationTable(tensors=dict(table.tensors), channel_absmax=dict(table.channel_absmax),
                            channel_mean=dict(table.channel_mean),
                            meta=copy.deepcopy(table.meta))
