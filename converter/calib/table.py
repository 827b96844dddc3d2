"""CalibrationTable: per-tensor ranges from calibration, saved as JSON or a TensorRT calibration cache."""
from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
        except (KeyError, TypeError) as exc:
            raise CalibrationError(f"malformed calibration table: {exc}") from None
        return cls(tensors=tensors, channel_absmax=chans, channel_mean=means, meta=dict(data.get("meta", {})))

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
            scale = r.amax / 127.0 if r.amax > 0 else 1.0
            lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
        return _atomic_write_text(Path(path), "\n".join(lines) + "\n")


def _atomic_write_text(path: Path, text: str) -> Path:
    from runtime.atomic import atomic_write

    return atomic_write(path, lambda tmp: tmp.write_text(text))
