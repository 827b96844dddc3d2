"""Per-batch inner loops of the observers: masked min/max, histogram binning, channel abs-max.

With numba installed the loops are compiled (one pass over the data, no temporaries, GIL released
so observer threads run in parallel; float32 data goes block by block through a vectorised
index pass and a four-lane counting pass); otherwise numpy does the same in a few vectorised
passes. Both give identical results. Loading numba costs about a second, so :func:`warm_up` does it in a
background thread and the numpy versions serve until it is ready. ``QDQ_NO_NUMBA=1`` disables numba.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
from types import ModuleType

import numpy as np

log = logging.getLogger(__name__)

_CHUNK = 1 << 16  # numpy path: elements per pass, so scratch buffers stay in L2
_LANES = 4  # numba path: independent counter rows (runs of equal bins do not stall on one counter)
_scratch = threading.local()

HAVE_NUMBA = os.environ.get("QDQ_NO_NUMBA") != "1" and importlib.util.find_spec("numba") is not None
_compiled: ModuleType | None = None
_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None


def _load() -> None:
    global _compiled
    try:
        from . import _numba_kernels as nk

        x, counts = np.zeros(4, np.float32), np.zeros(4, np.int64)
        nk.accumulate(x, np.float32(1.0), np.int64(0), counts, np.float32(np.inf))  # load (or compile)
        nk.accumulate(x, 1.0, np.int64(0), counts, math.inf)
        nk.minmax(x, 1e30)
        nk.scan_accumulate(x, np.float32(1.0), np.int64(0), np.zeros((4, 4), np.int32), np.int32(0x7F800000), counts)
        nk.channel_absmax(x.reshape(2, 2), np.float32(1e30), np.zeros(2, np.float32))
        _compiled = nk
        log.debug("numba observer kernels ready")
    except Exception as exc:  # pragma: no cover - numba broken in this environment
        log.warning("numba kernels unavailable (%s); using numpy", exc)


def warm_up(wait: bool = False) -> bool:
    """Start loading the numba kernels in the background (once); with ``wait``, block until done.

    Returns whether the compiled kernels are in use.
    """
    global _warm_thread
    if not HAVE_NUMBA:
        return False
    with _warm_lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=_load, name="qdq-numba-warmup", daemon=True)
            _warm_thread.start()
    if wait:
        _warm_thread.join()
    return _compiled is not None


# -- numpy ------------------------------------------------------------------------------------
def minmax_numpy(flat: np.ndarray, sentinel: float) -> tuple[float, float, int]:
    """Min and max of the values with ``|x| < sentinel`` (NaN excluded) and how many were excluded."""
    with np.errstate(invalid="ignore", over="ignore"):  # float16 data: the sentinel casts to inf
        keep = np.abs(flat) < sentinel
    vals = flat[keep]
    if vals.size == 0:
        return math.inf, -math.inf, int(flat.size)
    return float(vals.min()), float(vals.max()), int(flat.size - vals.size)


def _buffers() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = (np.empty(_CHUNK, np.float32), np.empty(_CHUNK, np.float64),
                np.empty(_CHUNK, np.int32), np.empty(_CHUNK, np.intp))
        _scratch.bufs = bufs
    return bufs


def accumulate_numpy(flat: np.ndarray, exp: int, origin: int, counts: np.ndarray, sentinel: float | None) -> None:
    """Add ``floor(x / 2**exp) - origin`` of every kept value to ``counts`` (all must fall inside)."""
    if sentinel is not None:
        with np.errstate(invalid="ignore", over="ignore"):  # float16 data: the sentinel casts to inf
            flat = flat[np.abs(flat) < sentinel]
    if flat.size == 0:
        return
    buf32, buf64, idx32, idx = _buffers()
    inv = math.ldexp(1.0, -exp)
    n = counts.size
    # float32 is exact as well when nothing can underflow (width <= 1) and every bin index fits the
    # 24-bit mantissa; it is markedly faster than float64.
    limit = 2.0**23
    use32 = (flat.dtype in (np.float32, np.float16) and exp <= 0
             and float(np.abs(flat).max()) * inv < limit and abs(origin) + n < limit)
    buf = buf32 if use32 else buf64
    scale, shift = (np.float32(inv), np.float32(origin)) if use32 else (inv, float(origin))
    for s in range(0, flat.size, _CHUNK):
        chunk = flat[s:s + _CHUNK]
        m = chunk.size
        b = buf[:m]
        np.multiply(chunk, scale, out=b)  # exact: scaling by a power of two
        np.floor(b, out=b)
        np.subtract(b, shift, out=b)  # exact: integers below 2**24 (float32) or 2**53
        np.copyto(idx32[:m], b, casting="unsafe")  # float -> int32 -> intp beats float -> intp
        np.copyto(idx[:m], idx32[:m])
        counts += np.bincount(idx[:m], minlength=n)[:n]


# -- dispatch ---------------------------------------------------------------------------------
def _numba_view(flat: np.ndarray) -> np.ndarray:
    return flat if flat.dtype in (np.float32, np.float64) else flat.astype(np.float32)


def minmax(flat: np.ndarray, sentinel: float) -> tuple[float, float, int]:
    """Masked min/max (see :func:`minmax_numpy`), compiled once numba is ready."""
    nk = _compiled
    if nk is not None and flat.size:
        mn, mx, excluded = nk.minmax(_numba_view(flat), float(sentinel))
        return float(mn), float(mx), int(excluded)
    return minmax_numpy(flat, sentinel)


def accumulate(flat: np.ndarray, exp: int, origin: int, counts: np.ndarray, sentinel: float | None) -> None:
    """Histogram binning (see :func:`accumulate_numpy`), compiled once numba is ready."""
    nk = _compiled
    if nk is None:
        accumulate_numpy(flat, exp, origin, counts, sentinel)
        return
    flat = _numba_view(flat)
    inv, cut = _inv(flat, exp, origin, counts.size, math.inf if sentinel is None else sentinel)
    outside = nk.accumulate(flat, inv, np.int64(origin), counts, cut)
    if outside:
        raise AssertionError(f"{outside} values fell outside the histogram grid")


def _inv(flat: np.ndarray, exp: int, origin: int, n: int, sentinel: float) -> tuple[float, float]:
    """Scale and sentinel in float32 when that arithmetic is exact for every in-grid value, else float64."""
    inv = math.ldexp(1.0, -exp)
    if flat.dtype == np.float32 and -126 <= exp <= 0 and abs(origin) + n < 2**23:
        return np.float32(inv), np.float32(sentinel if sentinel < 3e38 else np.inf)
    return inv, float(sentinel)


def scan_accumulate(flat: np.ndarray, exp: int, origin: int, counts: np.ndarray,
                    sentinel: float) -> tuple[float, float, int] | None:
    """Fused min/max + binning in one pass (numba, float32 arithmetic only).

    Returns ``(min, max, excluded)`` with the bins added to ``counts`` when every kept value fell
    inside the grid; returns None (``counts`` untouched) when the grid must widen first, when the
    bins need float64 arithmetic (rare: huge or tiny ranges, float64 data) or numba is not ready:
    the caller then scans and bins in two passes.
    """
    nk = _compiled
    if nk is None or flat.size == 0:
        return None
    flat = _numba_view(flat)
    inv, cut = _inv(flat, exp, origin, counts.size, sentinel)
    if not isinstance(inv, np.float32) or flat.size >= 2**31:
        return None
    lanes = getattr(_scratch, "lanes", None)  # all zero between calls (the kernel clears it)
    if lanes is None or lanes.shape[1] != counts.size:
        lanes = _scratch.lanes = np.zeros((_LANES, counts.size), np.int32)
    cut_bits = np.array([cut], np.float32).view(np.int32)[0]
    mn, mx, excluded, outside = nk.scan_accumulate(flat, inv, np.int64(origin), lanes, cut_bits, counts)
    if outside:
        return None
    return float(mn), float(mx), int(excluded)


def channel_absmax(rows: np.ndarray, sentinel: float) -> np.ndarray | None:
    """Per-column max of ``|x|`` of a C-contiguous float32 ``(n, channels)`` array, values with
    ``|x| >= sentinel`` and NaN skipped (0 where a column has none); None when numba is not ready."""
    nk = _compiled
    if nk is None or rows.dtype != np.float32 or not rows.flags.c_contiguous:
        return None
    out = np.zeros(rows.shape[1], np.float32)
    cut = np.float32(sentinel) if sentinel < 3e38 else np.float32(np.inf)
    nk.channel_absmax(rows, cut, out)
    return out
