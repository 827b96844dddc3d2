"""CalibConfig: what `calibrate` observes and how it turns statistics into ranges."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .observers import SENTINEL_ABS
from .ranges import METHODS
from .table import CalibrationError

DEFAULT_OP_TYPES: frozenset[str] = frozenset({
    "MatMul", "Gemm", "Conv", "ConvTranspose", "Add", "Mul", "Sub", "Div", "Relu", "Gelu", "Sigmoid",
    "Tanh", "Softmax", "LayerNormalization", "Concat", "Reshape", "Transpose", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Flatten", "Squeeze", "Unsqueeze", "Resize", "Clip",
})
"""Ops whose float activation inputs and outputs are calibrated with ``scope='all'``."""

SCOPES = ("quantizable", "all")


class CalibConfigError(CalibrationError):
    """A calibration setting is invalid (unknown method, percentile out of range, ...)."""


@dataclass(frozen=True)
class CalibConfig:
    """Calibration settings.

    method: ``minmax``, ``percentile``, ``mse`` or ``entropy``.
    percentile: for ``percentile``, the share of values (in %) kept inside the range.
    num_bins: histogram bins per tensor. The grid width is a power of two, so the data spans
        between half and all of them; 8192 gives ``|x|`` about TensorRT's 2048-bin resolution.
    symmetric: int8 with zero point 0 (True) or uint8 with a zero point (False).
    batch_size: samples per batch when the CLI reads data (``calibrate`` takes batches as given).
    num_samples: stop after this many samples (None: all the data).
    scope: which tensors are observed when ``calibrate`` is not given a list: ``quantizable``
        (those `qdq quantize` can put a Q/DQ on, for any target) or ``all`` (every float
        activation input and output of the ``op_types`` ops, as ONNX Runtime's calibrators do;
        what a TensorRT implicit-quantization cache wants).
    op_types: with ``scope='all'``, the ops whose float activations are observed.
    channel_stats: collect per-channel abs-max of MatMul/Gemm/Conv activation inputs (SmoothQuant).
    histogram: keep histograms (None: only for the histogram methods). Needed by `recompute`.
    num_quantized_bins: target levels of the entropy (KL) search.
    sentinel_abs: values with ``|x|`` at or above this count as non-finite (attention-mask fill values).
    workers: threads updating observers (None: one per CPU, at most 4).
    """

    method: str = "minmax"
    percentile: float = 99.99
    num_bins: int = 8192
    symmetric: bool = True
    batch_size: int = 8
    num_samples: int | None = None
    scope: str = "quantizable"
    op_types: frozenset[str] = field(default=DEFAULT_OP_TYPES, repr=False)
    channel_stats: bool = True
    histogram: bool | None = None
    num_quantized_bins: int = 128
    sentinel_abs: float = SENTINEL_ABS
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibConfigError(
                f"unknown calibration method '{self.method}'; choose one of {', '.join(METHODS)}")
        if not (isinstance(self.percentile, (int, float)) and 50.0 < self.percentile <= 100.0):
            raise CalibConfigError(f"percentile must be in (50, 100], got {self.percentile!r}")
        if self.scope not in SCOPES:
            raise CalibConfigError(f"unknown scope '{self.scope}'; choose one of {', '.join(SCOPES)}")
        _positive_int("num_bins", self.num_bins, minimum=64)
        _positive_int("batch_size", self.batch_size)
        if self.num_samples is not None:
            _positive_int("num_samples", self.num_samples)
        _positive_int("num_quantized_bins", self.num_quantized_bins, minimum=8)
        if self.workers is not None:
            _positive_int("workers", self.workers)
        if not (isinstance(self.sentinel_abs, (int, float)) and self.sentinel_abs > 0 and not math.isnan(self.sentinel_abs)):
            raise CalibConfigError(f"sentinel_abs must be a positive number, got {self.sentinel_abs!r}")
        if isinstance(self.op_types, str) or not all(isinstance(o, str) for o in self.op_types):
            raise CalibConfigError(f"op_types must be a collection of op type names, got {self.op_types!r}")
        object.__setattr__(self, "op_types", frozenset(self.op_types))
        if self.histogram is False and self.method != "minmax":
            raise CalibConfigError(f"method '{self.method}' needs histograms; do not set histogram=False")

    @property
    def collects_histograms(self) -> bool:
        return self.histogram if self.histogram is not None else self.method != "minmax"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly settings for the table's metadata."""
        return {"method": self.method, "percentile": self.percentile, "num_bins": self.num_bins,
                "symmetric": self.symmetric, "scope": self.scope, "batch_size": self.batch_size,
                "num_samples": self.num_samples,
                "channel_stats": self.channel_stats, "histogram": self.collects_histograms,
                "num_quantized_bins": self.num_quantized_bins, "sentinel_abs": self.sentinel_abs}


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CalibConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
