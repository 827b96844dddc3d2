"""Write files so that a reader never sees a half-written one.

Every file lands with the mode a plain ``open()`` would give it (0666 minus the umask), although it was
staged as a private temp file; a folder or temp file that cannot be created raises ``OutputError``.
Check an output before long work with ``runtime.outputs.check_output``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import OutputError


def umask() -> int:
    """The process's umask (read from /proc where it can be, without changing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a new file: ``0o666 & ~umask`` (0644 with the usual umask 022)."""
    return 0o666 & ~umask()


def _cannot_write(path: Path, exc: OSError) -> OutputError:
    if isinstance(exc, (FileExistsError, NotADirectoryError)):  # from mkdir: a file is in the way
        return OutputError(f"cannot write {path}: its folder {path.parent} cannot be made (a file is in the way)")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` for a temp file beside ``path``, then rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, file_mode())  # mkstemp made it 0600
        _replace(tmp, path)
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
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=suffix))
    except OSError as exc:
        raise _cannot_write(output, exc) from None
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
        _replace(staging / name, output.parent / name)
        moved.append(output.parent / name)
    _replace(staging / output.name, output)
    return [*moved, output]


def _replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """``os.replace``, with a refused destination (e.g. an existing folder) as ``OutputError``."""
    try:
        os.replace(src, dst)
    except (IsADirectoryError, PermissionError, NotADirectoryError) as exc:
        raise _cannot_write(Path(dst), exc) from None
