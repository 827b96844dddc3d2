"""Give memory that Python, torch and protobuf have freed back to the operating system."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_memory() -> None:
    """Collect garbage, then ask glibc to return its free pages (``malloc_trim``; a no-op without glibc).

    glibc keeps freed heap memory for reuse: after the 0.5 GB float ONNX model or a torch LM is dropped,
    RSS would otherwise stay where it peaked and the next stage's memory would come on top of it.
    """
    gc.collect()
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is not None:
        trim(0)
