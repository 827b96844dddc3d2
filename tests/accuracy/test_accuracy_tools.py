"""Sensitivity analysis and mixed precision to an accuracy target, on the real digits CNN."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from int8_numerics import FUSED_SNR_LOSS_DB, exact_session_options

from converter.accuracy import AccuracyTargetError, Evaluator, Target, analyze, quantized_layers, reach_target, table_quantizer
from converter.calibrate import calibrate
from converter.cli import main
from converter.quant.config import QuantConfig


@pytest.fixture(scope="module")
def cnn_setup(digits_cnn_onnx: Path, digits_split: dict):
    X = digits_split["X_train"]
    calib = [{"image": X[i : i + 64]} for i in range(0, 256, 64)]
    table = calibrate(digits_cnn_onnx, calib, progress=False)
    Xt = digits_split["X_test"]
    sens = Evaluator(digits_cnn_onnx, [{"image": Xt[:200]}])
    held = Evaluator(digits_cnn_onnx, [{"image": Xt[200:]}])
    return table_quantizer(digits_cnn_onnx, table), sens, held


def test_target_parsing() -> None:
    assert Target.parse("cosine=0.999") == Target("cosine", 0.999)
    for bad in ("cosine", "accuracy=0.9", "cosine=abc", ""):
        with pytest.raises(AccuracyTargetError, match="METRIC=VALUE"):
            Target.parse(bad)


def test_sensitivity_covers_every_int8_layer(cnn_setup, digits_cnn_onnx: Path) -> None:
    quantize_fn, sens, _ = cnn_setup
    # how the noise adds up across layers is a property of the quantization: judged on exact integer
    # math (fusions off), the same on every CPU
    exact = Evaluator(digits_cnn_onnx, sens.feeds, session_options=exact_session_options())
    report = analyze(quantize_fn, exact, QuantConfig(), "snr", modes=("without", "alone"))
    full_model = quantize_fn(QuantConfig())
    # this CPU's fused kernels lose at most the stated SNR against exact math
    assert sens.score(full_model, "snr") >= report.full - FUSED_SNR_LOSS_DB
    assert [l.node for l in report.layers] == [n for n, _ in quantized_layers(full_model, ("MatMul", "Gemm", "Conv"))]
    assert len(report.layers) == 4
    for layer in report.layers:
        # one layer's noise alone is smaller than everyone's; removing one layer's noise helps
        assert layer.alone > report.full
        assert layer.without > report.full - 0.5
    ranked = report.ranked()
    assert ranked[0].gain(report.full) >= ranked[-1].gain(report.full)


def test_reach_target_keeps_sensitive_layers_in_float(cnn_setup) -> None:
    quantize_fn, sens, held = cnn_setup
    full = held.score(quantize_fn(QuantConfig()), "snr")
    target = Target("snr", full + 3.0)  # needs at least one layer back in float
    result = reach_target(quantize_fn, sens, held, QuantConfig(), target)
    assert result.reached and result.excluded
    assert result.final_score >= target.value
    remaining = {n for n, _ in quantized_layers(result.model, ("MatMul", "Gemm", "Conv"))}
    assert not remaining & set(result.excluded)
    assert [d.node for d in result.decisions] == result.excluded


def test_unreachable_target_is_reported(cnn_setup) -> None:
    quantize_fn, sens, held = cnn_setup
    result = reach_target(quantize_fn, sens, held, QuantConfig(), Target("snr", 1e9), max_float_layers=1)
    assert not result.reached and len(result.excluded) == 1


def test_cli_sensitivity(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "sens.json"
    res = CliRunner().invoke(main, ["sensitivity", str(digits_cnn_onnx), "--data", "builtin:digits", "--metric", "snr",
                                    "--mode", "without", "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert len(report["layers"]) == 4 and all(l["without"] is not None and l["alone"] is None for l in report["layers"])


def test_cli_quantize_to_target_accuracy(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "mixed.onnx"
    res = CliRunner().invoke(main, ["quantize", str(digits_cnn_onnx), "--data", "builtin:digits",
                                    "--target-accuracy", "top1=1.0", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "all layers INT8: top1" in res.output and "target top1=1.0 reached" in res.output
    from runtime import Engine

    with Engine.load(out) as eng:  # a loadable, still (partly) quantized model
        assert [s.name for s in eng.input_specs] == ["image"]

    bad = CliRunner().invoke(main, ["quantize", str(digits_cnn_onnx), "--data", "builtin:digits",
                                    "--target-accuracy", "accuracy=0.9", "-o", str(tmp_path / "x.onnx")])
    assert bad.exit_code == 1 and "METRIC=VALUE" in bad.output
    assert not (tmp_path / "x.onnx").exists()
