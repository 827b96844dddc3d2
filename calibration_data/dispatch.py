"""``open_data``: pick the reader for a source (file, folder or ``builtin:NAME``) and yield feed dicts."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from runtime.specs import TensorSpec

from .builtin import builtin_options, builtin_path, is_builtin
from .errors import DataError
from .images import IMAGE_SUFFIXES, ImageReader
from .tensors import TensorReader
from .text import TEXT_SUFFIXES, TextReader

log = logging.getLogger(__name__)

SUPPORTED = (f"{'/'.join(TEXT_SUFFIXES)} text files, .npz/.npy tensors, a folder of images "
             f"({'/'.join(IMAGE_SUFFIXES)}) or of .npz files, or builtin:text, builtin:text-heldout, "
             f"builtin:corpus, builtin:digits")


def reader_kind(path: Path) -> str:
    """``"text"``, ``"images"`` or ``"tensors"`` for an existing file or folder."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in TEXT_SUFFIXES:
            return "text"
        if suffix in (".npz", ".npy"):
            return "tensors"
        if suffix in IMAGE_SUFFIXES:
            return "images"
        raise DataError(f"unsupported data file {path}: expected {SUPPORTED}")
    if path.is_dir():
        suffixes = {p.suffix.lower() for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")}
        has_images = bool(suffixes & set(IMAGE_SUFFIXES))
        has_npz = ".npz" in suffixes
        if has_images and has_npz:
            raise DataError(f"folder {path} holds both images and .npz files; point at one kind")
        if has_images:
            return "images"
        if has_npz:
            return "tensors"
        raise DataError(f"no samples in {path}: no image ({', '.join(IMAGE_SUFFIXES)}) or .npz files")
    raise DataError(f"data source {path} is neither a file nor a folder")


def open_data(
    source: str | Path,
    input_specs: list[TensorSpec],
    *,
    batch_size: int = 8,
    num_samples: int | None = None,
    model_dir: str | Path | None = None,
    max_length: int = 128,
    **reader_options: Any,
) -> Iterator[dict[str, np.ndarray]]:
    """Feed dicts (input name -> array) for ``input_specs`` from a file, folder or ``builtin:NAME``.

    The source is checked against the inputs before this returns; batches are then read lazily.
    ``model_dir`` (a folder with tokenizer files) and ``max_length`` apply to text; other
    ``reader_options`` go to the chosen reader (text: pad_to_max_length, text_field; images: size,
    mean, std, layout, max_value).
    """
    options = dict(reader_options)
    if is_builtin(source):
        path = builtin_path(str(source))
        options = {**builtin_options(str(source)), **options}
    else:
        path = Path(source)
    if not path.exists():
        raise DataError(f"data source not found: {path}")
    kind = reader_kind(path)
    reader_cls = {"text": TextReader, "images": ImageReader, "tensors": TensorReader}[kind]
    unknown = set(options) - reader_cls.OPTIONS
    if unknown:
        allowed = ", ".join(sorted(reader_cls.OPTIONS)) or "none"
        raise DataError(f"option(s) {', '.join(sorted(unknown))} not supported for {kind} data {path} "
                        f"(supported: {allowed})")
    log.info("reading %s data from %s", kind, path)
    common = {"batch_size": batch_size, "num_samples": num_samples}
    if kind == "text":
        reader: TextReader | ImageReader | TensorReader = TextReader(
            path, input_specs, model_dir=model_dir, max_length=max_length, **common, **options)
    else:
        reader = reader_cls(path, input_specs, **common, **options)
    return iter(reader)
