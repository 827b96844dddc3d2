"""`qdq compare` and its API on a real QDQ model (the digits CNN quantized by ONNX Runtime)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from converter.cli import main
from converter.compare import CompareError, ErrorStats, compare_models, match_quantized_tensors
from converter.inspect import load_onnx


def test_error_stats_known_values() -> None:
    s = ErrorStats()
    ref = np.array([[3.0, 4.0], [1.0, 0.0]])
    s.update(ref, ref + np.array([[0.0, 0.0], [0.0, 2.0]]), classifier=True)  # row 2: argmax 0 -> 1
    assert s.max_abs_err == 2.0
    assert s.snr_db == pytest.approx(10 * np.log10(26.0 / 4.0))
    assert s.cosines == pytest.approx([1.0, 1 / np.sqrt(5)])
    assert s.top1_agreement == 0.5

def test_padding_is_ignored_with_attention_mask() -> None:
    s = ErrorStats()
    ref = np.ones((1, 3, 2))
    got = ref.copy()
    got[0, 2] = 100.0  # padded position
    s.update(ref, got, valid=np.array([[True, True, False]])[..., None])
    assert s.max_abs_err == 0.0


def test_compare_outputs_and_layers(digits_cnn_onnx: Path, ort_qdq_cnn: Path, digits_split: dict) -> None:
    X = digits_split["X_test"]
    pairs = match_quantized_tensors(load_onnx(digits_cnn_onnx), load_onnx(ort_qdq_cnn))
    assert {p.float_name for p in pairs} >= {"image"}
    report = compare_models(digits_cnn_onnx, ort_qdq_cnn, [{"image": X[i : i + 100]} for i in range(0, 300, 100)], per_layer=True)
    logits = report.outputs["logits"]
    assert report.samples == 300
    assert 0.99 < logits.mean_cosine <= 1.0 and logits.top1_agreement > 0.97
    assert 20 < logits.snr_db < 80
    assert len(report.layers) == len(pairs) >= 4
    worst = report.worst_layers()
    assert worst[0].stats.snr_db <= worst[-1].stats.snr_db
    # the model's input is quantized first: its error is pure quantization noise, the best of all layers
    image = next(l for l in report.layers if l.pair.float_name == "image")
    assert image.stats.snr_db == pytest.approx(image.local.snr_db)


def test_compare_identical_model_is_exact(digits_cnn_onnx: Path, digits_split: dict) -> None:
    report = compare_models(digits_cnn_onnx, digits_cnn_onnx, [{"image": digits_split["X_test"][:10]}])
    assert report.outputs["logits"].max_abs_err == 0.0 and report.outputs["logits"].top1_agreement == 1.0


def test_compare_errors(digits_cnn_onnx: Path, minilm_onnx: Path) -> None:
    with pytest.raises(CompareError, match="shares no output"):
        compare_models(digits_cnn_onnx, minilm_onnx, [])
    with pytest.raises(CompareError, match="no data"):
        compare_models(digits_cnn_onnx, digits_cnn_onnx, [])


def test_cli_compare_digits(digits_cnn_onnx: Path, ort_qdq_cnn: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    res = CliRunner().invoke(main, ["compare", str(digits_cnn_onnx), str(ort_qdq_cnn), "--data", "builtin:digits",
                                    "--per-layer", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "logits" in res.output and "per layer, worst first" in res.output
    report = json.loads(out.read_text())
    assert report["samples"] > 0 and report["outputs"]["logits"]["top1_agreement"] > 0.9
    assert len(report["layers"]) >= 4


def test_cli_compare_text_uses_export_tokenizer(minilm_onnx: Path) -> None:
    res = CliRunner().invoke(main, ["compare", str(minilm_onnx), str(minilm_onnx), "--data", "builtin:text", "-n", "4"])
    assert res.exit_code == 0, res.output
    assert "last_hidden_state" in res.output and "inf" in res.output
