"""Clipping ranges from streamed statistics: minmax, percentile, mse and entropy (KL), plus INT8 parameters.

Every function returns ``(lo, hi)`` with ``lo <= 0 <= hi`` (zero must be exactly representable).
Symmetric ranges are ``(-amax, amax)`` and quantize to int8 with zero point 0 and
``scale = amax / 127``. Asymmetric ranges quantize to uint8: ``scale = (hi - lo) / 255`` and
``zero_point = round(-lo / scale)`` in ``[0, 255]`` (the u8 activation layout ONNX Runtime's x86
kernels prefer).
"""
from __future__ import annotations

import math

import numpy as np

from ..quant.scheme import activation_qparams
from .observers import Histogram
from .table import CalibrationError

METHODS = ("minmax", "percentile", "mse", "entropy")
_MAX_WORK_BINS = 4096  # histograms are coarsened (exactly, by powers of two) to at most this many bins
_MSE_CANDIDATES = 512  # per side
_MSE_CANDIDATES_2D = 160  # per side for asymmetric (pairs are searched exhaustively)
_KL_COARSE = 512  # thresholds tried in the first pass of the entropy search


def quant_params(lo: float, hi: float, symmetric: bool) -> tuple[float, int, str]:
    """``(scale, zero_point, qtype)`` for a range, as quantize computes them (``quant.scheme``); scale is
    float32 as ONNX stores it, 1.0 for an all-zero range."""
    qtype = "int8" if symmetric else "uint8"
    if not min(lo, 0.0) < max(hi, 0.0):
        return 1.0, 0, qtype
    qp = activation_qparams(lo, hi, qtype)
    return float(qp.scale), int(qp.zero_point), qtype


def _finish(lo: float, hi: float, symmetric: bool) -> tuple[float, float]:
    lo, hi = min(float(lo), 0.0) + 0.0, max(float(hi), 0.0)  # + 0.0 turns -0.0 into 0.0
    if symmetric:
        amax = max(-lo, hi) + 0.0
        return -amax + 0.0, amax
    return lo, hi


def minmax_range(mn: float, mx: float, symmetric: bool = True) -> tuple[float, float]:
    """The observed extremes (widened to include zero)."""
    if not (math.isfinite(mn) and math.isfinite(mx)):
        return 0.0, 0.0
    return _finish(mn, mx, symmetric)


# -- helpers on histograms ---------------------------------------------------------------------
def coarsen(h: Histogram, max_bins: int = _MAX_WORK_BINS) -> Histogram:
    """Merge bins by the smallest power of two that leaves at most ``max_bins`` (exact)."""
    h = h.trimmed()
    j = 0
    while True:
        first, last = h.start >> j, (h.start + h.counts.size - 1) >> j
        if last - first + 1 <= max_bins:
            break
        j += 1
    if j == 0:
        return h
    idx = ((h.start + np.arange(h.counts.size)) >> j) - first
    counts = np.zeros(last - first + 1, np.int64)
    np.add.at(counts, idx, h.counts)
    return Histogram(counts, h.exp + j, first, h.min, h.max)


def _side(h: Histogram, positive: bool) -> Histogram:
    """Histogram of ``x`` for ``x >= 0`` (positive) or of ``-x`` for ``x < 0``, starting at bin 0."""
    g = h.start + np.arange(h.counts.size)
    keep = g >= 0 if positive else g < 0
    idx = g[keep] if positive else -g[keep] - 1
    n = int(idx.max()) + 1 if idx.size else 1
    counts = np.zeros(n, np.int64)
    np.add.at(counts, idx, h.counts[keep])
    if positive:
        lo, hi = max(h.min, 0.0), max(h.max, 0.0)
    else:
        lo, hi = max(-h.max, 0.0), max(-h.min, 0.0)
    return Histogram(counts, h.exp, 0, lo, hi)


def quantile(h: Histogram, q: float) -> float:
    """Value below which a fraction ``q`` of the counts lie (linear within a bin, clamped to min/max)."""
    total = h.total
    if total == 0:
        return 0.0
    cdf = np.cumsum(h.counts)
    target = q * total
    i = int(np.searchsorted(cdf, target, side="left"))
    i = min(i, h.counts.size - 1)
    before = float(cdf[i - 1]) if i > 0 else 0.0
    frac = (target - before) / h.counts[i] if h.counts[i] else 0.0
    value = (h.start + i + min(max(frac, 0.0), 1.0)) * h.width
    return float(min(max(value, h.min), h.max))


# -- methods -----------------------------------------------------------------------------------
def percentile_range(h: Histogram, percentile: float = 99.99, symmetric: bool = True) -> tuple[float, float]:
    """Symmetric: the ``percentile`` of ``|x|``. Asymmetric: cut ``(100 - percentile) / 2`` % per side."""
    if h.total == 0:
        return 0.0, 0.0
    if symmetric:
        amax = quantile(h.fold_abs(), percentile / 100.0)
        return _finish(-amax, amax, True)
    tail = (1.0 - percentile / 100.0) / 2.0
    return _finish(quantile(h, tail), quantile(h, 1.0 - tail), False)


def _suffix_moments(h: Histogram) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centres and suffix sums S0, S1, S2 of count, count*c, count*c^2 from each bin to the end."""
    n = h.counts.astype(np.float64)
    c = (h.start + np.arange(n.size) + 0.5) * h.width
    rev = lambda a: np.concatenate([np.cumsum(a[::-1])[::-1], [0.0]])  # noqa: E731
    return c, rev(n), rev(n * c), rev(n * c * c)


def _clip_errors(side: Histogram, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For thresholds at bin edges ``k``: (threshold, clipped count, squared clipping error)."""
    _, s0, s1, s2 = _suffix_moments(side)
    w = side.width
    t = np.minimum(candidates * w, side.max)
    clipped = s0[candidates]
    err = s2[candidates] - 2 * t * s1[candidates] + t * t * clipped + clipped * (w * w / 12.0)
    return t, clipped, np.maximum(err, 0.0)


def _edge_candidates(nbins: int, limit: int) -> np.ndarray:
    """Bin-edge indices 1..nbins, thinned evenly to at most ``limit`` (always keeping the last)."""
    if nbins <= limit:
        return np.arange(1, nbins + 1)
    return np.unique(np.linspace(1, nbins, limit).round().astype(np.int64))


def mse_range(h: Histogram, symmetric: bool = True) -> tuple[float, float]:
    """Range minimising expected INT8 error: clipping error from the bins beyond it plus ``scale^2/12``
    rounding noise for every value inside."""
    if h.total == 0:
        return 0.0, 0.0
    h = coarsen(h)
    total = float(h.total)
    if symmetric:
        a = h.fold_abs()
        t, clipped, err = _clip_errors(a, _edge_candidates(a.counts.size, _MSE_CANDIDATES))
        s = t / 127.0
        mse = err + (total - clipped) * s * s / 12.0
        amax = float(t[int(np.argmin(mse))])
        return _finish(-amax, amax, True)
    pos, neg = _side(h, True), _side(h, False)
    tp, cp, ep = _clip_errors(pos, _edge_candidates(pos.counts.size, _MSE_CANDIDATES_2D))
    tn, cn, en = _clip_errors(neg, _edge_candidates(neg.counts.size, _MSE_CANDIDATES_2D))
    if neg.total == 0:
        tn, cn, en = np.zeros(1), np.zeros(1), np.zeros(1)
    if pos.total == 0:
        tp, cp, ep = np.zeros(1), np.zeros(1), np.zeros(1)
    s = (tp[None, :] + tn[:, None]) / 255.0
    mse = en[:, None] + ep[None, :] + (total - cn[:, None] - cp[None, :]) * s * s / 12.0
    i, j = np.unravel_index(int(np.argmin(mse)), mse.shape)
    return _finish(-float(tn[i]), float(tp[j]), False)


def kl_divergences(counts: np.ndarray, candidates: np.ndarray, levels: int) -> np.ndarray:
    """KL(P || Q) of TensorRT's entropy calibration for thresholds after bin ``i`` for each ``i`` in
    ``candidates`` (each ``>= levels``), all at once.

    P is ``counts[:i]`` with the clipped mass added to its last bin; Q merges ``counts[:i]`` into
    ``levels`` groups and spreads each group's mass evenly over the bins where P is non-zero. As Q is
    constant within a group, the sum over bins reduces to a sum over groups, computed from prefix
    sums: O(levels) per candidate.
    """
    c = counts.astype(np.float64)
    n = c.size
    zero = np.zeros(1)
    csum = np.concatenate([zero, np.cumsum(c)])
    nzsum = np.concatenate([zero, np.cumsum(c > 0)])
    xlogx = np.zeros_like(c)
    np.multiply(c, np.log(c, where=c > 0, out=np.zeros_like(c)), out=xlogx)
    lsum = np.concatenate([zero, np.cumsum(xlogx)])

    i = np.asarray(candidates, dtype=np.int64)
    total = csum[n]
    outliers = total - csum[i]
    last = c[i - 1] + outliers
    bounds = (np.arange(levels + 1)[None, :] * i[:, None]) // levels
    group = csum[bounds[:, 1:]] - csum[bounds[:, :-1]]
    nonzero = nzsum[bounds[:, 1:]] - nzsum[bounds[:, :-1]]
    nonzero[:, -1] += (c[i - 1] == 0) & (outliers > 0)  # the last bin is non-zero in P through clipping
    p_group = group.copy()
    p_group[:, -1] += outliers
    q_sum = csum[i]
    per_bin = np.divide(group, nonzero, out=np.zeros_like(group), where=nonzero > 0)
    q = np.maximum(per_bin / np.maximum(q_sum, 1e-300)[:, None], 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        last_term = np.where(last > 0, last * np.log(np.where(last > 0, last, 1.0)), 0.0)
        p_log_p = (lsum[i - 1] + last_term) / total - np.log(total)
        p_log_q = np.sum(np.where(p_group > 0, p_group * np.log(q), 0.0), axis=1) / total
    kl = p_log_p - p_log_q
    kl[q_sum <= 0] = np.inf
    return kl


def _kl_threshold(side: Histogram, levels: int) -> float:
    """Threshold (from 0) minimising KL divergence between the clipped and the quantized distribution."""
    n = side.counts.size
    if side.total == 0:
        return 0.0
    if n <= levels:
        return side.max
    counts = side.counts.copy()
    counts[0] = counts[1]  # as TensorRT/pytorch-quantization: a spike of exact zeros (ReLU) must not dominate
    candidates = np.arange(levels, n + 1)
    if candidates.size > _KL_COARSE:  # every stride-th threshold, then every one around the best
        stride = -(-candidates.size // _KL_COARSE)
        coarse = candidates[::stride]
        best = int(coarse[int(np.argmin(kl_divergences(counts, coarse, levels)))])
        candidates = np.arange(max(levels, best - stride), min(n, best + stride) + 1)
    i = int(candidates[int(np.argmin(kl_divergences(counts, candidates, levels)))])
    return float(min(i * side.width, side.max))


def entropy_range(h: Histogram, symmetric: bool = True, num_quantized_bins: int = 128) -> tuple[float, float]:
    """TensorRT-style entropy calibration on the histogram of ``|x|`` (symmetric) or each side
    separately (asymmetric: 128 levels per side, 256 when the data has one sign)."""
    if h.total == 0:
        return 0.0, 0.0
    h = coarsen(h)
    if symmetric:
        amax = _kl_threshold(h.fold_abs(), num_quantized_bins)
        return _finish(-amax, amax, True)
    pos, neg = _side(h, True), _side(h, False)
    both = pos.total > 0 and neg.total > 0
    levels = num_quantized_bins if both else 2 * num_quantized_bins
    hi = _kl_threshold(pos, levels) if pos.total else 0.0
    lo = -_kl_threshold(neg, levels) if neg.total else 0.0
    return _finish(lo, hi, False)


def compute_range(method: str, *, mn: float, mx: float, histogram: Histogram | None, symmetric: bool = True,
                  percentile: float = 99.99, num_quantized_bins: int = 128, name: str = "?") -> tuple[float, float]:
    """Dispatch to one method; histogram methods need ``histogram``."""
    if method == "minmax":
        return minmax_range(mn, mx, symmetric)
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method '{method}'; choose one of {', '.join(METHODS)}")
    if histogram is None:
        raise CalibrationError(
            f"tensor '{name}' has no histogram, so method '{method}' cannot be computed; "
            f"calibrate again with a histogram method")
    if method == "percentile":
        return percentile_range(histogram, percentile, symmetric)
    if method == "mse":
        return mse_range(histogram, symmetric)
    return entropy_range(histogram, symmetric, num_quantized_bins)
