"""The sample sets shipped with the package, addressed as ``builtin:NAME``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DataError

PREFIX = "builtin:"
SAMPLES_DIR = Path(__file__).parent / "samples"

_BUILTINS: dict[str, tuple[str, dict[str, Any]]] = {
    "text": ("sentences.txt", {}),
    "text-heldout": ("sentences_heldout.txt", {}),
    "corpus": ("corpus.txt", {}),
    # prose + dialogue + code + JSON/CSV/YAML in equal shares (tools/make_calib_mix.py)
    "mix": ("mix.txt", {}),
    # The digit PNGs store sklearn's 0..16 values times 15, so 240 maps back to 1.0 exactly.
    "digits": ("digits", {"max_value": 240.0}),
}
BUILTIN_NAMES: tuple[str, ...] = tuple(_BUILTINS)


def is_builtin(source: object) -> bool:
    """True for strings of the form ``builtin:NAME``."""
    return isinstance(source, str) and source.startswith(PREFIX)


def _entry(name: str) -> tuple[str, dict[str, Any]]:
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if key not in _BUILTINS:
        known = ", ".join(PREFIX + n for n in BUILTIN_NAMES)
        raise DataError(f"unknown built-in data set {name!r}; available: {known}")
    return _BUILTINS[key]


def builtin_path(name: str) -> Path:
    """Path of a shipped sample set: ``"text"``, ``"text-heldout"``, ``"corpus"``, ``"mix"`` or ``"digits"``.

    The ``builtin:`` prefix is optional.
    """
    return SAMPLES_DIR / _entry(name)[0]


def builtin_options(name: str) -> dict[str, Any]:
    """Reader options a shipped sample set needs (e.g. the pixel scale of the digits)."""
    return dict(_entry(name)[1])
