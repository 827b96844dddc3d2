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


@numba.njit(nogil=True, cache=True)
def scan_accumulate(flat, inv, origin, lanes, sentinel):  # type: ignore[no-untyped-def]
    """One pass: min/max/excluded count of the kept values, their bins counted into ``lanes``.

    ``lanes`` is ``(k, bins)`` with ``k`` a power of two: element ``i`` counts in row ``i % k``, so
    runs of equal bins (softmax, ReLU zeros) do not stall on one counter; the caller sums the rows.
    Returns ``(min, max, excluded, outside)``; when ``outside > 0`` the counts are incomplete and the
    caller discards them.
    """
    k = lanes.shape[0] - 1
    n = lanes.shape[1]
    mn = math.inf
    mx = -math.inf
    excluded = 0
    outside = 0
    for i in range(flat.size):
        v = flat[i]
        if abs(v) < sentinel:
            if v < mn:
                mn = v
            if v > mx:
                mx = v
            j = np.int64(np.floor(v * inv)) - origin
            if j >= 0 and j < n:
                lanes[i & k, j] += 1
            else:
                outside += 1
        else:
            excluded += 1
    return mn, mx, excluded, outside
