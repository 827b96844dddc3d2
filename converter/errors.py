"""Errors raised by the converter stages."""
from __future__ import annotations


class ConverterError(Exception):
    """Base class: a conversion stage could not do what was asked."""


class ExportError(ConverterError):
    """Export failed, or the exported model disagrees with the framework beyond tolerance."""


class ModelNotFoundError(ConverterError):
    """A model name or folder could not be resolved."""


class ModelFileError(ConverterError):
    """A file is missing, corrupt, or not an ONNX model."""
