"""Text calibration data: sentences from a ``.txt``/``.jsonl`` file, tokenized with a model folder's tokenizer."""
from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtime.specs import TensorSpec

from .batching import check_positive, fixed, plan_batches
from .builtin import builtin_path, is_builtin
from .errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".jsonl")
GENERATED_INPUTS = ("position_ids", "token_type_ids")
"""Inputs made here when the tokenizer does not give them: positions from the mask, segment ids as zeros."""


def _resolve(source: str | Path) -> Path:
    path = builtin_path(source) if is_builtin(source) else Path(source)
    if not path.exists():
        raise DataError(f"text data not found: {path}")
    if not path.is_file() or path.suffix.lower() not in TEXT_SUFFIXES:
        raise DataError(f"text data must be a .txt (one sample per line) or .jsonl file, got {path}")
    return path


def _lines(path: Path, text_field: str) -> Iterator[str]:
    jsonl = path.suffix.lower() == ".jsonl"
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if not jsonl:
                yield line
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise DataError(f"{path}:{lineno}: no string field {text_field!r} (set text_field= to pick another)")
            if text.strip():
                yield text.strip()


def read_texts(source: str | Path, *, text_field: str = "text") -> Iterator[str]:
    """Lazily yield the non-empty samples of a source.

    ``source`` is a ``.txt`` file (one sample per line), a ``.jsonl`` file (string field ``text_field``)
    or a ``builtin:`` text set.
    """
    return _lines(_resolve(source), text_field)


def is_placeholder(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True for a tokenizer with no vocabulary beyond its special tokens: what transformers builds from a
    folder's config alone when the folder has no tokenizer files (every word becomes the unknown token)."""
    try:
        return len(tokenizer) <= len(set(tokenizer.all_special_tokens))
    except (TypeError, AttributeError):
        return False


def no_tokenizer_message(folder: str | Path) -> str:
    """The one line that says ``folder`` has no usable tokenizer and what to pass instead."""
    return (f"{folder} has no tokenizer files (tokenizer.json, vocab.txt, ...): its tokenizer would map every "
            f"word to the unknown token; pass --tokenizer FOLDER, a folder holding the model's tokenizer")


@functools.lru_cache(maxsize=4)
def _load_tokenizer(folder: str) -> PreTrainedTokenizerBase:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # fall back to a bare tokenizer.json, else report why
        tokenizer_file = Path(folder) / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise DataError(f"could not load a tokenizer from {folder}: {exc}") from exc
        log.info("AutoTokenizer failed on %s (%s); using tokenizer.json directly", folder, exc)
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
    if is_placeholder(tokenizer):
        raise DataError(no_tokenizer_message(folder))
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise DataError(f"the tokenizer in {folder} has no pad, eos or unk token to pad batches with")
        log.info("tokenizer in %s has no pad token; padding with %r", folder, fallback)
        tokenizer.pad_token = fallback
    return tokenizer


def load_tokenizer(model_dir: str | Path | None) -> PreTrainedTokenizerBase:
    """The tokenizer of a Hugging Face model folder, loaded offline (cached per folder)."""
    if model_dir is None:
        raise DataError("text data needs a tokenizer: pass model_dir, a model folder with tokenizer files")
    folder = Path(model_dir)
    if not folder.is_dir():
        raise DataError(f"tokenizer folder not found: {folder}")
    return _load_tokenizer(str(folder.resolve()))


def _sequence_length(specs: Sequence[TensorSpec]) -> int | None:
    """A sequence length fixed by the specs (axis 1), checked for consistency; None when all are dynamic."""
    lengths = {s.name: fixed(s.shape[1]) for s in specs if s.rank == 2 and fixed(s.shape[1])}
    if len(set(lengths.values())) > 1:
        raise DataError(f"text inputs fix different sequence lengths: {lengths}")
    return next(iter(lengths.values()), None)


def check_text_specs(specs: Sequence[TensorSpec], tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise DataError naming any input that is not a [batch, sequence] tensor the tokenizer can fill."""
    supplied = set(tokenizer.model_input_names) | {"input_ids", "attention_mask"} | set(GENERATED_INPUTS)
    for spec in specs:
        if spec.name not in supplied:
            raise DataError(f"input {spec.name!r} cannot come from a tokenizer (text data supplies "
                            f"{', '.join(sorted(supplied))})")
        if spec.rank != 2:
            raise DataError(f"input {spec.name!r}: text data gives rank-2 [batch, sequence] tensors, "
                            f"but the model wants rank {spec.rank} ({spec.describe()})")
        if not np.can_cast(np.int64, spec.dtype, "same_kind"):
            raise DataError(f"input {spec.name!r}: token ids cannot be cast to {np.dtype(spec.dtype).name}")


def tokenize_batch(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    input_specs: Sequence[TensorSpec] | None = None,
    *,
    max_length: int = 128,
    pad_to_max_length: bool = False,
) -> dict[str, np.ndarray]:
    """Tokenize one batch, padded to its longest text (or to ``max_length``), truncated at ``max_length``.

    Without ``input_specs`` the tokenizer's outputs are returned as int64. With them, the result has
    exactly the specs' names and dtypes; position_ids and token_type_ids are made when missing.
    """
    if not texts:
        raise DataError("tokenize_batch got no texts")
    length = max_length
    if input_specs is not None:
        check_text_specs(input_specs, tokenizer)
        fixed_length = _sequence_length(input_specs)
        if fixed_length is not None:  # the model wants exactly this length: pad and truncate to it
            length, pad_to_max_length = fixed_length, True
    encoded = tokenizer(
        list(texts),
        padding="max_length" if pad_to_max_length else "longest",
        truncation=True,
        max_length=length,
        return_attention_mask=True,
        return_tensors="np",
    )
    arrays = {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}
    if input_specs is None:
        return arrays
    feeds: dict[str, np.ndarray] = {}
    mask = arrays["attention_mask"]
    for spec in input_specs:
        if spec.name in arrays:
            value = arrays[spec.name]
        elif spec.name == "position_ids":
            value = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        elif spec.name == "token_type_ids":
            value = np.zeros_like(mask)
        else:
            raise DataError(f"input {spec.name!r} is not produced by the tokenizer (it gives {', '.join(arrays)})")
        feeds[spec.name] = value.astype(spec.dtype, copy=False)
    return feeds


class TextReader:
    """Batches of tokenized text, padded per batch, as feed dicts for the model's inputs."""

    OPTIONS = frozenset({"pad_to_max_length", "text_field"})

    def __init__(
        self,
        source: str | Path,
        input_specs: Sequence[TensorSpec],
        *,
        model_dir: str | Path | None,
        batch_size: int = 8,
        num_samples: int | None = None,
        max_length: int = 128,
        pad_to_max_length: bool = False,
        text_field: str = "text",
    ) -> None:
        self.path = _resolve(source)
        self.specs = list(input_specs)
        self.plan = plan_batches(self.specs, batch_size, num_samples)
        check_positive("max_length", max_length)
        self.max_length = max_length
        self.pad_to_max_length = pad_to_max_length
        self.text_field = text_field
        self.tokenizer = load_tokenizer(model_dir)
        check_text_specs(self.specs, self.tokenizer)
        if next(_lines(self.path, text_field), None) is None:
            raise DataError(f"no samples in {self.path}: it has no non-empty lines")

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for texts in self.plan.batches(_lines(self.path, self.text_field), self.path):
            yield tokenize_batch(self.tokenizer, texts, self.specs, max_length=self.max_length,
                                 pad_to_max_length=self.pad_to_max_length)
