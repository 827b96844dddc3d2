"""Calibration over shards: each task streams its batches through its own ONNX Runtime session and
returns its observers; the merge (``converter.calib.merge``) is exact, so the table equals the
one-process table (ranges, histograms, channel statistics; only the timing metadata differs).

Two ways for the data to reach the workers:

- batches in memory (any iterable of feed dicts): cut here into contiguous runs that travel through
  Ray's object store, one run per task;
- a :class:`DataSource` that every worker opens itself (a file on shared storage, a built-in set): each
  worker streams the whole source and keeps every k-th batch, so no batch passes through the driver.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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

Batch = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class DataSource:
    """A data set that opens anew wherever it is called: ``open()`` yields the same batches in the same
    order each time (e.g. ``functools.partial(calibration_data.open_data, path, specs, batch_size=8)``).
    It must pickle, and what it reads must be reachable from every worker. Iterating it opens it."""

    open: Callable[[], Iterable[Batch]]

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.open())


class ShardCollector(Collector):
    """A :class:`Collector` whose observers keep what an exact merge needs, tagged with the batch index."""

    def __init__(self, plan: Plan, config: CalibConfig) -> None:
        super().__init__(plan, config)
        make = ((lambda: ShardHistogramObserver(config.num_bins, config.sentinel_abs)) if config.collects_histograms
                else (lambda: ShardMinMaxObserver(config.sentinel_abs)))
        self.observers = {t: make() for t in plan.observed}
        self.channels = {t: ShardChannelObserver(axis, config.sentinel_abs, name=t)
                         for t, axis in plan.channel_axes.items()}

    def update_batch(self, index: int, values: Mapping[str, np.ndarray]) -> None:
        for obs in list(self.observers.values()) + list(self.channels.values()):
            obs.index = index  # type: ignore[union-attr]
        self.update(values)


def kept_batches(data: Iterable[Batch], config: CalibConfig) -> Iterator[tuple[int, dict, int]]:
    """``(index, feeds, samples)`` of the batches the one-process run uses: empty ones dropped, the last
    one cut at ``config.num_samples``."""
    from ..calibrate import _batch_len

    seen = 0
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
        yield index, dict(feeds), n
        seen += n
        if config.num_samples is not None and seen >= config.num_samples:
            return


def _model_payload(source: ModelSource) -> bytes | str:
    """What the workers load: the serialized graph through the object store, or, when its weights are
    external files, its path (which must then be on storage every worker sees)."""
    from ..calib.collector import _external_locations

    if source.path is not None and _external_locations(source.proto):
        return str(source.path.resolve())
    return source.proto.SerializeToString()


def calibrate_shard(context: tuple, shard: tuple) -> dict[str, Any]:
    """One task: observe the shard's batches and return its observers and sample counts.

    ``shard`` is ``("batches", [(index, feeds), ...])`` or ``("every", k, parts)`` (batches ``k``, ``k + parts``,
    ... of the context's :class:`DataSource`)."""
    from ..calibrate import _checked

    model, label, plan, config, source_data = context
    if shard[0] == "batches":
        batches: Iterable[tuple[int, dict, int]] = shard[1]
    else:
        _, k, parts = shard
        batches = (b for i, b in enumerate(kept_batches(source_data, config)) if i % parts == k)
    source = (load_model(model) if isinstance(model, str)
              else ModelSource(onnx.load_model_from_string(model), None, label, lambda: None))
    seen = count = 0
    with open_engine(source, plan) as engine, ShardCollector(plan, config) as collector:
        specs = engine.input_specs
        for index, feeds, n in batches:
            feeds = _checked(feeds, index, specs, label)
            outputs = engine.run(feeds, plan.fetch) if plan.fetch else {}
            outputs.update({t: feeds[t] for t in plan.from_feeds})
            collector.update_batch(index, outputs)
            seen += n
            count += 1
        return {"observers": collector.observers, "channels": collector.channels, "samples": seen, "batches": count}


def calibrate_sharded(model: str | os.PathLike[str] | onnx.ModelProto, data: Iterable[Batch] | DataSource,
                      executor: Executor, config: CalibConfig | None = None, tensors: Sequence[str] | None = None,
                      shards: int | None = None) -> CalibrationTable:
    """Calibrate ``model`` with ``executor`` in ``shards`` parts (default: one per parallel worker), merged
    exactly into the table :func:`converter.calibrate.calibrate` returns for the same data."""
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
    parts = shards or executor.parallelism
    if isinstance(data, DataSource):  # every worker opens the source and keeps its k-th batches
        items: list[tuple] = [("every", k, parts) for k in range(parts)]
        source_data: DataSource | None = data
        describe = lambda it: f"calibration shard {it[1] + 1}/{it[2]} (every {it[2]}th batch) of {label}"  # noqa: E731
    else:  # contiguous runs of the batches, each through the object store
        runs = split([(i, f, n) for i, f, n in kept_batches(data, config)], parts)
        items = [("batches", run) for run in runs if run]
        source_data = None
        describe = lambda it: (f"calibration shard of batches {it[1][0][0] + 1}-{it[1][-1][0] + 1} "  # noqa: E731
                               f"of {label}")
    if not items:
        raise CalibrationDataError(f"the calibration data set is empty: it gave no batches for {label}")
    context = (_model_payload(source), label, plan, config, source_data)
    log.info("calibrating %s in %d shard(s) on %s", label, len(items), executor.name)
    results = executor.map(calibrate_shard, items, context, label=describe)
    seen = sum(r["samples"] for r in results)
    if seen == 0:
        raise CalibrationDataError(f"the calibration data set is empty: it gave no batches for {label}")
    stats: dict[str, TensorStats] = {}
    for t in plan.observed:
        parts_t = [r["observers"][t] for r in results]
        if config.collects_histograms:
            obs = merge_histograms(parts_t, t)
            stats[t] = TensorStats(obs.min, obs.max, obs.count, obs.nonfinite, obs.histogram())
        else:
            obs = merge_minmax(parts_t)
            stats[t] = TensorStats(obs.min, obs.max, obs.count, obs.nonfinite, None)
    channels = {t: merge_channels([r["channels"][t] for r in results]) for t in plan.channel_axes}
    channel_absmax = {t: o.absmax for t, o in channels.items() if o.absmax is not None}
    channel_mean = {t: o.mean for t, o in channels.items() if o.mean is not None}
    return table_from_stats(plan, stats, channel_absmax, channel_mean, config, label, source.digest(), seen,
                            sum(r["batches"] for r in results), started)
