"""Tensor calibration data: ``.npz`` (arrays keyed by input name), ``.npy`` (one input) or a folder of ``.npz``."""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from runtime.specs import TensorSpec

from .batching import fixed, plan_batches
from .errors import DataError
from .npz import npz_arrays, npz_headers

log = logging.getLogger(__name__)

TENSOR_SUFFIXES = (".npz", ".npy")


def _npy_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {path} as an .npy array: {exc}") from exc


def _headers(path: Path, specs: Sequence[TensorSpec]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    if path.suffix.lower() == ".npy":
        if len(specs) != 1:
            names = ", ".join(repr(s.name) for s in specs)
            raise DataError(f"{path} holds one array, but the model has {len(specs)} inputs ({names}); "
                            f"use an .npz keyed by input name")
        arr = _npy_array(path)
        return {specs[0].name: (arr.shape, arr.dtype)}
    return npz_headers(path)


def check_arrays(path: Path, headers: dict[str, tuple[tuple[int, ...], np.dtype]],
                 specs: Sequence[TensorSpec]) -> int:
    """Check names, dtypes, ranks and fixed dims against the specs; return the number of samples (axis 0)."""
    for spec in specs:
        if spec.name not in headers:
            raise DataError(f"input {spec.name!r} is missing from {path} (it has: {', '.join(headers) or 'nothing'})")
    wanted = {s.name for s in specs}
    for name in headers:
        if name not in wanted:
            raise DataError(f"array {name!r} in {path} is not an input of the model "
                            f"(inputs: {', '.join(sorted(wanted))})")
    counts: dict[str, int] = {}
    for spec in specs:
        shape, dtype = headers[spec.name]
        if not np.can_cast(dtype, spec.dtype, "same_kind"):
            raise DataError(f"input {spec.name!r}: {path} has {dtype.name}, which cannot be cast "
                            f"to the model's {np.dtype(spec.dtype).name}")
        if len(shape) != spec.rank:
            raise DataError(f"input {spec.name!r}: expected rank {spec.rank} ({spec.describe()}, axis 0 = samples) "
                            f"but {path} has rank {len(shape)} {tuple(shape)}")
        for axis in range(1, spec.rank):
            want = fixed(spec.shape[axis])
            if want is not None and shape[axis] != want:
                raise DataError(f"input {spec.name!r}: axis {axis} must be {want} ({spec.describe()}) "
                                f"but {path} has {shape[axis]}")
        counts[spec.name] = shape[0]
    if len(set(counts.values())) > 1:
        raise DataError(f"inputs in {path} have different sample counts: {counts}")
    return next(iter(counts.values()))


class TensorReader:
    """Batches along axis 0 of saved arrays, validated against the model's inputs before any batch is made."""

    OPTIONS: frozenset[str] = frozenset()

    def __init__(
        self,
        source: str | Path,
        input_specs: Sequence[TensorSpec],
        *,
        batch_size: int = 8,
        num_samples: int | None = None,
    ) -> None:
        self.path = Path(source)
        if not self.path.exists():
            raise DataError(f"tensor data not found: {self.path}")
        self.specs = list(input_specs)
        self.plan = plan_batches(self.specs, batch_size, num_samples)
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() == ".npz" and p.is_file())
        elif self.path.suffix.lower() in TENSOR_SUFFIXES:
            self.files = [self.path]
        else:
            raise DataError(f"tensor data must be .npz, .npy or a folder of .npz files, got {self.path}")
        total = sum(check_arrays(f, _headers(f, self.specs), self.specs) for f in self.files)
        if total == 0:
            raise DataError(f"no samples in {self.path}: no .npz files or only empty arrays")
        self.total = total

    def _samples(self) -> Iterator[tuple[Path, int]]:
        """(file, row) pairs; rows are gathered into batches and sliced per file."""
        for path in self.files:
            count = check_arrays(path, _headers(path, self.specs), self.specs)
            for row in range(count):
                yield path, row

    def _arrays(self, path: Path) -> dict[str, np.ndarray]:
        if path.suffix.lower() == ".npy":
            return {self.specs[0].name: _npy_array(path)}
        return npz_arrays(path)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        opened: tuple[Path, dict[str, np.ndarray]] | None = None
        for batch in self.plan.batches(self._samples(), self.path):
            pieces: dict[str, list[np.ndarray]] = {s.name: [] for s in self.specs}
            start = 0
            while start < len(batch):
                path, first = batch[start]
                stop = start
                while stop < len(batch) and batch[stop][0] == path:
                    stop += 1
                if opened is None or opened[0] != path:
                    opened = (path, self._arrays(path))  # only one file's arrays are open at a time
                for name, arr in opened[1].items():
                    pieces[name].append(arr[first:first + stop - start])
                start = stop
            yield {s.name: np.asarray(np.concatenate(pieces[s.name]), dtype=s.dtype) for s in self.specs}
