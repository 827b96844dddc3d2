"""Scale and zero-point math for INT8: symmetric per-channel weights, per-tensor activations."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import QuantizationError

_RANGES: dict[str, tuple[int, int]] = {"uint8": (0, 255), "int8": (-128, 127), "int32": (-(2**31), 2**31 - 1)}
WEIGHT_QMAX = 127
"""Weights use [-127, 127] so the grid is symmetric and zero point 0 (TensorRT and MLAS both expect it)."""
_TINY = np.float32(1e-12)


@dataclass(frozen=True)
class QParams:
    """Quantization parameters: ``x ~= (q - zero_point) * scale``; ``axis`` is None for per-tensor."""

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in _RANGES:
            raise QuantizationError(f"unsupported quantized dtype '{self.dtype}'")
        if not np.all(np.isfinite(self.scale)) or np.any(self.scale <= 0):
            raise QuantizationError("quantization scale must be finite and > 0")

    @property
    def per_channel(self) -> bool:
        return self.axis is not None


def activation_qparams(lo: float, hi: float, dtype: str = "uint8", *, name: str = "") -> QParams:
    """Per-tensor parameters for a calibrated range: asymmetric for uint8, symmetric for int8.

    The range is widened to contain 0 so that zero (padding, ReLU) is exact.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise QuantizationError(f"tensor '{name}' has an invalid calibrated range [{lo}, {hi}]")
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if dtype == "uint8":
        scale = max((hi - lo) / 255.0, float(_TINY))
        zp = int(np.clip(np.round(-lo / scale), 0, 255))
    elif dtype == "int8":
        scale = max(max(-lo, hi) / 127.0, float(_TINY))
        zp = 0
    else:
        raise QuantizationError(f"activations must be uint8 or int8, got '{dtype}'")
    return QParams(np.asarray(scale, np.float32), np.asarray(zp, dtype), dtype)


BIAS_QMAX = 2**27
"""Largest |int32 bias| allowed: 16x headroom below int32 for the products the kernel adds to it."""


def bias_scale_floor(bias: np.ndarray, input_scale: np.ndarray) -> np.ndarray:
    """Smallest weight scale per output channel that keeps ``bias / (input scale x weight scale)`` within
    ``BIAS_QMAX``. Channels whose weights are (almost) all zero would otherwise get a tiny scale and an
    int32 bias that saturates, losing the channel's constant output (as ONNX Runtime's quantizer does,
    the weight scale of such a channel is raised instead)."""
    return (np.abs(np.asarray(bias, np.float32)) / (np.float32(input_scale) * BIAS_QMAX)).astype(np.float32)


def weight_qparams(w: np.ndarray, axis: int | None, *, name: str = "", qmax: int = WEIGHT_QMAX,
                   floor: np.ndarray | None = None) -> QParams:
    """Symmetric int8 parameters for a weight: one scale per slice along ``axis`` (None: per tensor), on
    the grid [-qmax, qmax] (127; 63 for 7-bit "reduce range" weights); ``floor``: a lower bound on the
    scale(s), e.g. ``bias_scale_floor``."""
    w = np.asarray(w, np.float32)
    if not np.all(np.isfinite(w)):
        raise QuantizationError(f"weight '{name}' contains NaN or Inf")
    if axis is None:
        amax = np.asarray(np.abs(w).max(initial=0.0), np.float32)
    else:
        axis = axis % w.ndim
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=reduce, initial=0.0).astype(np.float32)
    scale = np.maximum(amax / qmax, _TINY).astype(np.float32)
    if floor is not None:
        floor = np.asarray(floor, np.float32)
        scale = np.maximum(scale, floor if axis is not None else floor.max(initial=0.0)).astype(np.float32)
    return QParams(scale, np.zeros(scale.shape, np.int8), "int8", axis)


def bias_qparams(input_scale: np.ndarray, weight: QParams) -> QParams:
    """int32 bias parameters: scale = input scale x weight scale (per output channel), zero point 0."""
    scale = (np.float32(input_scale) * weight.scale).astype(np.float32)
    scale = np.maximum(scale, _TINY)
    return QParams(scale, np.zeros(scale.shape, np.int32), "int32", weight.axis if scale.ndim else None)


def _broadcast(qp: QParams, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    if qp.axis is None or qp.scale.ndim == 0:
        return qp.scale, qp.zero_point.astype(np.int64)
    shape = [1] * ndim
    shape[qp.axis % ndim] = -1
    return qp.scale.reshape(shape), qp.zero_point.astype(np.int64).reshape(shape)


def quantize(x: np.ndarray, qp: QParams) -> np.ndarray:
    """Round half to even and saturate, as ONNX QuantizeLinear does."""
    scale, zp = _broadcast(qp, np.ndim(x))
    lo, hi = _RANGES[qp.dtype]
    q = np.rint(np.asarray(x, np.float32) / scale) + zp
    return np.clip(q, lo, hi).astype(qp.dtype)


def dequantize(q: np.ndarray, qp: QParams) -> np.ndarray:
    """Inverse of ``quantize``: ``(q - zero_point) * scale`` as float32."""
    scale, zp = _broadcast(qp, np.ndim(q))
    return ((q.astype(np.int64) - zp) * scale).astype(np.float32)


def fake_quantize(x: np.ndarray, qp: QParams) -> np.ndarray:
    """Quantize then dequantize: the value the INT8 kernel effectively sees."""
    return dequantize(quantize(x, qp), qp)
