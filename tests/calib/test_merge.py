"""Calibration shards merge exactly: N shards give, bit for bit, the one-process observers and table."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from converter.calib.merge import (ShardChannelObserver, ShardHistogramObserver, merge_channels, merge_histograms)
from converter.calib.observers import ChannelAbsMaxObserver, HistogramObserver
from converter.calibrate import CalibConfig, calibrate
from converter.distributed import LocalExecutor
from converter.distributed.calibrate import DataSource, calibrate_sharded
from converter.distributed.executor import split


def _stream(seed: int) -> list[np.ndarray]:
    """Batches whose ranges jump around: a constant prefix, shifts, growth, NaN/inf/mask values, empty ones."""
    rng = np.random.default_rng(seed)
    batches = [np.full(50, 0.75, np.float32), np.full(10, 0.75, np.float32)]
    for i in range(14):
        scale = float(rng.choice([0.01, 0.3, 1.0, 7.0, 300.0]))
        x = (rng.standard_normal(int(rng.integers(1, 400))) * scale + rng.normal() * scale).astype(np.float32)
        if i % 5 == 2:
            x[:3] = [np.nan, np.inf, np.finfo(np.float32).min]
        batches.append(x)
        if i == 6:
            batches.append(np.full(4, np.nan, np.float32))  # nothing valid
    return batches


def _state(obs: HistogramObserver) -> tuple:
    h = obs.histogram()
    return (h.exp, h.start, h.counts.tolist(), h.min, h.max, obs.count, obs.nonfinite)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("parts", [2, 3, 7])
def test_histogram_shards_merge_to_the_streaming_histogram(seed: int, parts: int) -> None:
    batches = _stream(seed)
    whole = HistogramObserver(64)
    for b in batches:
        whole.update(b)
    assert whole.rebins > 0  # the stream really widened its grid
    shards = []
    for run in split(batches, parts):
        obs = ShardHistogramObserver(64)
        for b in run:
            obs.update(b)
        shards.append(obs)
    assert _state(merge_histograms(shards)) == _state(whole)


@pytest.mark.parametrize("seed", range(3))
def test_interleaved_shards_merge_to_the_streaming_histogram(seed: int) -> None:
    """Every k-th batch per shard (how workers split a data source they each open): the batch indices
    put the records back in data order."""
    batches = _stream(seed)
    whole = HistogramObserver(64)
    for b in batches:
        whole.update(b)
    shards = [ShardHistogramObserver(64) for _ in range(3)]
    for i, b in enumerate(batches):
        shards[i % 3].index = i
        shards[i % 3].update(b)
    assert _state(merge_histograms(shards)) == _state(whole)


def test_shard_window_that_must_move_keeps_the_streaming_width() -> None:
    """A shard whose window must move (not widen) to take its next batch: widening it as the streaming
    observer does would leave it coarser than the one-process grid, which no merge could undo."""
    a, small, c, d = ([0.0, 0.94], [0.2, 0.3], [0.0, 0.85], [0.05, 0.94])
    batches = [np.array(v, np.float32) for v in (a, small, c, d)]
    whole = HistogramObserver(64)
    for b in batches:
        whole.update(b)
    shards = [ShardHistogramObserver(64), ShardHistogramObserver(64)]
    for i, b in enumerate(batches):
        shards[i // 2].update(b)
    assert shards[1].exp == whole.exp == -6
    assert _state(merge_histograms(shards)) == _state(whole)


def test_single_point_stream_merges_to_a_single_point() -> None:
    whole, shards = HistogramObserver(64), [ShardHistogramObserver(64), ShardHistogramObserver(64)]
    for i, b in enumerate([np.full(5, 2.5, np.float32)] * 4):
        whole.update(b)
        shards[i // 2].update(b)
    merged = merge_histograms(shards)
    assert merged.counts is None and _state(merged) == _state(whole)


def test_channel_sums_merge_in_batch_order() -> None:
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((int(rng.integers(1, 9)), 6)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
               for _ in range(12)]
    whole = ChannelAbsMaxObserver(-1)
    for b in batches:
        whole.update(b)
    shards = [ShardChannelObserver(-1) for _ in range(4)]
    for i, b in enumerate(batches):  # interleaved: the merge must put the sums back in batch order
        shards[i % 4].index = i
        shards[i % 4].update(b)
    merged = merge_channels(shards)
    assert merged.absmax.tobytes() == whole.absmax.tobytes()
    assert merged.mean.tobytes() == whole.mean.tobytes()


def _table_dict(table) -> dict:  # noqa: ANN001
    d = copy.deepcopy(table.to_dict())
    for key in ("seconds", "created"):  # timing: the only fields that differ between runs
        d["meta"].pop(key)
    return d


def test_sharded_minilm_calibration_equals_one_process(minilm_onnx: Path, minilm_batches: list) -> None:
    # percentile: ranges from the histograms (entropy and mse read the same histograms)
    config = CalibConfig(method="percentile", scope="all")
    one = calibrate(minilm_onnx, minilm_batches, config, progress=False)
    three = calibrate_sharded(minilm_onnx, minilm_batches, LocalExecutor(), config, shards=3)
    assert _table_dict(three) == _table_dict(one)
    # each shard opening the data itself and keeping every 2nd batch
    streamed = calibrate_sharded(minilm_onnx, DataSource(lambda: iter(minilm_batches)), LocalExecutor(), config,
                                 shards=2)
    assert _table_dict(streamed) == _table_dict(one)
    assert one.channel_mean and one.tensors
