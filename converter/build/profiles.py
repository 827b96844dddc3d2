"""Optimization profiles for dynamic axes: parse ``--shapes`` and fill in every dynamic input.

``--shapes input_ids:1x1,8x128,32x512`` gives min, opt and max shapes of one input; ``name:8x128`` fixes
all three. Several inputs go in one string separated by spaces or ``;``, or in repeated options.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence

from runtime.specs import TensorSpec

from .config import BuildError, ShapeRange

log = logging.getLogger(__name__)

_BATCH_NAMES = {"batch", "batch_size", "n", "N"}


def _parse_shape(text: str, where: str) -> tuple[int, ...]:
    if not re.fullmatch(r"\d+(x\d+)*", text):
        raise BuildError(f"bad shape {text!r} in {where!r}: write dims joined by x, e.g. 8x128")
    return tuple(int(d) for d in text.split("x"))


def parse_shapes(specs: Iterable[str]) -> dict[str, ShapeRange]:
    """Parse ``NAME:MIN,OPT,MAX`` (or ``NAME:SHAPE``) entries into ``{name: (min, opt, max)}``."""
    out: dict[str, ShapeRange] = {}
    for spec in specs:
        for item in re.split(r"[;\s]+", spec.strip()):
            if not item:
                continue
            name, sep, shapes = item.rpartition(":")
            if not sep or not name:
                raise BuildError(f"bad --shapes entry {item!r}: expected NAME:MIN,OPT,MAX such as input_ids:1x1,8x128,32x512")
            parts = [_parse_shape(s, item) for s in shapes.split(",")]
            if len(parts) == 1:
                parts *= 3
            if len(parts) != 3:
                raise BuildError(f"bad --shapes entry {item!r}: give one shape or three (min,opt,max), not {len(parts)}")
            if name in out:
                raise BuildError(f"--shapes gives input {name!r} twice")
            out[name] = (parts[0], parts[1], parts[2])
    return out


def _check_range(spec: TensorSpec, rng: ShapeRange) -> None:
    for label, shape in zip(("min", "opt", "max"), rng):
        if len(shape) != spec.rank:
            raise BuildError(f"--shapes {spec.name}: {label} shape {'x'.join(map(str, shape))} has rank {len(shape)}; "
                             f"the input is {spec.describe()}")
        for axis, (got, want) in enumerate(zip(shape, spec.shape)):
            if isinstance(want, int) and want >= 0 and got != want:
                raise BuildError(f"--shapes {spec.name}: axis {axis} is fixed at {want} in the model, "
                                 f"but the {label} shape has {got}")
            if got < 1:
                raise BuildError(f"--shapes {spec.name}: {label} size on axis {axis} must be >= 1")
    lo, opt, hi = rng
    for axis in range(spec.rank):
        if not lo[axis] <= opt[axis] <= hi[axis]:
            raise BuildError(f"--shapes {spec.name}: axis {axis} needs min <= opt <= max, got "
                             f"{lo[axis]}, {opt[axis]}, {hi[axis]}")


def resolve_profiles(inputs: Sequence[TensorSpec], given: Mapping[str, ShapeRange],
                     default_batch: tuple[int, int, int] = (1, 1, 32),
                     default_dim: tuple[int, int, int] = (1, 128, 512)) -> dict[str, ShapeRange]:
    """(min, opt, max) for every input with a dynamic axis.

    Inputs named in ``given`` are checked against the model (rank, fixed dims, min <= opt <= max). A
    dynamic axis of another input takes the range of a same-named symbolic dim of a given input (so
    ``input_ids`` fixes ``attention_mask`` too), else ``default_batch`` (axis 0 or a batch-named dim) or
    ``default_dim``. A symbolic dim given two different ranges is an error.
    """
    by_name = {s.name: s for s in inputs}
    unknown = [n for n in given if n not in by_name]
    if unknown:
        raise BuildError(f"--shapes names {unknown[0]!r}, which is not an input; inputs: {', '.join(by_name)}")
    named: dict[str, tuple[int, int, int]] = {}
    for name, rng in given.items():
        spec = by_name[name]
        _check_range(spec, rng)
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str):
                triple = (rng[0][axis], rng[1][axis], rng[2][axis])
                if named.setdefault(dim, triple) != triple:
                    raise BuildError(f"--shapes gives dim {dim!r} two ranges: {named[dim]} and {triple} ({name})")
    out: dict[str, ShapeRange] = {}
    for spec in inputs:
        if all(isinstance(d, int) and d >= 0 for d in spec.shape):
            continue
        if spec.name in given:
            out[spec.name] = given[spec.name]
            continue
        triples = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim >= 0:
                triples.append((dim, dim, dim))
            elif isinstance(dim, str) and dim in named:
                triples.append(named[dim])
            elif axis == 0 or dim in _BATCH_NAMES:
                triples.append(default_batch)
            else:
                triples.append(default_dim)
        out[spec.name] = (tuple(t[0] for t in triples), tuple(t[1] for t in triples), tuple(t[2] for t in triples))
        log.info("profile for %s: min %s opt %s max %s (defaults; set --shapes to change)", spec.name,
                 *(format_shape(s) for s in out[spec.name]))
    for name in given:
        if name not in out:
            log.info("--shapes %s: the input has no dynamic axis; ignored", name)
    return out


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def ort_profile_options(profiles: Mapping[str, ShapeRange]) -> dict[str, str]:
    """The TensorRT execution provider's ``trt_profile_{min,opt,max}_shapes`` options for ``profiles``."""
    if not profiles:
        return {}
    keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    return {key: ",".join(f"{name}:{format_shape(rng[i])}" for name, rng in profiles.items())
            for i, key in enumerate(keys)}
