"""Calibration over shards: each task streams a contiguous run of batches through its own ONNX Runtime
session and returns its observers; the merge (``converter.calib.merge``) is exact, so the table equals
the one-process table (ranges, histograms, channel statistics; only the timing metadata differs)."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from ..calib.collector import Collector, ModelSource, Plan, TensorStats, load_model, open_engine, plan_tensors
from ..calib.config import CalibConfig
from ..calib.merge import (ShardChannelObserver, ShardHistogramObserver, ShardMinMaxObserver, merge_channels,
                           merge_histograms, merge_minmax)
from ..calib.table import CalibrationDataError, CalibrationTable
from .executor import Executor, split

log = logging.getLogger(__name__)


class ShardCollector(Collector):
    """A :class:`Collector` whose observers keep what an exact merge needs."""

    def __init__(self, plan: Plan, config: CalibConfig) -> None:
        super().__init__(plan, config)
        make = ((lambda: ShardHistogramObserver(config.num_bins, config.sentinel_abs)) if config.collects_histograms
                else (lambda: ShardMinMaxObserver(config.sentinel_abs)))
        self.observers = {t: make() for t in plan.observed}
        self.channels = {t: ShardChannelObserver(axis, config.sentinel_abs, name=t)
                         for t, axis in plan.channel_axes.items()}


def _model_payload(source: ModelSource) -> bytes | str:
    """What the workers load: the serialized graph through the object store, or, when its weights are
    external files, its path (which must then be on storage every worker sees)."""
    from ..calib.collector import _external_locations

    if source.path is not None and _external_locations(source.proto):
        return str(source.path.resolve())
    return source.proto.SerializeToString()


def calibrate_shard(context: tuple, shard: tuple[int, list[dict[str, np.ndarray]]]) -> dict[str, Any]:
    """One task: run the shard's batches (numbered from ``start``) and return its observers."""
    from ..calibrate import _checked

    model, label, plan, config = context
    start, batches = shard
    source = (load_model(model) if isinstance(model, str)
              else ModelSource(onnx.load_model_from_string(model), None, label, lambda: None))
    with open_engine(source, plan) as engine, ShardCollector(plan, config) as collector:
        specs = engine.input_specs
        for offset, feeds in enumerate(batches):
            feeds = _checked(feeds, start + offset, specs, label)
            outputs = engine.run(feeds, plan.fetch) if plan.fetch else {}
            outputs.update({t: feeds[t] for t in plan.from_feeds})
            collector.update(outputs)
        return {"observers": collector.observers, "channels": collector.channels, "pid": os.getpid()}


def _batches(data: Iterable[Mapping[str, np.ndarray]], config: CalibConfig, label: str) -> tuple[list, int]:
    """The batches the one-process run would use (empty ones dropped, cut at ``num_samples``) and the sample count."""
    from ..calibrate import _batch_len

    kept, seen = [], 0
    for index, feeds in enumerate(data):
        if not isinstance(feeds, Mapping):
            raise CalibrationDataError(
                f"calibration batch {index + 1} is a {type(feeds).__name__}; expected a dict of input name -> array")
        n = _batch_len(feeds)
        if n == 0:
            log.warning("skipping empty calibration batch %d", index + 1)
            continue
        if config.num_samples is not None and seen + n > config.num_samples:
            n = config.num_samples - seen
            feeds = {k: np.asarray(v)[:n] if np.ndim(v) else v for k, v in feeds.items()}
        kept.append((index, dict(feeds)))
        seen += n
        if config.num_samples is not None and seen >= config.num_samples:
            break
    if not kept:
        raise CalibrationDataError(f"the calibration data set is empty: it gave no batches for {label}")
    return kept, seen


def calibrate_sharded(model: str | os.PathLike[str] | onnx.ModelProto, data: Iterable[Mapping[str, np.ndarray]],
                      executor: Executor, config: CalibConfig | None = None, tensors: Sequence[str] | None = None,
                      shards: int | None = None) -> CalibrationTable:
    """Calibrate ``model`` with ``executor``: ``shards`` contiguous runs of batches (default: one per
    parallel worker), merged exactly into the table :func:`converter.calibrate.calibrate` returns."""
    from ..calibrate import table_from_stats
    from ..pipeline import quantizable_tensors

    config = config or CalibConfig()
    started = time.perf_counter()
    source = load_model(model)
    quantizable = []
    if tensors is None and config.scope == "quantizable":
        quantizable = quantizable_tensors(source.proto, source.path.parent if source.path else None)
    plan = plan_tensors(source.proto, config, tensors, quantizable)
    label = source.label
    indexed, seen = _batches(data, config, label)
    runs = split(indexed, shards or executor.parallelism)
    # each shard: the index of its first batch (for error messages) and its batches
    items = [(run[0][0], [feeds for _, feeds in run]) for run in runs]
    context = (_model_payload(source), label, plan, config)
    log.info("calibrating %s in %d shard(s) on %s", label, len(items), executor.name)
    results = executor.map(calibrate_shard, items, context,
                           label=lambda it: f"calibration shard from batch {it[0] + 1} ({len(it[1])} batches) of {label}")
    stats: dict[str, TensorStats] = {}
    for t in plan.observed:
        parts = [r["observers"][t] for r in results]
        if config.collects_histograms:
            obs = merge_histograms(parts, t)
            stats[t] = TensorStats(obs.min, obs.max, obs.count, obs.nonfinite, obs.histogram())
        else:
            obs = merge_minmax(parts)
            stats[t] = TensorStats(obs.min, obs.max, obs.count, obs.nonfinite, None)
    channels = {t: merge_channels([r["channels"][t] for r in results]) for t in plan.channel_axes}
    channel_absmax = {t: o.absmax for t, o in channels.items() if o.absmax is not None}
    channel_mean = {t: o.mean for t, o in channels.items() if o.mean is not None}
    if seen == 0:
        raise CalibrationDataError(f"the calibration data set is empty: its batches hold no samples for {label}")
    return table_from_stats(plan, stats, channel_absmax, channel_mean, config, label, source.digest(), seen,
                            len(indexed), started)
