"""Check feeds against an engine's input specs before they reach a backend."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import InputError
from .specs import TensorSpec


def validate_feeds(feeds: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Return feeds as contiguous arrays, or raise InputError naming the offending input.

    Checks that every input is given, no unknown input is given, the dtype matches exactly
    (no silent casts: an int32 fed to an int64 input is an error), the rank matches,
    fixed dimensions have the declared size, and dimensions that share a symbolic name (such as
    ``sequence`` of input_ids and attention_mask) have the same size in every input.
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
        out[name] = np.require(arr, requirements="C")  # ascontiguousarray would turn a 0-d feed into shape (1,)
    _check_shared_dims(out, by_name)
    return out


def _check_shared_dims(feeds: Mapping[str, np.ndarray], by_name: Mapping[str, TensorSpec]) -> None:
    """Raise InputError naming both inputs when a symbolic dimension has two sizes in the feeds."""
    seen: dict[str, tuple[str, int, int]] = {}  # dim name -> (input, axis, size) where first met
    for name, arr in feeds.items():
        for axis, dim in enumerate(by_name[name].shape):
            if not isinstance(dim, str) or not dim or dim == "?":
                continue
            other, other_axis, size = seen.setdefault(dim, (name, axis, arr.shape[axis]))
            if size != arr.shape[axis]:
                raise InputError(
                    f"inputs disagree on dimension {dim!r}: {other!r} {list(feeds[other].shape)} has {size} on "
                    f"axis {other_axis}, {name!r} {list(arr.shape)} has {arr.shape[axis]} on axis {axis} "
                    f"(expected {by_name[other].describe()} and {by_name[name].describe()})"
                )
