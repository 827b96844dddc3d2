"""The zoo sweep's fast subset (``tools/zoo.py --fast --size tiny``): each architecture exports, quantizes for
ort-cpu into a model ONNX Runtime runs within a stated cosine of FP32, ``qdq quantize --target tensorrt``
writes what ``qdq check --target tensorrt`` accepts, and ``qdq build --target ort-cuda`` writes FP16 with every
attention block fused.

Models (``tools/zoo_models.py``, random weights, 2 layers, hidden 64): BERT, Llama, CLIP vision, Whisper
encoder, and a MobileNetV3-style CNN (depthwise Convs, HardSwish, hard-sigmoid SE blocks).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from converter.build.cuda import VERIFY_TOLERANCE
from converter.calibrate import calibrate
from converter.cli import main
from converter.export import export_module
from converter.quant.config import QuantConfig
from converter.quantize import quantize_file
from int8_numerics import assert_fused_close, run_exact
from runtime import Engine

from tool_modules import load_tool as _tool


ZOO = _tool("zoo_models")
MIN_COSINE = 0.999
"""Mean per-sample cosine of the exact INT8 output with FP32 (measured 0.9998-1.0000 on these models)."""


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


@pytest.fixture(scope="module", params=ZOO.FAST)
def zoo_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(spec, FP32 path, calibration table path, held-out feeds) of one fast-subset model, tiny size."""
    spec = ZOO.MODELS[request.param]
    work = tmp_path_factory.mktemp(spec.name)
    fp32 = export_module(spec.build("tiny"), spec.feeds(2, seed=1000, size="tiny"), work / "fp32.onnx",
                         output_names=[spec.output], dynamic_axes=spec.axes(),
                         check_inputs=spec.feeds(3, seed=1001, size="tiny")).path
    table = calibrate(fp32, [spec.feeds(4, seed=i, size="tiny") for i in range(3)], progress=False)
    return spec, fp32, table.save(work / "calib.json"), spec.feeds(6, seed=100, size="tiny")


def test_ort_cpu_int8_runs_close_to_fp32(zoo_model, tmp_path: Path) -> None:
    spec, fp32, calib, feeds = zoo_model
    int8 = quantize_file(fp32, tmp_path / "int8.onnx", calib, QuantConfig())
    with Engine.load(fp32) as ref, Engine.load(int8) as eng:
        expected, fused = ref.run(feeds)[spec.output], eng.run(feeds)[spec.output]
    exact = run_exact(int8, feeds)[spec.output]
    assert _cosine(expected, exact) > MIN_COSINE, f"{spec.name}: exact INT8 cosine {_cosine(expected, exact):.5f}"
    assert_fused_close(fused, exact)


def test_tensorrt_quantize_passes_tensorrt_check(zoo_model, tmp_path: Path) -> None:
    """#16: `quantize --target tensorrt` emits only what `check --target tensorrt` accepts (CLI, as a user runs it)."""
    spec, fp32, calib, feeds = zoo_model
    out = tmp_path / "trt.onnx"
    runner = CliRunner()
    quantized = runner.invoke(main, ["quantize", str(fp32), "--calib", str(calib), "--target", "tensorrt",
                                     "-o", str(out)], catch_exceptions=False)
    assert quantized.exit_code == 0, quantized.output
    checked = runner.invoke(main, ["check", str(out), "--target", "tensorrt"], catch_exceptions=False)
    assert checked.exit_code == 0, checked.output
    assert "OK" in checked.output and "0 violation(s)" in checked.output
    # symmetric int8 activations and float biases, and it still computes the model
    exact = run_exact(out, feeds)[spec.output]
    with Engine.load(fp32) as ref:
        assert _cosine(ref.run(feeds)[spec.output], exact) > MIN_COSINE


def _max_diff_ratio(want: np.ndarray, got: np.ndarray) -> float:
    """Largest absolute difference relative to the reference's largest magnitude (at least 1), as the build's
    own verify step measures it."""
    return float(np.abs(want.astype(np.float64) - got).max()) / max(float(np.abs(want).max()), 1.0)


def test_ort_cuda_is_fp16_with_every_attention_fused(zoo_model, tmp_path: Path) -> None:
    """#16 (CI figure): every `ort-cuda` artifact of a transformer is FP16 with fused attention, per `qdq inspect`'s
    op histogram (one Attention / MultiHeadAttention per layer, no Softmax left), and it still computes the model:
    the fused FP32 build within the build's verify tolerance of the export on the CPU provider, FP16 within 2%."""
    spec, fp32, _, feeds = zoo_model
    runner = CliRunner()
    outputs = {}
    for precision in ("fp16", "fp32"):
        out = tmp_path / precision
        built = runner.invoke(main, ["build", str(fp32), "--target", "ort-cuda", "--precision", precision,
                                     "-o", str(out)], catch_exceptions=False)
        assert built.exit_code == 0, built.output
        artifact = out / f"{fp32.stem}.cuda.onnx"
        inspected = runner.invoke(main, ["inspect", str(artifact), "--json"], catch_exceptions=False)
        assert inspected.exit_code == 0, inspected.output
        summary = json.loads(inspected.output)
        ops, dtypes = summary["op_counts"], summary["weight_dtypes"]
        fused = ops.get("Attention", 0) + ops.get("MultiHeadAttention", 0)
        if spec.kind == "cnn":
            assert fused == 0 and "Conv" in ops
        else:
            assert fused == ZOO.LAYERS and "Softmax" not in ops, f"{spec.name}: {ops}"
        if precision == "fp16":  # the float32 rest: LayerNorm parameters and such
            assert dtypes["float16"] > 10 * dtypes.get("float32", 0), f"{spec.name}: {dtypes}"
        else:
            assert "float16" not in dtypes
        with Engine.load(artifact, allow_fallback=True) as eng:
            outputs[precision] = eng.run(feeds)[spec.output]
    with Engine.load(fp32) as ref:
        want = ref.run(feeds)[spec.output]
    assert outputs["fp16"].dtype == np.float32
    assert _max_diff_ratio(want, outputs["fp32"]) <= VERIFY_TOLERANCE, spec.name
    assert _max_diff_ratio(want, outputs["fp16"]) <= 0.02, spec.name


def test_sweep_reports_a_failing_model_in_its_row(tmp_path: Path) -> None:
    """tools/zoo.py catches a model's failure, shows it in that model's row and goes on to the next."""
    import argparse

    zoo = _tool("zoo")

    def broken(dims):
        raise RuntimeError("no such layer")

    args = argparse.Namespace(size="tiny", method="minmax", calib_batches=1, eval_batches=1, cpu="auto", threads=1,
                              runs=0)
    row = zoo.sweep_one(ZOO.ZooModel("broken", "cnn", broken, ("image",)), tmp_path, args)
    assert row.errors == ["export/calibrate: RuntimeError: no such layer"]
    table = zoo.format_table([row], args)
    assert "| broken | — | 0 |" in table and "no such layer" in table
