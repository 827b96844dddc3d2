"""numba-compiled observer loops (imported lazily by :mod:`converter.calib.kernels`)."""
from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def minmax(flat, sentinel):  # type: ignore[no-untyped-def]
    """Min, max and excluded count of the values with ``|x| < sentinel`` (NaN excluded)."""
    mn = math.inf
    mx = -math.inf
    excluded = 0
    for i in range(flat.size):
        v = flat[i]
        if abs(v) < sentinel:
            if v < mn:
                mn = v
            if v > mx:
                mx = v
        else:
            excluded += 1
    return mn, mx, excluded


@numba.njit(nogil=True, cache=True)
def accumulate(flat, inv, origin, counts, sentinel):  # type: ignore[no-untyped-def]
    """counts[floor(x * inv) - origin] += 1 for kept values; returns how many fell outside.

    Arithmetic happens in the type of ``inv``: float64 is always exact for float32 data; float32
    (faster) is exact when the caller guarantees no underflow and products below 2**24.
    """
    n = counts.size
    outside = 0
    for i in range(flat.size):
        v = flat[i]
        if abs(v) < sentinel:
            j = np.int64(np.floor(v * inv)) - origin
            if j >= 0 and j < n:
                counts[j] += 1
            else:
                outside += 1
    return outside


_BLOCK = 2048  # elements per block: the block's bin indices stay in L1


@numba.njit(nogil=True, cache=True)
def _key_to_float(key):  # type: ignore[no-untyped-def]
    tmp = np.empty(1, np.int32)
    tmp[0] = key ^ ((key >> np.int32(31)) & np.int32(0x7FFFFFFF))
    return tmp.view(np.float32)[0]


@numba.njit(nogil=True, cache=True)
def scan_accumulate(flat, inv, origin, lanes, cut_bits, counts):  # type: ignore[no-untyped-def]
    """One pass over float32 data (float32 arithmetic): min/max/excluded count of the kept values,
    their bins ``floor(x * inv) - origin`` added to ``counts``; in blocks, counted in four lanes.

    ``lanes`` is an all-zero ``(4, bins)`` int32 scratch, left all zero again; ``counts`` the int64
    histogram the result is added to; ``cut_bits`` the bit pattern of the (float32) sentinel;
    ``inv`` float32 with ``|origin| + bins < 2**23`` (the caller checks). Per block, one branch-free
    pass finds the largest ``|x|`` bit pattern, the min/max as order-preserving integer keys and the
    bin indices (vectorised); when the block has no excluded value and fits the grid, a second pass
    counts the bins into the four lanes in turn. Other blocks take the per-element path.
    Returns ``(min, max, excluded, outside)``; when ``outside > 0`` nothing was added to ``counts``.
    """
    bits = flat.view(np.int32)
    n = lanes.shape[1]
    idx = np.empty(_BLOCK, np.uint32)  # unsigned: no negative-index wraparound code when counting
    lo = np.float32(-(2.0**30))
    hi = np.float32(2.0**30)
    org = np.int32(origin)
    kmin = np.int32(2**31 - 1)
    kmax = np.int32(-(2**31))
    first = n  # the lane columns touched: [first, last]
    last = -1
    mn = math.inf
    mx = -math.inf
    excluded = 0
    outside = 0
    size = flat.size
    for s in range(0, size, _BLOCK):
        m = min(_BLOCK, size - s)
        amax = np.int32(0)
        bkmin = np.int32(2**31 - 1)
        bkmax = np.int32(-(2**31))
        imin = np.int32(2**31 - 1)
        imax = np.int32(-(2**31))
        xb = flat[s:s + m]  # block views: plain indices let LLVM vectorise the loop
        bb = bits[s:s + m]
        for i in range(m):
            b = bb[i]
            a = np.int32(b & np.int32(0x7FFFFFFF))  # numba widens int32 arithmetic: keep 32 bits
            amax = max(amax, a)
            key = np.int32(b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF)))
            bkmin = min(bkmin, key)
            bkmax = max(bkmax, key)
            v = xb[i] if a < cut_bits else np.float32(0.0)
            j = np.int32(np.int32(np.floor(min(max(v * inv, lo), hi))) - org)
            idx[i] = np.uint32(j)  # only used when every j of the block is in [0, bins)
            imin = min(imin, j)
            imax = max(imax, j)
        if amax < cut_bits and imin >= 0 and imax < n:
            kmin = min(kmin, bkmin)
            kmax = max(kmax, bkmax)
            first = min(first, imin)
            last = max(last, imax)
            m4 = m - m % 4
            for i in range(0, m4, 4):
                lanes[0, idx[i]] += 1
                lanes[1, idx[i + 1]] += 1
                lanes[2, idx[i + 2]] += 1
                lanes[3, idx[i + 3]] += 1
            for i in range(m4, m):
                lanes[0, idx[i]] += 1
            continue
        for i in range(s, s + m):  # excluded values or values outside the grid in this block
            if (bits[i] & np.int32(0x7FFFFFFF)) < cut_bits:
                v = flat[i]
                if v < mn:
                    mn = v
                if v > mx:
                    mx = v
                j = np.int32(np.floor(min(max(v * inv, lo), hi))) - org
                if j < 0 or j >= n:
                    outside = 1
                    break
                lanes[0, j] += 1
                first = min(first, j)
                last = max(last, j)
            else:
                excluded += 1
        if outside:
            break
    for j in range(first, last + 1):  # fold the lanes into counts (unless discarded), leave them zero
        if not outside:
            counts[j] += lanes[0, j] + lanes[1, j] + lanes[2, j] + lanes[3, j]
        lanes[0, j] = 0
        lanes[1, j] = 0
        lanes[2, j] = 0
        lanes[3, j] = 0
    if kmin <= kmax:
        mn = min(mn, np.float64(_key_to_float(kmin)))
        mx = max(mx, np.float64(_key_to_float(kmax)))
    return mn, mx, excluded, outside


@numba.njit(nogil=True, cache=True)
def channel_absmax(rows, sentinel, out):  # type: ignore[no-untyped-def]
    """``out[c] = max(out[c], |rows[r, c]|)`` over rows, skipping ``|x| >= sentinel`` and NaN.

    ``rows`` is C-contiguous ``(n, channels)`` float32/float64; the inner loop over channels vectorises.
    """
    n, c = rows.shape
    for r in range(n):
        row = rows[r]
        for j in range(c):
            a = abs(row[j])
            if a < sentinel and a > out[j]:
                out[j] = a
