"""Build a folder in a cache once: under a lock, staged beside it, renamed into place when complete."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from runtime.atomic import staging_dir


def convert_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Return ``folder``, first calling ``build(staging)`` to fill it if it does not exist yet.

    A lock file beside the folder serializes concurrent builders (the second waits, then finds the
    folder); the folder only ever appears whole, by renaming the staging folder, so a build that
    fails or is killed leaves nothing a later call would use.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if folder.is_dir():
            return folder
        with staging_dir(folder) as staging:
            build(staging)
            os.replace(staging, folder)
    return folder
