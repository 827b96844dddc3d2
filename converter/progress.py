"""tqdm bars for long library steps; the caller decides whether to show them (the CLI: on a terminal)."""
from __future__ import annotations

import sys
from typing import Any


def bar(enabled: bool, total: int | None, desc: str, unit: str = "it") -> Any:
    """A tqdm bar on stderr, or one that draws nothing when not ``enabled``; use as a context manager."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=not enabled)
