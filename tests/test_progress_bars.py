"""Long steps show a tqdm bar on stderr when it is a terminal, and nothing when it is not (logs, pipes):
sensitivity's variants, SmoothQuant auto's capture and search, qat's training of the built-in model."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from converter.cli import main


def _run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("converter.cli.progress.on_terminal", lambda: True)


def test_no_bars_off_a_terminal(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    res = _run("sensitivity", digits_cnn_onnx, "--data", "builtin:digits", "--mode", "without")
    assert res.exit_code == 0, res.output
    assert "%|" not in res.stderr and "sensitivity:" not in res.stderr


def test_sensitivity_counts_its_variants(digits_cnn_onnx: Path, terminal: None) -> None:
    res = _run("sensitivity", digits_cnn_onnx, "--data", "builtin:digits")
    assert res.exit_code == 0, res.output
    assert "sensitivity:" in res.stderr and "/8 [" in res.stderr  # 4 layers x (without, alone)
    assert "all layers INT8" in res.stdout


def test_smoothquant_auto_shows_capture_and_search(digits_cnn_onnx: Path, tmp_path: Path, terminal: None) -> None:
    res = _run("quantize", digits_cnn_onnx, "--data", "builtin:digits", "--smoothquant", "auto",
               "-o", tmp_path / "q.onnx")
    assert res.exit_code == 0, res.output
    assert "smoothquant auto: capturing" in res.stderr and "smoothquant auto: choosing alpha" in res.stderr
    assert "calibrating" in res.stderr


def test_qat_readme_command_trains_the_builtin_model_with_a_bar(tmp_path: Path, terminal: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`qdq qat --model digits-cnn --data builtin:digits --steps N --weight-bits 4 -o out.onnx`, as the
    README gives it (fewer epochs for the built-in model's FP32 training, to keep the test short)."""
    monkeypatch.setattr("converter.qat.sources.DIGITS_CNN_EPOCHS", 2)
    out = tmp_path / "qat.onnx"
    res = _run("qat", "--model", "digits-cnn", "--data", "builtin:digits", "--steps", "3", "--weight-bits", "4",
               "-o", out)
    assert res.exit_code == 0, res.output
    assert "training the FP32 digits-cnn" in res.stderr and "/2 [" in res.stderr and "qat:" in res.stderr
    assert "training against the FP32 model" in res.stdout and out.is_file()
