"""Streaming error metrics between a reference (FP32) tensor and a candidate (quantized) one."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ErrorStats:
    """Accumulates error statistics batch by batch, in O(1) memory (plus per-sample cosines)."""

    count: int = 0
    sum_sq_ref: float = 0.0
    sum_sq_err: float = 0.0
    sum_abs_err: float = 0.0
    max_abs_err: float = 0.0
    cosines: list[float] = field(default_factory=list)
    top1_agree: int = 0
    top1_total: int = 0

    def update(self, ref: np.ndarray, got: np.ndarray, valid: np.ndarray | None = None, classifier: bool = False) -> None:
        """Add one batch; ``valid`` (broadcastable to ref, bool) drops positions such as padding.

        With ``classifier``, [N, classes] outputs also count top-1 agreement.
        """
        if ref.shape != got.shape:
            raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {got.shape}")
        r = ref.astype(np.float64)
        g = got.astype(np.float64)
        if valid is not None:
            keep = np.broadcast_to(valid, r.shape)
            r = np.where(keep, r, 0.0)
            g = np.where(keep, g, 0.0)
        err = g - r
        self.count += int(r.size if valid is None else np.count_nonzero(keep))
        self.sum_sq_ref += float(np.square(r).sum())
        self.sum_sq_err += float(np.square(err).sum())
        self.sum_abs_err += float(np.abs(err).sum())
        if err.size:
            self.max_abs_err = max(self.max_abs_err, float(np.abs(err).max()))
        if r.ndim >= 1 and r.shape[0] > 0:
            rf = r.reshape(r.shape[0], -1)
            gf = g.reshape(g.shape[0], -1)
            self.cosines.extend(_row_cosine(rf, gf).tolist())
        if classifier and r.ndim == 2 and r.shape[1] > 1:
            self.top1_agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
            self.top1_total += r.shape[0]

    @property
    def snr_db(self) -> float:
        """Signal-to-noise ratio in dB (inf when identical)."""
        if self.sum_sq_err == 0:
            return math.inf
        return 10.0 * math.log10(max(self.sum_sq_ref, 1e-300) / self.sum_sq_err)

    @property
    def mean_abs_err(self) -> float:
        return self.sum_abs_err / max(self.count, 1)

    @property
    def mean_cosine(self) -> float:
        return float(np.mean(self.cosines)) if self.cosines else float("nan")

    @property
    def min_cosine(self) -> float:
        return float(np.min(self.cosines)) if self.cosines else float("nan")

    @property
    def top1_agreement(self) -> float | None:
        return self.top1_agree / self.top1_total if self.top1_total else None

    def to_dict(self) -> dict:
        return {
            "mean_cosine": self.mean_cosine,
            "min_cosine": self.min_cosine,
            "snr_db": self.snr_db,
            "max_abs_err": self.max_abs_err,
            "mean_abs_err": self.mean_abs_err,
            "top1_agreement": self.top1_agreement,
            "samples": len(self.cosines),
        }


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dot = (a * b).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = dot / np.maximum(na * nb, 1e-30)
    return np.where(both_zero, 1.0, cos)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of two [N, ...] arrays."""
    return _row_cosine(a.reshape(a.shape[0], -1).astype(np.float64), b.reshape(b.shape[0], -1).astype(np.float64))


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mask-aware mean over the sequence axis: sentence embeddings from [B, S, H] hidden states."""
    m = mask.astype(hidden.dtype)[..., None]
    return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
