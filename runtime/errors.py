"""Error types raised by the runtime."""
from __future__ import annotations


class EngineError(RuntimeError):
    """A model or engine file could not be loaded or run."""


class InputError(ValueError):
    """Feeds do not match the engine's inputs (name, dtype, rank or shape)."""


class BackendUnavailableError(EngineError):
    """The backend needed for an artifact is not installed or has no device here."""


class OutputError(Exception):
    """An output file cannot be written there, or must not be (it is an input, or a file of another kind)."""
