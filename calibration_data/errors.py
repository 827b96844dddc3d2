"""The single error type raised by the calibration data readers."""
from __future__ import annotations


class DataError(ValueError):
    """Calibration data is missing, empty, unreadable or does not fit the model's inputs."""
