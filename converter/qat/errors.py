"""Errors raised by quantization-aware training."""
from __future__ import annotations

from ..errors import ConverterError


class QATError(ConverterError):
    """Quantization-aware training could not do what was asked (bad setting, model, checkpoint...)."""
