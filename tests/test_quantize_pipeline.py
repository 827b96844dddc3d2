"""The whole quantization pipeline on real models: MiniLM (cosine vs FP32) and the digits CNN (accuracy)."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from converter.calib.table import CalibrationError, CalibrationTable
from converter.quant.config import QuantConfig
from converter.quantize import quantize, quantize_file


def _ort_ops(model: onnx.ModelProto, tmp_path: Path) -> collections.Counter:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)


def _mean_pooled(model, feeds_list) -> np.ndarray:
    from runtime import Engine

    out = []
    with Engine.load(model) as eng:
        for f in feeds_list:
            h = eng.run(f, ["last_hidden_state"])["last_hidden_state"]
            m = f["attention_mask"][..., None].astype(np.float32)
            out.append((h * m).sum(1) / m.sum(1))
    return np.concatenate(out)


@pytest.fixture(scope="session")
def minilm_data(minilm_onnx: Path, minilm_dir: Path) -> dict[str, list]:
    from calibration_data import open_data
    from runtime import Engine

    with Engine.load(minilm_onnx) as eng:
        specs = eng.input_specs
    calib = list(open_data("builtin:text", specs, batch_size=8, num_samples=64, model_dir=minilm_dir))
    held = list(open_data("builtin:text-heldout", specs, batch_size=8, num_samples=32, model_dir=minilm_dir))
    return {"calib": calib, "heldout": held}


@pytest.fixture(scope="session")
def minilm_int8(minilm_onnx: Path, minilm_data: dict) -> onnx.ModelProto:
    """MiniLM calibrated on the fly and quantized with SmoothQuant (fixed alpha keeps the test fast)."""
    return quantize(minilm_onnx, None, QuantConfig(smoothquant=0.8), calib_data=minilm_data["calib"])


def test_minilm_int8_matches_fp32(minilm_onnx: Path, minilm_int8: onnx.ModelProto, minilm_data: dict) -> None:
    ref = _mean_pooled(minilm_onnx, minilm_data["heldout"])
    out = _mean_pooled(minilm_int8, minilm_data["heldout"])
    cos = (ref * out).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())


def test_minilm_linear_layers_run_as_int8_kernels(minilm_int8: onnx.ModelProto, tmp_path: Path) -> None:
    ops = _ort_ops(minilm_int8, tmp_path)
    assert ops["MatMulIntegerToFloat"] >= 48  # 6 layers x (Q, K, V, Q.K^T, P.V, out, FFN1, FFN2)
    assert ops["MatMul"] == ops["FusedMatMul"] == ops["Gemm"] == 0 and ops["SkipLayerNormalization"] == 0
    assert ops["DequantizeLinear"] == 2  # after the word and position embedding lookups only
    weights = [i for i in minilm_int8.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert len(weights) >= 36


@pytest.fixture(scope="session")
def digits_table(digits_cnn_onnx: Path, digits_split: dict) -> CalibrationTable:
    from converter.calib.config import CalibConfig
    from converter.calibrate import calibrate

    X = digits_split["X_train"][:256]
    batches = [{"image": X[i : i + 32]} for i in range(0, len(X), 32)]
    return calibrate(digits_cnn_onnx, batches, CalibConfig(symmetric=False), progress=False)


def _accuracy(model, X: np.ndarray, y: np.ndarray) -> float:
    from runtime import Engine

    with Engine.load(model) as eng:
        logits = eng.run({"image": X})["logits"]
    return float((logits.argmax(-1) == y).mean())


def test_digits_cnn_int8_accuracy(digits_cnn_onnx: Path, digits_table: CalibrationTable, digits_split: dict,
                                  tmp_path: Path) -> None:
    q = quantize(digits_cnn_onnx, digits_table, QuantConfig(smoothquant=0.5))
    X, y = digits_split["X_test"], digits_split["y_test"]
    fp32, int8 = _accuracy(str(digits_cnn_onnx), X, y), _accuracy(q, X, y)
    assert int8 >= fp32 - 0.01, (fp32, int8)
    ops = _ort_ops(q, tmp_path)
    assert ops["QLinearConv"] == 2 and ops["Conv"] == 0


def _cli(args: list[str]):
    from converter.cli.quantize import command

    return CliRunner().invoke(command, args)


def test_cli_quantizes_with_a_table(digits_cnn_onnx: Path, digits_table: CalibrationTable, tmp_path: Path) -> None:
    calib = digits_table.save(tmp_path / "calib.json")
    out = tmp_path / "cnn.int8.onnx"
    res = _cli([str(digits_cnn_onnx), "--calib", str(calib), "--exclude", "op:Gemm", "-o", str(out)])
    assert res.exit_code == 0, res.output
    ops = collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert ops["QuantizeLinear"] >= 2 and ops["Gemm"] == 2
    gemm_inputs = {i for n in onnx.load(str(out)).graph.node if n.op_type == "Gemm" for i in n.input}
    assert not any(i.endswith("_dequantized") for i in gemm_inputs)  # excluded op stays float


def test_cli_bad_calibration_files(digits_cnn_onnx: Path, digits_table: CalibrationTable, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = _cli([str(digits_cnn_onnx), "--calib", str(bad), "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code == 1 and str(bad) in res.output and "Traceback" not in res.output
    partial = CalibrationTable(tensors=dict(digits_table.tensors), channel_absmax={}, meta={})
    missing = "image"  # the first Conv's input
    del partial.tensors[missing]
    res = _cli([str(digits_cnn_onnx), "--calib", str(partial.save(tmp_path / "p.json")), "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code == 1 and f"'{missing}'" in res.output
    assert not (tmp_path / "x.onnx").exists()
    res = _cli([str(digits_cnn_onnx), "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code != 0 and "--calib" in res.output


def test_quantize_file_is_atomic_and_rejects_bad_model(tmp_path: Path, digits_cnn_onnx: Path,
                                                       digits_table: CalibrationTable) -> None:
    from converter.errors import ModelFileError

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="junk.onnx"):
        quantize_file(junk, tmp_path / "out.onnx", digits_table)
    out = quantize_file(digits_cnn_onnx, tmp_path / "out.onnx", digits_table)
    assert out.is_file() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(CalibrationError):
        quantize_file(digits_cnn_onnx, tmp_path / "o2.onnx", tmp_path / "missing.json")


def _keeps_digits_accuracy(model: Path, split: dict, out: Path, *options: str) -> None:
    """`qdq quantize MODEL --data builtin:digits OPTIONS -o OUT` succeeds and keeps the digits accuracy
    within 2 points of FP32's."""
    res = _cli([str(model), "--data", "builtin:digits", *options, "-o", str(out)])
    assert res.exit_code == 0, res.output
    X, y = split["X_test"], split["y_test"]
    assert _accuracy(str(out), X, y) >= _accuracy(str(model), X, y) - 0.02


def test_cli_calibrates_on_the_fly(digits_cnn_onnx: Path, digits_split: dict, tmp_path: Path) -> None:
    out = tmp_path / "cnn.int8.onnx"
    _keeps_digits_accuracy(digits_cnn_onnx, digits_split, out, "--num-samples", "32", "--smoothquant", "0.5",
                           "--method", "percentile")
    res = _cli([str(digits_cnn_onnx), "--data", "builtin:digits", "--smoothquant", "fast", "-o", str(out)])
    assert res.exit_code == 2 and "auto" in res.output


def test_cli_weight_rounding(digits_cnn_onnx: Path, digits_split: dict, tmp_path: Path) -> None:
    """--weight-rounding gptq (the default with --data) and nearest both write models that keep the digits
    accuracy; they differ in the rounding of the Conv/Gemm weights only."""
    import onnx

    outs = {}
    for mode in ("gptq", "nearest"):
        outs[mode] = tmp_path / f"cnn.{mode}.onnx"
        _keeps_digits_accuracy(digits_cnn_onnx, digits_split, outs[mode], "--num-samples", "48",
                               "--weight-rounding", mode)

    def weights(path: Path) -> dict:
        m = onnx.load(str(path))
        return {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer if i.data_type == onnx.TensorProto.INT8}

    a, b = weights(outs["gptq"]), weights(outs["nearest"])
    assert a.keys() == b.keys() and a
    assert any((a[k] != b[k]).any() for k in a)
    assert max(int(np.abs(a[k].astype(int) - b[k].astype(int)).max()) for k in a) <= 8
    res = _cli([str(digits_cnn_onnx), "--data", "builtin:digits", "--weight-rounding", "adaround", "-o", str(outs["gptq"])])
    assert res.exit_code == 2 and "weight-rounding" in res.output


def test_cli_range_search(digits_cnn_onnx: Path, digits_split: dict, tmp_path: Path) -> None:
    """--range-search none writes a model that keeps the digits accuracy; an unknown choice is a usage error."""
    out = tmp_path / "cnn.none.onnx"
    _keeps_digits_accuracy(digits_cnn_onnx, digits_split, out, "--num-samples", "48", "--weight-rounding", "nearest",
                           "--range-search", "none")
    res = _cli([str(digits_cnn_onnx), "--data", "builtin:digits", "--range-search", "wide", "-o", str(out)])
    assert res.exit_code == 2 and "range-search" in res.output
