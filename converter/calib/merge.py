"""Observers for one shard of the calibration data, and their exact merge into the one-process result.

A histogram's counts on the power-of-two grid are the same whichever order the values came in; only the
grid (width, window) depends on the stream's history, and that history is a function of each batch's
``(min, max, excluded, valid)`` alone. So a shard records those four numbers per batch, with the batch's
index in the data, and bins its values at the smallest width that fits its own range; the merge replays
every shard's records in data order through a :class:`HistogramObserver` (the one-process grid, exactly)
and re-bins each shard's counts onto it (exact: floor division by a power of two). Per-channel sums are
added batch by batch in data order, as the one-process observer adds them. A shard may hold any subset of
the batches (contiguous runs, or every k-th batch). The merged statistics therefore equal, bit for bit, those
of one process reading every batch in order.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from . import kernels
from .observers import ChannelAbsMaxObserver, HistogramObserver, MinMaxObserver, scan
from .table import CalibrationError


class ShardHistogramObserver(HistogramObserver):
    """A histogram observer that also records each batch's extent; its window only widens when its
    range no longer fits (so its width never exceeds the one-process width)."""

    def __init__(self, num_bins: int = 2048, sentinel_abs: float = 1e30) -> None:
        super().__init__(num_bins, sentinel_abs)
        self.index = 0  # the data index of the batch being observed (set by the collector)
        self.records: list[tuple[int, float, float, int, int]] = []

    def update(self, x: np.ndarray) -> None:
        flat = np.asarray(x).reshape(-1)
        if self.counts is not None:
            fused = kernels.scan_accumulate(flat, self.exp, self.origin, self.counts, self.sentinel_abs)
            if fused is not None:
                mn, mx, excluded = fused
                n = int(flat.size - excluded)
                self.records.append((self.index, mn, mx, excluded, n))
                self.nonfinite += excluded
                self.count += n
                self.min, self.max = min(self.min, mn), max(self.max, mx)
                return
        flat, mn, mx, excluded, filtered = scan(flat, self.sentinel_abs)
        n = int(flat.size - excluded)
        self.records.append((self.index, mn, mx, excluded, n))
        if self.advance(mn, mx, excluded, n, min_step=0):
            kernels.accumulate(flat, self.exp, self.origin, self.counts, self.sentinel_abs if filtered else None)


class ShardMinMaxObserver(MinMaxObserver):
    """Min/max/counts merge exactly in any order: nothing to record."""


class ShardChannelObserver(ChannelAbsMaxObserver):
    """Per-channel abs-max (merged by max, exact in any order) and each batch's sums, kept for the merge."""

    def __init__(self, axis: int, sentinel_abs: float = 1e30, name: str = "?") -> None:
        super().__init__(axis, sentinel_abs, name)
        self.index = 0  # the data index of the batch being observed (set by the collector)
        self.batch_sums: list[tuple[int, np.ndarray, np.ndarray]] = []

    def accumulate(self, total: np.ndarray, count: np.ndarray) -> None:
        self.batch_sums.append((self.index, total, count))


def merge_histograms(shards: Sequence[ShardHistogramObserver], name: str = "?") -> HistogramObserver:
    """The observer one process would hold after every shard's batches, in shard order."""
    first = shards[0]
    merged = HistogramObserver(first.num_bins, first.sentinel_abs)
    for record in sorted((r for shard in shards for r in shard.records), key=lambda r: r[0]):
        merged.advance(*record[1:])
    if merged.counts is None:  # the values so far are one point: min, max and count say it all
        return merged
    merged.counts[:] = 0  # the replay binned only the single-point prefix; the shards hold every value
    inv = math.ldexp(1.0, -merged.exp)
    for shard in shards:
        if not shard.count:
            continue
        if shard.counts is None:  # this shard saw one value only
            merged.counts[math.floor(shard.min * inv) - merged.origin] += shard.count
            continue
        j = merged.exp - shard.exp
        if j < 0:
            raise CalibrationError(f"tensor '{name}': a shard's histogram is finer than the merged one can hold "
                                   f"(bin width 2**{shard.exp} > 2**{merged.exp}); calibrate it in one process")
        nz = np.flatnonzero(shard.counts)
        idx = ((shard.origin + nz) >> j) - merged.origin
        if idx.size and (idx.min() < 0 or idx.max() >= merged.num_bins):
            raise CalibrationError(f"tensor '{name}': shard histogram falls outside the merged grid")
        np.add.at(merged.counts, idx, shard.counts[nz])
    return merged


def merge_minmax(shards: Sequence[MinMaxObserver]) -> MinMaxObserver:
    merged = MinMaxObserver(shards[0].sentinel_abs)
    for shard in shards:
        merged.min, merged.max = min(merged.min, shard.min), max(merged.max, shard.max)
        merged.count += shard.count
        merged.nonfinite += shard.nonfinite
    return merged


def merge_channels(shards: Sequence[ShardChannelObserver]) -> ChannelAbsMaxObserver:
    first = shards[0]
    merged = ChannelAbsMaxObserver(first.axis, first.sentinel_abs, first.name)
    for shard in shards:
        if shard.absmax is None:
            continue
        if merged.absmax is None:
            merged.absmax = shard.absmax.copy()
        elif merged.absmax.shape != shard.absmax.shape:
            raise CalibrationError(f"tensor '{first.name}' changed its channel count on axis {first.axis} from "
                                   f"{merged.absmax.size} to {shard.absmax.size} between batches")
        else:
            np.maximum(merged.absmax, shard.absmax, out=merged.absmax)
    for _, total, count in sorted((b for shard in shards for b in shard.batch_sums), key=lambda b: b[0]):
        merged.accumulate(total.copy(), count.copy())
    return merged
