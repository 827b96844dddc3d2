"""Turn observer statistics into TensorRange entries, and recompute a table with another method."""
from __future__ import annotations

import copy
import datetime as _dt
import logging
from typing import Any

import numpy as np

from .collector import TensorStats
from .observers import Histogram
from .ranges import compute_range, quant_params, quantile
from .table import CalibrationError, CalibrationTable, TensorRange

log = logging.getLogger(__name__)

SUMMARY_PERCENTILES = (99.0, 99.9, 99.99, 99.999)


def histogram_record(stats: TensorStats) -> dict[str, Any]:
    """What a TensorRange keeps: min/max, |x| percentiles and, if collected, the compact counts."""
    record: dict[str, Any] = {"min": _num(stats.min), "max": _num(stats.max)}
    h = stats.histogram
    if h is not None and h.total:
        folded = h.fold_abs()
        record["abs_percentiles"] = {f"{p:g}": quantile(folded, p / 100.0) for p in SUMMARY_PERCENTILES}
        record.update(h.to_dict())
    return record


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def make_range(name: str, stats: TensorStats, method: str, *, symmetric: bool = True, percentile: float = 99.99,
               num_quantized_bins: int = 128, record: dict[str, Any] | None = None) -> TensorRange:
    """One tensor's calibrated range and INT8 parameters."""
    if stats.count == 0:
        log.warning("tensor %s had no finite values (%d excluded); its range is [0, 0]", name, stats.nonfinite)
        lo = hi = 0.0
    else:
        lo, hi = compute_range(method, mn=stats.min, mx=stats.max, histogram=stats.histogram, symmetric=symmetric,
                               percentile=percentile, num_quantized_bins=num_quantized_bins, name=name)
    scale, zero_point, qtype = quant_params(lo, hi, symmetric)
    return TensorRange(name=name, method=method, lo=lo, hi=hi, scale=scale, zero_point=zero_point,
                       symmetric=symmetric, count=int(stats.count), nonfinite=int(stats.nonfinite),
                       histogram=record if record is not None else histogram_record(stats), qtype=qtype)


def stats_from_range(r: TensorRange) -> TensorStats:
    """Rebuild observer statistics from a stored TensorRange (for `recompute`)."""
    rec = r.histogram or {}
    mn = rec.get("min")
    mx = rec.get("max")
    hist = Histogram.from_dict(rec, r.name) if "counts" in rec else None
    return TensorStats(mn if mn is not None else np.inf, mx if mx is not None else -np.inf,
                       r.count, r.nonfinite, hist)


def recompute(table: CalibrationTable, method: str | None = None, *, symmetric: bool | None = None,
              percentile: float | None = None, num_quantized_bins: int | None = None) -> CalibrationTable:
    """A new table with ranges from the stored statistics under another method or setting (no model run).

    Histogram methods need a table calibrated with histograms (any method but plain ``minmax``).
    """
    from .config import CalibConfig

    old = dict(table.meta.get("config", {}))
    cfg = CalibConfig(
        method=method or old.get("method", table.meta.get("method", "minmax")),
        percentile=percentile if percentile is not None else old.get("percentile", 99.99),
        symmetric=symmetric if symmetric is not None else old.get("symmetric", True),
        num_quantized_bins=num_quantized_bins if num_quantized_bins is not None else old.get("num_quantized_bins", 128),
    )
    tensors = {}
    for name, r in table.tensors.items():
        stats = stats_from_range(r)
        if stats.count and stats.histogram is None and cfg.method != "minmax":
            raise CalibrationError(
                f"tensor '{name}' was calibrated without a histogram, so method '{cfg.method}' cannot be "
                f"computed from the table; calibrate again with --method {cfg.method}")
        tensors[name] = make_range(name, stats, cfg.method, symmetric=cfg.symmetric, percentile=cfg.percentile,
                                   num_quantized_bins=cfg.num_quantized_bins, record=r.histogram)
    meta = copy.deepcopy(table.meta)
    meta.update(method=cfg.method, recomputed=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                config={**old, "method": cfg.method, "percentile": cfg.percentile, "symmetric": cfg.symmetric,
                        "num_quantized_bins": cfg.num_quantized_bins})
    return CalibrationTable(tensors=tensors, channel_absmax={k: v.copy() for k, v in table.channel_absmax.items()},
                            channel_mean={k: v.copy() for k, v in table.channel_mean.items()}, meta=meta)
