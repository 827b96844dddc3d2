"""The error raised when a model cannot be quantized as asked."""
from __future__ import annotations

from ..errors import ConverterError


class QuantizationError(ConverterError):
    """Quantization could not proceed: bad config, unsupported graph, or missing inputs."""
