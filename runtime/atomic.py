"""Write files so that a reader never sees a half-written one."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` for a temp file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Save arrays as .npz atomically."""
    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays)

    return atomic_write(path, write)


@contextlib.contextmanager
def staging_dir(output: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """A hidden temporary folder beside ``output`` (same filesystem, so ``os.replace`` is atomic),
    removed with whatever is left in it when the block ends."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=suffix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(staging: Path, output: str | os.PathLike[str],
                    side_files: Sequence[str] | None = None) -> list[Path]:
    """Move ``staging/<output name>`` to ``output`` and the side files (default: every other file in
    ``staging``, e.g. external data) beside it; side files first, so the main file appears complete."""
    output = Path(output)
    names = [f.name for f in staging.iterdir() if f.name != output.name] if side_files is None else list(side_files)
    moved = []
    for name in names:
        os.replace(staging / name, output.parent / name)
        moved.append(output.parent / name)
    os.replace(staging / output.name, output)
    return [*moved, output]
