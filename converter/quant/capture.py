"""Moved to ``converter.smoothquant.capture``; this path keeps old imports working."""
from ..smoothquant.capture import capture

__all__ = ["capture"]
