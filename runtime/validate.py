"""Check feeds against an engine's input specs before they reach a backend."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import InputError
from .specs import TensorSpec


def validate_feeds(feeds: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Return feeds as contiguous arrays, or raise InputError naming the offending input.

    Checks that every input is given, no unknown input is given, the dtype matches exactly
    (no silent casts: an int32 fed to an int64 input is an error), the rank matches, and
    fixed dimensions have the declared size.
    """
    if not isinstance(feeds, Mapping):
        raise InputError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
    by_name = {s.name: s for s in specs}
    unknown = [k for k in feeds if k not in by_name]
    if unknown:
        raise InputError(
            f"unknown input {unknown[0]!r}; the model's inputs are: {', '.join(by_name) or '(none)'}"
        )
    missing = [n for n in by_name if n not in feeds]
    if missing:
        raise InputError(
            f"missing input {missing[0]!r}; expected {by_name[missing[0]].describe()}"
        )
    out: dict[str, np.ndarray] = {}
    for name, value in feeds.items():
        spec = by_name[name]
        arr = np.asarray(value)
        if arr.dtype != spec.dtype:
            raise InputError(
                f"input {name!r} has dtype {arr.dtype.name}; expected {np.dtype(spec.dtype).name} ({spec.describe()})"
            )
        if arr.ndim != spec.rank:
            raise InputError(
                f"input {name!r} has rank {arr.ndim} (shape {list(arr.shape)}); expected rank {spec.rank} ({spec.describe()})"
            )
        for axis, (got, want) in enumerate(zip(arr.shape, spec.shape)):
            if isinstance(want, int) and want >= 0 and got != want:
                raise InputError(
                    f"input {name!r} has size {got} on axis {axis}; expected {want} ({spec.describe()})"
                )
        out[name] = np.ascontiguousarray(arr)
    return out
