"""Perplexity of an exported causal LM on a text, run by ONNX Runtime.

The text becomes one token stream (each line followed by eos); windows of ``context + 1`` tokens
start every ``context`` tokens, so every token but the first is predicted exactly once, from at most
``context`` tokens of history. Each window is a prefill with an empty KV cache.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime import Engine

from .config import WeightQuantError
from .feeds import encode_text, load_tokenizer, prefill_feeds, tokenizer_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    mean_nll: float
    tokens: int
    seconds: float


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed negative log-likelihood of ``targets`` [B, S] under ``logits`` [B, S, V] (float64 softmax)."""
    x = logits.astype(np.float64)
    x -= x.max(-1, keepdims=True)
    logz = np.log(np.exp(x).sum(-1))
    picked = np.take_along_axis(x, targets[..., None], -1)[..., 0]
    return float(np.sum(logz - picked))


def window_logits(
    engine: Engine, stream: np.ndarray, context: int = 128, batch: int = 4
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (logits [B, S, V], targets [B, S]) over the evaluation windows of a token stream."""
    if context < 1:
        raise WeightQuantError(f"context must be >= 1 token, got {context}")
    if len(stream) < 2:
        raise WeightQuantError("need at least 2 tokens to measure perplexity")
    starts = list(range(0, len(stream) - 1, context))
    full = [s for s in starts if s + context + 1 <= len(stream)]
    rest = [s for s in starts if s + context + 1 > len(stream)]
    for group in [full[i:i + batch] for i in range(0, len(full), batch)] + [[s] for s in rest]:
        rows = np.stack([stream[s:s + context + 1] for s in group])
        out = engine.run(prefill_feeds(engine.input_specs, rows[:, :-1]), ["logits"])["logits"]
        yield out, rows[:, 1:]


def stream_perplexity(engine: Engine, stream: np.ndarray, context: int = 128, batch: int = 4) -> PerplexityResult:
    """Perplexity of a token stream (1-D int array) under ``engine``."""
    t0 = time.perf_counter()
    total, count = 0.0, 0
    for logits, targets in window_logits(engine, stream, context, batch):
        total += _nll(logits, targets)
        count += targets.size
    mean = total / count
    return PerplexityResult(math.exp(mean), mean, count, time.perf_counter() - t0)


def perplexity(
    model: str | os.PathLike[str],
    text: str | None = None,
    *,
    text_file: str | os.PathLike[str] | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    context: int = 128,
    batch: int = 4,
) -> PerplexityResult:
    """Perplexity of the ONNX LM at ``model`` on ``text`` (or the contents of ``text_file``).

    The tokenizer comes from ``tokenizer`` (a HF folder) or from the source folder the export recorded.
    """
    if (text is None) == (text_file is None):
        raise WeightQuantError("pass exactly one of text= or text_file=")
    if text_file is not None:
        path = Path(text_file)
        if not path.is_file():
            raise WeightQuantError(f"text file not found: {path}")
        text = path.read_text(encoding="utf-8")
    tok = load_tokenizer(str(tokenizer_dir(model, tokenizer)))
    stream = encode_text(tok, text or "")
    with Engine.load(model) as engine:
        result = stream_perplexity(engine, stream, context, batch)
    log.info("perplexity %.3f over %d tokens (%.1fs)", result.perplexity, result.tokens, result.seconds)
    return result
