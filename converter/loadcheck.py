"""Every model qdq writes must load in ONNX Runtime: check the staged file before it is moved into place."""
from __future__ import annotations

import os

from .errors import ConverterError


class UnloadableModelError(ConverterError):
    """ONNX Runtime refuses a model qdq produced; nothing was written."""


def ensure_loads(path: str | os.PathLike[str], what: str = "the quantized model") -> None:
    """Create an ONNX Runtime CPU session for ``path`` with the default (full) graph optimizations, the
    ones that fuse Q/DQ groups into QLinear* kernels and reject malformed ones (e.g. QLinearAveragePool's
    "Scale and Zero-point must be a scalar"); raise ``UnloadableModelError`` naming the cause."""
    try:
        import onnxruntime as ort
    except ImportError:  # qdq installed without an ORT extra: nothing to check with
        return
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises Fail / InvalidGraph / NotImplemented ... as RuntimeError kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnloadableModelError(f"ONNX Runtime cannot load {what}, so nothing was written: {first}") from None

