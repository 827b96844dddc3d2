"""Shared `--data` options for commands that read calibration or evaluation data."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np

from .image_options import ImageOptions


def data_options(default_samples: int | None = None, required: bool = True, multiple: bool = False) -> Callable:
    """Add --data, --num-samples, --batch-size, --max-length and --tokenizer to a command.

    ``multiple``: --data is repeatable (a tuple reaches the command; see :func:`single_source`).
    """

    def decorate(fn: Callable) -> Callable:
        opts = [
            click.option("--data", "-d", "data", required=required, multiple=multiple,
                         help="Data: a .txt/.jsonl/.npz/.npy file, an image or .npz folder, or builtin:text, "
                              "builtin:text-heldout, builtin:corpus, builtin:mix, builtin:digits."
                              + (" Repeatable for weight-only LM calibration text (--weights)." if multiple else "")),
            click.option("--num-samples", "-n", type=int, default=default_samples, show_default=True,
                         help="Use at most this many samples."),
            click.option("--batch-size", type=int, default=8, show_default=True),
            click.option("--max-length", type=int, default=128, show_default=True, help="Token limit for text data."),
            click.option("--tokenizer", default=None,
                         help="Tokenizer folder (or built-in model name) for text data; default: the model "
                              "the ONNX file was exported from."),
        ]
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return decorate


def single_source(data: tuple[str, ...], where: str) -> str | None:
    """The one --data source of a repeatable option used where only one is allowed (``where`` says which path)."""
    if len(data) > 1:
        raise click.ClickException(f"--data takes one source {where}; got {len(data)}")
    return data[0] if data else None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model")


def tokenizer_dir(model_path: Path, tokenizer: str | None) -> Path | None:
    """--tokenizer if given, else the folder recorded at export, else a tokenizer beside the model."""
    from converter.models import resolve_model, source_model_dir

    if tokenizer:
        return resolve_model(tokenizer)
    recorded = source_model_dir(model_path)
    if recorded is not None:
        return recorded
    if any((model_path.parent / f).is_file() for f in TOKENIZER_FILES):
        return model_path.parent
    return None


def open_model_data(model_path: Path, specs: list, data: str, num_samples: int | None, batch_size: int,
                    max_length: int, tokenizer: str | None, image: ImageOptions | None = None,
                    **options: Any) -> Iterator[dict[str, np.ndarray]]:
    """Feed dicts for ``specs`` from ``data``, with the model's tokenizer for text and ``image`` (the
    --image-size/--mean/... options) for image folders."""
    from calibration_data import open_data

    if image is not None:
        options = {**image.reader_options(data, specs), **options}
    return open_data(data, specs, batch_size=batch_size, num_samples=num_samples,
                     model_dir=tokenizer_dir(model_path, tokenizer), max_length=max_length, **options)

