"""Synthetic feeds built from input specs, for warm-up and benchmarks."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .specs import TensorSpec

_BATCH_NAMES = {"batch", "batch_size", "n", "N"}


def resolve_shape(spec: TensorSpec, batch: int = 1, sequence: int = 128, dims: dict[str, int] | None = None) -> tuple[int, ...]:
    """Concrete shape for a spec: named dims from ``dims``, axis 0 = batch, other dynamic axes = sequence."""
    dims = dims or {}
    shape = []
    for axis, d in enumerate(spec.shape):
        if isinstance(d, int) and d >= 0:
            shape.append(d)
        elif isinstance(d, str) and d in dims:
            shape.append(dims[d])
        elif axis == 0 or (isinstance(d, str) and d in _BATCH_NAMES):
            shape.append(batch)
        else:
            shape.append(sequence)
    return tuple(shape)


def synthetic_feeds(
    specs: Sequence[TensorSpec], batch: int = 1, sequence: int = 128, seed: int = 0, dims: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Random but plausible feeds: token ids in a small vocabulary, masks of ones, floats in [0, 1)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = resolve_shape(spec, batch, sequence, dims)
        dt = np.dtype(spec.dtype)
        name = spec.name.lower()
        if dt.kind in "iu":
            if "mask" in name:
                arr = np.ones(shape, dtype=dt)
            elif "type" in name or "segment" in name:
                arr = np.zeros(shape, dtype=dt)
            elif "position" in name:
                arr = np.broadcast_to(np.arange(shape[-1], dtype=dt), shape).copy()
            else:
                arr = rng.integers(100, 1000, size=shape, dtype=dt)
        elif dt.kind == "b":
            arr = np.ones(shape, dtype=bool)
        else:
            arr = rng.random(shape).astype(dt)
        feeds[spec.name] = arr
    return feeds
