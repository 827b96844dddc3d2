"""SmoothQuant inside ``converter.quantize``: choose alphas, leave hopeless layers float, smooth, re-measure.

``apply`` is the one step ``quantize`` calls between calibration and Q/DQ insertion, for the encoder
path (``qdq quantize --smoothquant``) and the LM W8A8 path (``converter.llm.w8a8``) alike.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from ..calib.table import CalibrationTable
from ..passes.qdq_placement import needed_tensors
from ..progress import bar
from ..quant.config import QuantConfig
from ..quant.errors import QuantizationError
from . import capture as capture_module
from .search import choose_alphas
from .smoothing import can_absorb, find_groups, smooth

log = logging.getLogger(__name__)

Calibrate = Callable[..., CalibrationTable]
"""``calibrate(model, data, tensors, config, like=table, progress=...)``: re-measures ranges (quantize's)."""


def apply(m: ir.Model, table: CalibrationTable, config: QuantConfig, data: list[dict[str, np.ndarray]] | None,
          calibrate: Calibrate, cache: dict | None = None,
          progress: bool = False) -> tuple[ir.Model, CalibrationTable, QuantConfig]:
    """Smooth ``m`` as ``config.smoothquant`` asks; returns the model, a table updated for the smoothed
    tensors (a copy) and the config (with the layers ``auto_float_error`` keeps float excluded)."""
    cache = {} if cache is None else cache
    alphas = choose(m, table, config, data, cache, progress)
    if config.auto_float_error is not None and isinstance(alphas, dict):
        config = float_fallback(m, config, cache.get("errors", {}), alphas)
    m, table = smooth(m, table, config, alphas)
    if alphas is not None and data:
        table = recalibrate_smoothed(m, table, config, data, calibrate, progress)
    return m, table, config


def choose(m: ir.Model, table: CalibrationTable, config: QuantConfig, data: list[dict[str, np.ndarray]] | None,
           cache: dict | None = None, progress: bool = False) -> float | dict[str, float | None] | None:
    """The alpha(s) to smooth with: None (off), one number, or per activation (``auto``: searched on
    activations captured from ``config.auto_batches`` calibration batches). ``cache`` keeps the captures
    and searches across calls and receives ``chosen`` and ``errors`` (simulated error at each choice)."""
    sq = config.smoothquant
    if sq is None or sq != "auto":
        return None if sq is None else float(sq)
    if not data:
        raise QuantizationError("--smoothquant auto measures the error on calibration data; pass --data")
    groups = [g for g in find_groups(m, config) if g.name in table.channel_absmax]
    if not groups:
        return None
    cache = {} if cache is None else cache
    samples = cache.setdefault("samples", {})
    missing = [g.name for g in groups if g.name not in samples]
    if missing:
        batches = data[: config.auto_batches]
        with bar(progress, len(batches), "smoothquant auto: capturing", unit="batch") as shown:
            samples.update(capture_module.capture(m, missing, batches, on_batch=lambda: shown.update(1)))
    absorbable = {g.name: can_absorb(m, g) for g in groups}
    with bar(progress, len(groups), "smoothquant auto: choosing alpha", unit="layer") as shown:
        errors = cache["errors"] = {}
        chosen = choose_alphas(groups, samples, table, config, absorbable, cache.setdefault("searched", {}),
                               on_group=lambda: shown.update(1), errors=errors)
    cache["chosen"] = chosen
    return chosen


def float_fallback(m: ir.Model, config: QuantConfig, errors: dict[str, float],
                   alphas: dict[str, float | None]) -> QuantConfig:
    """Leave in float the linear ops of each activation whose simulated INT8 error, at its best alpha,
    stays above ``config.auto_float_error`` (an LM's massive activations: one static per-tensor range
    cannot cover one token at 3000 and the others at 3). ``alphas`` is updated (None: not smoothed)."""
    worst = {n for n, e in errors.items() if e > config.auto_float_error}
    if not worst:
        return config
    nodes = [node.name for g in find_groups(m, config) if g.name in worst for node, _, _ in g.targets]
    for name in sorted(worst):
        alphas[name] = None
        log.info("kept in float: the linear ops reading '%s' (simulated INT8 error %.3g)", name, errors[name])
    return dataclasses.replace(config, exclude_nodes=tuple(config.exclude_nodes) + tuple(n for n in nodes if n))


def recalibrate_smoothed(m: ir.Model, table: CalibrationTable, config: QuantConfig,
                         data: list[dict[str, np.ndarray]], calibrate: Calibrate,
                         progress: bool = False) -> CalibrationTable:
    """Re-measure ranges of tensors that SmoothQuant changed, on the smoothed float model."""
    stale = [n for n, r in table.tensors.items() if r.method.endswith("+smoothquant")]
    needed = set(needed_tensors(m, config))
    stale = [n for n in stale if n in needed]
    if not stale:
        return table
    try:
        fresh = calibrate(m, data, stale, config, like=table, progress=progress)
    except ImportError:
        log.warning("converter.calibrate unavailable; using rescaled ranges for smoothed tensors")
        return table
    table.tensors.update({n: fresh.tensors[n] for n in stale if n in fresh.tensors})
    return table
