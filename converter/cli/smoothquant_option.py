"""Parsing of ``--smoothquant`` (shared by `qdq quantize` and `qdq quantize-w8a8`)."""
from __future__ import annotations

import click


def parse_smoothquant(value: str | None) -> float | str | None:
    """``--smoothquant``: off/none -> None, auto, or an alpha in [0, 1] (a usage error otherwise)."""
    if value is None or value.lower() in ("off", "none"):
        return None
    if value.lower() == "auto":
        return "auto"
    try:
        alpha = float(value)
    except ValueError:
        raise click.BadParameter(f"expected a number in [0, 1] or 'auto', got {value!r}") from None
    if not 0.0 <= alpha <= 1.0:
        raise click.BadParameter(f"alpha must be in [0, 1], got {alpha}")
    return alpha
