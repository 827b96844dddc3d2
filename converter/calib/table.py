"""CalibrationTable: per-tensor ranges from calibration, saved as JSON or a TensorRT calibration cache."""
from __future__ import annotations

import copy
import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..quant.scheme import activation_qparams

FORMAT = "qdq.calibration/1"


class CalibrationError(ValueError):
    """A calibration table is missing, malformed, or lacks a tensor that was asked for."""


class CalibrationDataError(CalibrationError):
    """Calibration data is empty or does not fit the model's inputs (names, dtypes, ranks)."""


@dataclass
class TensorRange:
    """The calibrated range of one activation tensor and the INT8 parameters derived from it."""

    name: str
    method: str
    lo: float
    hi: float
    scale: float
    zero_point: int
    symmetric: bool = True
    count: int = 0
    nonfinite: int = 0
    histogram: dict[str, Any] | None = None  # min/max, |x| percentiles and (histogram methods) compact counts
    qtype: str = "int8"  # "int8" (symmetric, zero point 0) or "uint8" (asymmetric)

    @property
    def amax(self) -> float:
        return max(abs(self.lo), abs(self.hi))


@dataclass
class CalibrationTable:
    """Ranges for activation tensors plus per-channel abs-max and mean of MatMul/Gemm/Conv inputs
    (the abs-max for SmoothQuant, the mean for bias correction; tables without means still load)."""

    tensors: dict[str, TensorRange] = field(default_factory=dict)
    channel_absmax: dict[str, np.ndarray] = field(default_factory=dict)
    channel_mean: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> "CalibrationTable":
        """A copy whose dicts can be changed without touching this table."""
        return CalibrationTable(tensors=dict(self.tensors), channel_absmax=dict(self.channel_absmax),
                                channel_mean=dict(self.channel_mean), meta=copy.deepcopy(self.meta))

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> TensorRange:
        try:
            return self.tensors[name]
        except KeyError:
            raise CalibrationError(
                f"tensor '{name}' was not calibrated; re-run `qdq calibrate` on this model "
                f"(the table has {len(self.tensors)} tensors)"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "meta": self.meta,
            "tensors": {k: asdict(v) for k, v in self.tensors.items()},
            "channel_absmax": {k: np.asarray(v, dtype=np.float32).tolist() for k, v in self.channel_absmax.items()},
            "channel_mean": {k: np.asarray(v, dtype=np.float32).tolist() for k, v in self.channel_mean.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CalibrationTable":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibrationError(f"not a qdq calibration table (expected format '{FORMAT}')")
        try:
            tensors = {k: TensorRange(**v) for k, v in data["tensors"].items()}
            chans = {k: np.asarray(v, dtype=np.float32) for k, v in data.get("channel_absmax", {}).items()}
            means = {k: np.asarray(v, dtype=np.float32) for k, v in data.get("channel_mean", {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"malformed calibration table: {exc}") from None
        return cls(tensors=tensors, channel_absmax=chans, channel_mean=means,
                   meta=dict(data.get("meta", {}))).validate()

    def validate(self) -> "CalibrationTable":
        """Raise ``CalibrationError`` naming the first tensor whose range, scale, min/max or channel abs-max is
        not finite, inverted (lo > hi) or negative where it cannot be: the same for every target."""
        for name, r in self.tensors.items():
            rec = r.histogram if isinstance(r.histogram, dict) else {}
            checks = [("range", r.lo, r.hi), ("min/max", rec.get("min"), rec.get("max"))]
            for what, lo, hi in checks:
                if what == "min/max" and lo is None and hi is None:
                    continue  # never finite during calibration
                try:
                    lo, hi = float(lo), float(hi)
                except (TypeError, ValueError):
                    raise CalibrationError(f"tensor '{name}' has a non-numeric {what} [{lo}, {hi}]") from None
                if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
                    raise CalibrationError(f"tensor '{name}' has an invalid {what} [{lo}, {hi}] (must be finite, "
                                           "low <= high); re-run `qdq calibrate` instead of editing the table")
            try:
                scale = float(r.scale)
            except (TypeError, ValueError):
                scale = float("nan")
            if not np.isfinite(scale) or scale <= 0:
                raise CalibrationError(f"tensor '{name}' has an invalid scale {r.scale} (must be finite and > 0)")
        for name, amax in self.channel_absmax.items():
            if not np.all(np.isfinite(amax)) or np.any(amax < 0):
                raise CalibrationError(f"tensor '{name}' has a non-finite or negative channel abs-max")
        return self

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as JSON, atomically."""
        return _atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "CalibrationTable":
        p = Path(path)
        if not p.is_file():
            raise CalibrationError(f"calibration file not found: {p}")
        try:
            data = json.loads(p.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"{p} is not a JSON calibration table: {exc}") from None
        return cls.from_dict(data)

    def save_tensorrt_cache(self, path: str | os.PathLike[str], header: str = "TRT-8XXX-EntropyCalibration2") -> Path:
        """Write a TensorRT calibration cache: one ``name: <scale as big-endian float32 hex>`` line per tensor."""
        lines = [header]
        for name, r in sorted(self.tensors.items()):
            scale = float(activation_qparams(-r.amax, r.amax, "int8").scale) if r.amax > 0 else 1.0
            lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
        return _atomic_write_text(Path(path), "\n".join(lines) + "\n")


def _atomic_write_text(path: Path, text: str) -> Path:
    from runtime.atomic import atomic_write

    return atomic_write(path, lambda tmp: tmp.write_text(text))
