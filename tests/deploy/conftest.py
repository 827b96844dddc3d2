"""Fixtures for the build/check tests: QDQ models made with onnxruntime.quantization (a peer tool)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _quantize(src: Path, out: Path, batches: list[dict], **kw) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    options = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                   weight_type=QuantType.QInt8)
    options.update(kw)
    quantize_static(str(src), str(out), Reader(), **options)
    return out


def _digits_batches(split: dict) -> list[dict]:
    X = split["X_train"]
    return [{"image": X[i : i + 64]} for i in range(0, 256, 64)]


@pytest.fixture(scope="session")
def qdq_cnn(digits_cnn_onnx: Path, digits_split: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits CNN, QDQ int8 per-channel, onnxruntime defaults: asymmetric activations, int32 biases."""
    return _quantize(digits_cnn_onnx, tmp_path_factory.mktemp("qcnn") / "cnn.int8.onnx", _digits_batches(digits_split))


@pytest.fixture(scope="session")
def qdq_cnn_sym(digits_cnn_onnx: Path, digits_split: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits CNN quantized the TensorRT way: symmetric int8 activations and weights, float biases."""
    return _quantize(digits_cnn_onnx, tmp_path_factory.mktemp("qcnn_sym") / "cnn.sym.int8.onnx",
                     _digits_batches(digits_split), extra_options={"ActivationSymmetric": True, "QuantizeBias": False})


@pytest.fixture(scope="session")
def qdq_cnn_u8(digits_cnn_onnx: Path, digits_split: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits CNN with uint8 activations and uint8 weights."""
    from onnxruntime.quantization import QuantType

    return _quantize(digits_cnn_onnx, tmp_path_factory.mktemp("qcnn_u8") / "cnn.u8.onnx", _digits_batches(digits_split),
                     activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8)


def _minilm_feeds(batch: int = 2, sequence: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(100, 5000, (batch, sequence)).astype(np.int64),
            "attention_mask": np.ones((batch, sequence), np.int64),
            "token_type_ids": np.zeros((batch, sequence), np.int64)}


@pytest.fixture(scope="session")
def qdq_minilm(minilm_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM with its MatMuls quantized (symmetric int8, per-channel weights); kept quick: 2 small batches."""
    return _quantize(minilm_onnx, tmp_path_factory.mktemp("qminilm") / "minilm.int8.onnx",
                     [_minilm_feeds(seed=s) for s in range(2)], op_types_to_quantize=["MatMul"],
                     extra_options={"ActivationSymmetric": True})


@pytest.fixture()
def cli():
    """Invoke `qdq` in-process; returns (exit code, output)."""
    from click.testing import CliRunner

    from converter.cli import main

    # until converter/cli/__init__.py lists "build" and "check" in _COMMAND_MODULES
    from converter.cli import build as build_cli
    from converter.cli import check as check_cli

    for cmd in (build_cli.command, check_cli.command):
        if cmd.name not in main.commands:
            main.add_command(cmd)
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.output

    return invoke


@pytest.fixture(scope="session")
def minilm_feeds():
    """``minilm_feeds(batch, sequence, seed)`` -> MiniLM feeds of random token ids."""
    return _minilm_feeds
