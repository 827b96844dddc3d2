"""Fixtures for the compare tests: a QDQ model made by a peer tool (onnxruntime.quantization)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ort_qdq_cnn(digits_cnn_onnx: Path, digits_split: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN quantized by onnxruntime's quantize_static (QDQ, per-channel int8), as a peer-made QDQ model."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    X = digits_split["X_train"]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": X[i : i + 64]} for i in range(0, 256, 64)])

        def get_next(self):
            return next(self.batches, None)

    out = tmp_path_factory.mktemp("ortq") / "cnn_qdq.onnx"
    quantize_static(str(digits_cnn_onnx), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out
