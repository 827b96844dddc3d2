"""Token streams and prefill feeds for an exported KV-cache LM."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from runtime.specs import TensorSpec

from .config import WeightQuantError


@lru_cache(maxsize=4)
def load_tokenizer(folder: str) -> Any:
    """The Hugging Face tokenizer of a local model folder (offline)."""
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from calibration_data.text import is_placeholder, no_tokenizer_message

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise WeightQuantError(f"could not load a tokenizer from {folder}: {str(exc).splitlines()[0]}") from None
    if is_placeholder(tokenizer):
        raise WeightQuantError(no_tokenizer_message(folder))
    return tokenizer


def tokenizer_dir(onnx_path: str | os.PathLike[str] | Any, tokenizer: str | os.PathLike[str] | None = None) -> Path:
    """``tokenizer`` if given, else the HF folder recorded in the ONNX model's metadata at export.

    ``onnx_path``: the file, or the model already in memory (onnx_ir Model)."""
    if tokenizer is not None:
        return Path(tokenizer)
    from ..models import source_model_dir

    folder = source_model_dir(onnx_path)
    if folder is None:
        where = onnx_path if isinstance(onnx_path, (str, os.PathLike)) else "the model"
        raise WeightQuantError(f"{where} does not record its source model folder; pass the tokenizer folder")
    return folder


def encode_text(tokenizer: Any, text: str) -> np.ndarray:
    """One token stream: every non-empty line, each followed by the eos token (if the tokenizer has one)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    for line in text.split("\n"):
        if line.strip():
            ids += list(tokenizer(line.strip())["input_ids"]) + ([eos] if eos is not None else [])
    if not ids:
        raise WeightQuantError("the text is empty: no tokens to evaluate or calibrate on")
    return np.asarray(ids, dtype=np.int64)


def windows(stream: np.ndarray, length: int, batch: int = 1) -> Iterator[np.ndarray]:
    """Non-overlapping windows of ``length`` tokens, stacked ``batch`` at a time (last batch may be smaller).

    A shorter final window is dropped unless the stream has no full window at all.
    """
    if length < 2:
        raise WeightQuantError(f"window length must be >= 2 tokens, got {length}")
    rows = [stream[s:s + length] for s in range(0, len(stream) - length + 1, length)] or [stream]
    for i in range(0, len(rows), batch):
        yield np.stack(rows[i:i + batch])


def prefill_feeds(specs: Sequence[TensorSpec], ids: np.ndarray) -> dict[str, np.ndarray]:
    """Feeds for a prefill of ``ids`` [batch, seq] with an empty past (no padding)."""
    batch, seq = ids.shape
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name == "input_ids":
            feeds[spec.name] = ids.astype(spec.dtype)
        elif spec.name == "attention_mask":
            feeds[spec.name] = np.ones((batch, seq), dtype=spec.dtype)
        elif spec.name == "position_ids":
            feeds[spec.name] = np.broadcast_to(np.arange(seq, dtype=spec.dtype), (batch, seq)).copy()
        elif spec.name.startswith("past_key_values."):
            heads, dim = spec.shape[1], spec.shape[3]
            if not isinstance(heads, int) or not isinstance(dim, int):
                raise WeightQuantError(f"{spec.describe()}: expected fixed kv heads and head size")
            feeds[spec.name] = np.zeros((batch, heads, 0, dim), dtype=spec.dtype)
        else:
            raise WeightQuantError(f"do not know how to feed LM input {spec.describe()}")
    if "input_ids" not in feeds:
        raise WeightQuantError("the model has no input_ids input; is it an exported causal LM?")
    return feeds
