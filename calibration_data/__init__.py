"""Calibration data readers: text, image folders and saved tensors, yielding feed dicts for a model's inputs."""
from __future__ import annotations

from .builtin import BUILTIN_NAMES, builtin_path
from .dispatch import open_data, reader_kind
from .errors import DataError
from .images import ImageReader
from .tensors import TensorReader
from .text import TextReader, load_tokenizer, read_texts, tokenize_batch

__all__ = [
    "BUILTIN_NAMES",
    "DataError",
    "ImageReader",
    "TensorReader",
    "TextReader",
    "builtin_path",
    "load_tokenizer",
    "open_data",
    "read_texts",
    "reader_kind",
    "tokenize_batch",
]
