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
    """counts[floor(x * inv) - origin] += 1 for kept values; returns how many fell outside."""
    n = counts.size
    outside = 0
    for i in range(flat.size):
        v = np.float64(flat[i])
        if abs(v) < sentinel:
            j = np.int64(np.floor(v * inv)) - origin
            if j >= 0 and j < n:
                counts[j] += 1
            else:
                outside += 1
    return outside
