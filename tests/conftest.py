"""Shared fixtures: real models built once per test session (no downloads)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from converter.models import resolve_model

    return resolve_model("minilm")


@pytest.fixture(scope="session")
def minilm_onnx(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """all-MiniLM-L6-v2 exported to FP32 ONNX (dynamic batch and sequence)."""
    from converter.export import export_hf

    out = tmp_path_factory.mktemp("minilm") / "minilm.onnx"
    return export_hf(minilm_dir, out).path


@pytest.fixture(scope="session")
def digits_split() -> dict:
    from converter.reference_models import digits_split as load

    s = load()
    return {"X_train": s.X_train, "y_train": s.y_train, "X_test": s.X_test, "y_test": s.y_test}


@pytest.fixture(scope="session")
def digits_cnn(digits_split: dict):
    """The trained torch digits CNN."""
    from converter.reference_models import DigitsSplit, train_digits_cnn

    return train_digits_cnn(DigitsSplit(**digits_split), epochs=10)


@pytest.fixture(scope="session")
def digits_cnn_onnx(tmp_path_factory: pytest.TempPathFactory, digits_cnn, digits_split: dict) -> Path:
    """The digits CNN exported to ONNX: input ``image`` float32 [batch,1,8,8], output ``logits``."""
    from converter.export import export_module

    out = tmp_path_factory.mktemp("digits") / "digits_cnn.onnx"
    X = digits_split["X_test"]
    return export_module(digits_cnn, {"image": X[:4]}, out, output_names=["logits"],
                         check_inputs={"image": X[:7]}).path


def pytest_report_header(config: pytest.Config) -> str:
    """The CPU's integer dot-product features: INT8 tolerances in the suite depend on them."""
    from runtime.cpu import cpu_int8

    return f"cpu int8: {cpu_int8().describe()}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The same line at the end, where ``pytest -q`` (``make test``) shows it too."""
    if config.get_verbosity() < 0:
        terminalreporter.write_line(pytest_report_header(config))
