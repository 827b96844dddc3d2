"""Quantization settings and math: QuantConfig, op rules, INT8 scale/zero-point scheme, SmoothQuant alpha search."""
from .config import QuantConfig
from .errors import QuantizationError

__all__ = ["QuantConfig", "QuantizationError"]
