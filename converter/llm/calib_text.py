"""Calibration text for weight-only LM quantization from several sources, each an equal share of the windows.

Every source (a text file, or a shipped set as ``builtin:NAME``) is cut into ``seq_len``-token windows on
its own; the windows are then dealt out round-robin, one per source in turn, until ``max_windows`` are
taken or every source is used up, so a big file cannot drown a small one. Within a source the windows
taken are spread evenly over the whole text (not its first few pages: ``builtin:mix`` holds prose,
dialogue, code and structured text one after the other).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir

from .config import WeightQuantError
from .weight_only import LMCalibration, lm_calibration

DEFAULT_SOURCE = "builtin:mix"
"""What GPTQ/AWQ/clip/HERA calibrate on when no text is given."""


def read_source(source: str) -> str:
    """The text of a file path, or of a shipped sample set named ``builtin:NAME``."""
    if source.startswith("builtin:"):
        from calibration_data import DataError
        from calibration_data.builtin import builtin_path

        try:
            path = builtin_path(source)
        except DataError as exc:
            raise WeightQuantError(str(exc)) from None
    else:
        path = Path(source)
    if not path.is_file():
        raise WeightQuantError(f"text file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise WeightQuantError(f"{path} is not a UTF-8 text file") from None
    if not text.strip():
        raise WeightQuantError(f"{path} holds no text to calibrate on")
    return text


def shares(counts: Sequence[int], total: int) -> list[int]:
    """Windows to take from each source: one from each in turn (skipping used-up ones) until ``total``."""
    taken = [0] * len(counts)
    left = total
    while left > 0 and any(t < c for t, c in zip(taken, counts)):
        for i, c in enumerate(counts):
            if left and taken[i] < c:
                taken[i] += 1
                left -= 1
    return taken


def spread(count: int, k: int) -> list[int]:
    """``k`` distinct indices in ``range(count)``, evenly spaced from the start."""
    return [i * count // k for i in range(k)]


class MixedCalibration(LMCalibration):
    """Prefill feeds of windows dealt round-robin from several texts; iterable again and again (computed once).

    Binding (see :class:`LMCalibration`) is passed on to one single-window calibration per text.
    """

    def __init__(self, model: str | os.PathLike[str] | ir.Model, texts: Sequence[str], *,
                 tokenizer: str | os.PathLike[str] | None = None, seq_len: int = 128, batch: int = 8,
                 max_windows: int = 128) -> None:
        if not texts:
            raise WeightQuantError("no calibration text given")
        if max_windows < 1:
            raise WeightQuantError(f"the number of calibration windows must be >= 1, got {max_windows}")
        self.parts = [lm_calibration(model, t, tokenizer=tokenizer, seq_len=seq_len, batch=1,
                                     max_windows=len(t) + 1) for t in texts]  # a token has >= 1 character
        self._batches: list[dict[str, np.ndarray]] | None = None
        self.counts: list[int] = []
        super().__init__(model, "\n".join(texts), tokenizer=tokenizer, seq_len=seq_len, batch=batch,
                         max_windows=max_windows)

    def bind(self, ir_model: ir.Model) -> None:
        super().bind(ir_model)
        for part in self.parts:
            part.bind(ir_model)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self._batches is None:
            self._batches = self._build()
        return iter(self._batches)

    def _build(self) -> list[dict[str, np.ndarray]]:
        per_source = [list(part) for part in self.parts]
        full = [[f for f in feeds if f["input_ids"].shape[1] == self.seq_len] or feeds for feeds in per_source]
        self.counts = shares([len(f) for f in full], self.max_windows)
        picked = [[f[i] for i in spread(len(f), k)] for f, k in zip(full, self.counts)]
        order = [p[j] for j in range(max(self.counts)) for p in picked if j < len(p)]  # round-robin
        batches: list[list[dict[str, np.ndarray]]] = []
        for feeds in order:
            last = batches[-1] if batches else None
            if last and len(last) < self.batch and last[0]["input_ids"].shape == feeds["input_ids"].shape:
                last.append(feeds)
            else:
                batches.append([feeds])
        return [{name: np.concatenate([f[name] for f in group]) for name in group[0]} for group in batches]


def text_calibration(model: str | os.PathLike[str] | ir.Model, sources: Sequence[str], *,
                     tokenizer: str | os.PathLike[str] | None = None, seq_len: int = 128, batch: int = 8,
                     max_windows: int = 128) -> MixedCalibration:
    """Calibration feeds for the LM at ``model`` from text ``sources`` (paths or ``builtin:NAME``; read now)."""
    texts = [read_source(s) for s in sources]
    return MixedCalibration(model, texts, tokenizer=tokenizer, seq_len=seq_len, batch=batch, max_windows=max_windows)
