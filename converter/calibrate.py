"""Streaming calibration: run the FP32 model batch by batch and keep only per-tensor statistics.

    from converter.calibrate import calibrate, CalibConfig
    table = calibrate("model.onnx", batches, CalibConfig(method="percentile"))
    table.save("calib.json")

Memory does not grow with the number of samples: observers keep running min/max, fixed-size
histograms and per-channel abs-max, never activations.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from converter.calib import kernels
from converter.calib.build import make_range, recompute
from converter.calib.collector import Collector, Plan, TensorStats, load_model, open_engine, plan_tensors
from converter.calib.config import CalibConfig, CalibConfigError
from converter.calib.table import CalibrationDataError, CalibrationError, CalibrationTable
from converter.pipeline import quantizable_tensors

if TYPE_CHECKING:
    from converter.distributed import Executor

__all__ = ["CalibConfig", "CalibConfigError", "CalibrationDataError", "CalibrationError", "CalibrationTable",
           "calibrate", "recompute"]

log = logging.getLogger(__name__)


def calibrate(
    model: str | os.PathLike[str] | onnx.ModelProto,
    data: Iterable[Mapping[str, np.ndarray]],
    config: CalibConfig | None = None,
    tensors: Sequence[str] | None = None,
    progress: bool = True,
    executor: Executor | None = None,
) -> CalibrationTable:
    """Calibrate ``model`` on ``data`` (feed dicts, one batch each) and return the ranges.

    ``tensors`` overrides the default choice (float activations around ``config.op_types``).
    ``executor`` (e.g. Ray, ``converter.distributed``) calibrates shards of the data in parallel and
    merges them exactly: the table equals this process's. ``data`` may then be a
    ``converter.distributed.calibrate.DataSource`` that every worker opens and streams itself.
    Raises CalibrationDataError when the data is empty or does not fit the model's inputs.
    """
    config = config or CalibConfig()
    if executor is not None and executor.name != "local":
        from converter.distributed.calibrate import calibrate_sharded

        return calibrate_sharded(model, data, executor, config, tensors)
    started = time.perf_counter()
    if config.collects_histograms:
        kernels.warm_up()  # loads the compiled kernels while the model loads
    source = load_model(model)
    quantizable = []
    if tensors is None and config.scope == "quantizable":
        quantizable = quantizable_tensors(source.proto, source.path.parent if source.path else None)
    plan = plan_tensors(source.proto, config, tensors, quantizable)
    label, digest = source.label, source.digest
    batches = iter(data)
    first = next(batches, None)
    if first is None:
        raise CalibrationDataError(f"the calibration data set is empty: it gave no batches for {label}")

    seen = 0
    num_batches = 0
    with open_engine(source, plan) as engine, Collector(plan, config) as collector, \
            _progress_bar(progress, config.num_samples) as bar:
        del source  # the graph is in the engine now
        specs = engine.input_specs
        for index, feeds in enumerate(itertools.chain([first], batches)):
            feeds = _checked(feeds, index, specs, label)
            n = _batch_len(feeds)
            if n == 0:
                log.warning("skipping empty calibration batch %d", index + 1)
                continue
            if config.num_samples is not None and seen + n > config.num_samples:
                n = config.num_samples - seen
                feeds = {k: v[:n] if v.ndim else v for k, v in feeds.items()}
            outputs = engine.run(feeds, plan.fetch) if plan.fetch else {}
            outputs.update({t: feeds[t] for t in plan.from_feeds})
            collector.update(outputs)
            del outputs
            seen += n
            num_batches += 1
            bar.update(n)
            if config.num_samples is not None and seen >= config.num_samples:
                break  # do not pull another batch from the data
        if seen == 0:
            raise CalibrationDataError(f"the calibration data set is empty: its batches hold no samples for {label}")
        stats = {t: collector.stats(t) for t in plan.observed}
        channel_absmax = collector.channel_absmax()
        channel_mean = collector.channel_mean()

    return table_from_stats(plan, stats, channel_absmax, channel_mean, config, label, digest(), seen, num_batches,
                            started)


def table_from_stats(plan: Plan, stats: Mapping[str, TensorStats], channel_absmax: dict[str, np.ndarray],
                     channel_mean: dict[str, np.ndarray], config: CalibConfig, label: str, sha256: str | None,
                     seen: int, num_batches: int, started: float) -> CalibrationTable:
    """The table from the observers' statistics: a range per planned tensor, and the run's metadata."""
    table = CalibrationTable(channel_absmax=channel_absmax, channel_mean=channel_mean)
    for name in plan.tensors:
        table.tensors[name] = make_range(name, stats[plan.roots[name]], config.method, symmetric=config.symmetric,
                                         percentile=config.percentile, num_quantized_bins=config.num_quantized_bins)
    seconds = time.perf_counter() - started
    table.meta = _meta(label, sha256, config, seen, num_batches, seconds)
    _log_summary(table, seen, num_batches, seconds)
    return table


def _checked(feeds: object, index: int, specs: list, label: str) -> dict[str, np.ndarray]:
    """Check one batch against the model inputs; errors name the batch and the input."""
    from runtime.errors import InputError
    from runtime.validate import validate_feeds

    if not isinstance(feeds, Mapping):
        raise CalibrationDataError(
            f"calibration batch {index + 1} is a {type(feeds).__name__}; expected a dict of input name -> array")
    try:
        return validate_feeds(feeds, specs)
    except InputError as exc:
        raise CalibrationDataError(f"calibration batch {index + 1} does not fit {label}: {exc}") from None


def _batch_len(feeds: Mapping[str, np.ndarray]) -> int:
    sizes = {v.shape[0] for v in feeds.values() if v.ndim > 0}
    if len(sizes) > 1:
        raise CalibrationDataError(f"calibration batch inputs disagree on the batch size: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress_bar(enabled: bool, total: int | None) -> object:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="sample", desc="calibrating", file=sys.stderr, leave=False, dynamic_ncols=True)


def _meta(label: str, sha256: str | None, config: CalibConfig, seen: int, num_batches: int,
          seconds: float) -> dict[str, object]:
    try:
        from importlib.metadata import version

        qdq_version: str | None = version("qdq")
    except Exception:
        qdq_version = None
    return {
        "model": Path(label).name if not label.startswith("<") else label,
        "model_sha256": sha256,
        "method": config.method,
        "symmetric": config.symmetric,
        "num_samples": seen,
        "num_batches": num_batches,
        "seconds": round(seconds, 3),
        "qdq_version": qdq_version,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
    }


def _log_summary(table: CalibrationTable, seen: int, num_batches: int, seconds: float) -> None:
    log.info("calibrated %d tensors on %d samples (%d batches) in %.1fs",
             len(table.tensors), seen, num_batches, seconds)
    masked = [(r.name, r.nonfinite, r.nonfinite + r.count) for r in table.tensors.values() if r.nonfinite]
    if masked:
        shown = ", ".join(f"{n} ({k} of {t})" for n, k, t in masked[:5])
        log.info("non-finite or mask values excluded in %d tensors: %s%s", len(masked), shown,
                 " ..." if len(masked) > 5 else "")
