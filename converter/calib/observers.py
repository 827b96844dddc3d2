"""Streaming per-tensor observers: running min/max, re-binning histograms and per-channel abs-max.

Observers see one batch at a time and never keep activations. Values that are NaN, +-inf, or
whose magnitude reaches ``sentinel_abs`` (default 1e30, which catches attention masks filled
with ``finfo(float32).min``) are excluded from every statistic and counted in ``nonfinite``.

The histogram lives on a global power-of-two grid: bin ``g`` covers ``[g * 2**exp, (g+1) * 2**exp)``
and the observer holds ``num_bins`` consecutive bins starting at ``origin``. Because the width is a
power of two, ``x / 2**exp`` is exact, so binning agrees exactly with ``np.histogram`` on the same
edges; widening the range doubles the width ``j`` times and merges ``2**j`` old bins into each new
one, which is exact too (``floor(floor(y) / k) == floor(y / k)``). The grid is anchored at zero, so
folding it to a histogram of ``|x|`` is exact as well.
"""
from __future__ import annotations

import base64
import functools
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import kernels
from .table import CalibrationError

SENTINEL_ABS = 1e30
"""Values with ``|x| >= SENTINEL_ABS`` are treated like inf: excluded and counted."""

_MAX_INDEX_BITS = 50  # keep |x| / width below 2**50 so float64 bin arithmetic stays exact


def scan(x: np.ndarray, sentinel_abs: float = SENTINEL_ABS) -> tuple[np.ndarray, float, float, int, bool]:
    """Flatten ``x`` and find the min/max of its valid values.

    Returns ``(flat, min, max, excluded, filtered)``; ``filtered`` says some values must be skipped.
    min/max are ``inf``/``-inf`` when nothing is valid. The common all-finite case costs one min and
    one max pass and makes no copy.
    """
    flat = np.asarray(x).reshape(-1)
    if flat.size == 0:
        return flat, math.inf, -math.inf, 0, False
    mn, mx = float(flat.min()), float(flat.max())
    if -sentinel_abs < mn and mx < sentinel_abs:  # False for NaN as well
        return flat, mn, mx, 0, False
    mn, mx, excluded = kernels.minmax(flat, sentinel_abs)
    return flat, mn, mx, excluded, True


class MinMaxObserver:
    """Running min and max of the finite values of one tensor."""

    def __init__(self, sentinel_abs: float = SENTINEL_ABS) -> None:
        self.sentinel_abs = sentinel_abs
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.nonfinite = 0

    def update(self, x: np.ndarray) -> None:
        """Fold one batch of values into the running statistics."""
        flat, mn, mx, excluded, _ = scan(x, self.sentinel_abs)
        self.nonfinite += excluded
        self.count += int(flat.size - excluded)
        self.min = min(self.min, mn)
        self.max = max(self.max, mx)


@dataclass(frozen=True)
class Histogram:
    """Bin counts on the power-of-two grid: bin ``i`` covers ``[(start+i) * 2**exp, (start+i+1) * 2**exp)``.

    ``min``/``max`` are the exact extremes of the counted values.
    """

    counts: np.ndarray  # int64
    exp: int
    start: int
    min: float
    max: float

    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.exp)

    @property
    def edges(self) -> np.ndarray:
        """The ``len(counts) + 1`` bin edges (exact: integers times a power of two)."""
        return (self.start + np.arange(self.counts.size + 1, dtype=np.float64)) * self.width

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def trimmed(self) -> "Histogram":
        """The same histogram without leading/trailing empty bins."""
        nz = np.flatnonzero(self.counts)
        if nz.size == 0:
            return self
        first, last = int(nz[0]), int(nz[-1])
        return Histogram(self.counts[first:last + 1].copy(), self.exp, self.start + first, self.min, self.max)

    def fold_abs(self) -> "Histogram":
        """Histogram of ``|x|`` on the same grid (exact, the grid is anchored at zero); cached."""
        return self._folded

    @functools.cached_property
    def _folded(self) -> "Histogram":
        g = self.start + np.arange(self.counts.size)
        mapped = np.where(g >= 0, g, -g - 1)
        nz = self.counts > 0
        n = int(mapped[nz].max()) + 1 if nz.any() else 1
        counts = np.bincount(mapped[nz], weights=self.counts[nz], minlength=n).astype(np.int64)
        if self.min >= 0:
            amin, amax = self.min, self.max
        elif self.max <= 0:
            amin, amax = -self.max, -self.min
        else:
            amin, amax = 0.0, max(-self.min, self.max)
        return Histogram(counts, self.exp, 0, amin, amax)

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON form: trimmed counts as little-endian integers, byte planes shuffled
        (all low bytes, then the next, ...), zlib-compressed and base64-encoded."""
        h = self.trimmed()
        width = 4 if h.counts.size == 0 or int(h.counts.max()) < 2**32 else 8
        raw = h.counts.astype(f"<u{width}").view(np.uint8).reshape(-1, width).T.tobytes()
        return {"exp": h.exp, "start": h.start, "bins": int(h.counts.size), "encoding": f"u{width}-shuffle-zlib",
                "counts": base64.b64encode(zlib.compress(raw, 6)).decode("ascii"), "min": h.min, "max": h.max}

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "?") -> "Histogram":
        """Inverse of :meth:`to_dict`; raises CalibrationError naming the tensor if unreadable."""
        try:
            width = {"u4-shuffle-zlib": 4, "u8-shuffle-zlib": 8}[data["encoding"]]
            bins = int(data["bins"])
            raw = np.frombuffer(zlib.decompress(base64.b64decode(data["counts"])), np.uint8)
            if raw.size != bins * width:
                raise ValueError(f"{raw.size} bytes for {bins} bins")
            counts = raw.reshape(width, bins).T.copy().view(f"<u{width}").reshape(-1).astype(np.int64)
            return cls(counts, int(data["exp"]), int(data["start"]), float(data["min"]), float(data["max"]))
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise CalibrationError(f"stored histogram of tensor '{name}' is unreadable: {exc!r}") from None


class HistogramObserver:
    """Fixed-size histogram of one tensor's finite values whose range widens by exact re-binning."""

    def __init__(self, num_bins: int = 2048, sentinel_abs: float = SENTINEL_ABS) -> None:
        if num_bins < 8:
            raise ValueError(f"num_bins must be at least 8, got {num_bins}")
        self.num_bins = num_bins
        self.sentinel_abs = sentinel_abs
        self.counts: np.ndarray | None = None  # int64[num_bins] once the grid exists
        self.exp = 0
        self.origin = 0
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.nonfinite = 0
        self.rebins = 0

    # -- grid -------------------------------------------------------------------------------
    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.exp)

    @property
    def edges(self) -> np.ndarray:
        return (self.origin + np.arange(self.num_bins + 1, dtype=np.float64)) * self.width

    def _span(self, lo: float, hi: float, exp: int) -> tuple[int, int]:
        inv = math.ldexp(1.0, -exp)
        return math.floor(lo * inv), math.floor(hi * inv)

    def _fits(self, lo: float, hi: float, exp: int) -> bool:
        a, b = self._span(lo, hi, exp)
        return b - a + 1 <= self.num_bins

    def _min_exp(self, lo: float, hi: float) -> int:
        """Smallest exponent keeping bin indices exact for values up to max(|lo|, |hi|)."""
        return math.frexp(max(abs(lo), abs(hi)))[1] - _MAX_INDEX_BITS

    def _place(self, lo: float, hi: float, exp: int) -> int:
        """Origin that centres ``[lo, hi]`` in the bins at ``exp``."""
        a, b = self._span(lo, hi, exp)
        return a - (self.num_bins - (b - a + 1)) // 2

    def _init_grid(self, lo: float, hi: float) -> None:
        exp = max(math.frexp((hi - lo) / (self.num_bins - 1))[1], self._min_exp(lo, hi))
        while exp > self._min_exp(lo, hi) and self._fits(lo, hi, exp - 1):
            exp -= 1
        while not self._fits(lo, hi, exp):
            exp += 1
        self.exp = exp
        self.origin = self._place(lo, hi, exp)
        self.counts = np.zeros(self.num_bins, np.int64)

    def _widen(self, lo: float, hi: float, min_step: int = 1) -> None:
        """Grow the width by the smallest power of two (at least ``2**min_step``) that covers ``[lo, hi]``
        and re-place the window; merge counts exactly."""
        assert self.counts is not None
        j = min_step
        while not self._fits(lo, hi, self.exp + j):
            j += 1
        new_exp = self.exp + j
        new_origin = self._place(lo, hi, new_exp)
        nz = np.flatnonzero(self.counts)
        new_idx = ((self.origin + nz) >> j) - new_origin  # arithmetic shift == floor division by 2**j
        counts = np.zeros(self.num_bins, np.int64)
        np.add.at(counts, new_idx, self.counts[nz])
        self.counts, self.exp, self.origin = counts, new_exp, new_origin
        self.rebins += 1

    # -- updates ----------------------------------------------------------------------------
    def update(self, x: np.ndarray) -> None:
        """Fold one batch of values into the histogram (widening it first if needed)."""
        if self.counts is not None:  # common case: one fused pass when the batch fits the grid
            flat = np.asarray(x).reshape(-1)
            fused = kernels.scan_accumulate(flat, self.exp, self.origin, self.counts, self.sentinel_abs)
            if fused is not None:
                mn, mx, excluded = fused
                self.nonfinite += excluded
                self.count += int(flat.size - excluded)
                self.min, self.max = min(self.min, mn), max(self.max, mx)
                return
        flat, mn, mx, excluded, filtered = scan(x, self.sentinel_abs)
        if self.advance(mn, mx, excluded, int(flat.size - excluded)):
            kernels.accumulate(flat, self.exp, self.origin, self.counts, self.sentinel_abs if filtered else None)

    def advance(self, mn: float, mx: float, excluded: int, n: int, min_step: int = 1) -> bool:
        """The grid's part of one update: a batch of ``n`` valid values in ``[mn, mx]`` (``excluded`` others)
        moves the range, the counters and the grid, but is not binned. True when its values must be binned.

        The grid depends on these numbers only, never on the values, so replaying them reproduces a
        stream's grid (``converter.calib.merge``). ``min_step=0`` re-places the window without widening
        when the range still fits (shards use it: their width is then the smallest that fits)."""
        self.nonfinite += excluded
        if n == 0:
            return False
        first_value = self.min if self.count else None
        self.min = min(self.min, mn)
        self.max = max(self.max, mx)
        if self.counts is None:
            if self.min == self.max:  # every value so far is the same: wait for a real range
                self.count += n
                return False
            self._init_grid(self.min, self.max)
            if first_value is not None:  # the values seen while the range was a single point
                self._add_value(first_value, self.count)
        elif not self._contains(mn, mx):
            self._widen(self.min, self.max, min_step)
        self.count += n
        return True

    def _contains(self, lo: float, hi: float) -> bool:
        a, b = self._span(lo, hi, self.exp)
        return a >= self.origin and b < self.origin + self.num_bins

    def _add_value(self, value: float, n: int) -> None:
        assert self.counts is not None
        self.counts[math.floor(value * math.ldexp(1.0, -self.exp)) - self.origin] += n

    def histogram(self) -> Histogram:
        """The current counts (a single bin around the value while the range is still a point)."""
        if self.counts is not None:
            return Histogram(self.counts.copy(), self.exp, self.origin, self.min, self.max)
        if not self.count:
            return Histogram(np.zeros(0, np.int64), 0, 0, self.min, self.max)
        exp = self._min_exp(self.min, self.max) if self.min else 0
        start = math.floor(self.min * math.ldexp(1.0, -exp))
        return Histogram(np.array([self.count], np.int64), exp, start, self.min, self.max)


class ChannelAbsMaxObserver:
    """Running per-channel max of ``|x|`` along ``axis`` (last axis for MatMul/Gemm inputs, 1 for Conv),
    and the per-channel mean of the finite values (for bias correction)."""

    def __init__(self, axis: int, sentinel_abs: float = SENTINEL_ABS, name: str = "?") -> None:
        self.axis = axis
        self.sentinel_abs = sentinel_abs
        self.name = name
        self.absmax: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._count: np.ndarray | None = None

    @property
    def mean(self) -> np.ndarray | None:
        """Per-channel mean of the values seen (those below ``sentinel_abs`` in magnitude)."""
        if self._sum is None:
            return None
        return (self._sum / np.maximum(self._count, 1)).astype(np.float32)

    def _add_sum(self, rows: np.ndarray) -> None:
        self.accumulate(*self._batch_sum(rows))

    def _batch_sum(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel float64 sum and count of one batch's values below ``sentinel_abs``."""
        total = rows.sum(axis=0, dtype=np.float64)
        count = np.full(rows.shape[1], rows.shape[0], np.float64)
        if not np.all(np.isfinite(total)) or np.any(np.abs(total) >= self.sentinel_abs):
            with np.errstate(invalid="ignore"):
                ok = np.abs(rows) < self.sentinel_abs
            total = np.where(ok, rows, 0).sum(axis=0, dtype=np.float64)
            count = ok.sum(axis=0).astype(np.float64)
        return total, count

    def accumulate(self, total: np.ndarray, count: np.ndarray) -> None:
        """Add one batch's per-channel sums (in batch order: float addition is not associative)."""
        if self._sum is None:
            self._sum, self._count = total, count
        elif self._sum.shape == total.shape:
            self._sum += total
            self._count += count

    def update(self, x: np.ndarray) -> None:
        """Fold one batch; the channel count must not change between batches."""
        x = np.asarray(x)
        if x.ndim == 0:
            raise CalibrationError(f"tensor '{self.name}' is a scalar; cannot take per-channel statistics")
        axis = self.axis % x.ndim
        if x.size == 0:
            return
        channels = x.shape[axis]
        if axis == x.ndim - 1:
            rows = x.reshape(-1, channels)
        else:
            rows = np.moveaxis(x, axis, -1).reshape(-1, channels)
        amax = kernels.channel_absmax(rows, self.sentinel_abs)
        if amax is None:
            amax = np.abs(rows).max(axis=0)
            if not (np.all(amax < self.sentinel_abs)):  # NaN, inf or mask sentinels present
                with np.errstate(invalid="ignore"):
                    a = np.abs(rows)
                    amax = np.where(a < self.sentinel_abs, a, 0).max(axis=0)
            amax = amax.astype(np.float32)
        self._add_sum(rows)
        if self.absmax is None:
            self.absmax = amax
        elif self.absmax.shape != amax.shape:
            raise CalibrationError(
                f"tensor '{self.name}' changed its channel count on axis {self.axis} from "
                f"{self.absmax.size} to {amax.size} between batches")
        else:
            np.maximum(self.absmax, amax, out=self.absmax)
