"""`qdq calibrate` command: real data sources, outputs, one-line errors."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from converter.calib.table import CalibrationTable
from converter.cli.calibrate import command


def test_cli_digits_percentile_with_trt_cache(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "calib.json", tmp_path / "calib.cache"
    result = CliRunner().invoke(command, [str(digits_cnn_onnx), "--data", "builtin:digits", "--method", "percentile",
                                          "--percentile", "99.9", "-n", "20", "-b", "8", "-o", str(out),
                                          "--trt-cache", str(cache), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "calibrated" in result.output and "on 20 samples" in result.output and str(out) in result.output
    table = CalibrationTable.load(out)
    assert table.meta["num_samples"] == 20 and table.meta["num_batches"] == 3
    assert table.meta["config"]["percentile"] == 99.9 and "image" in table.tensors
    assert table.meta["config"]["scope"] == "all" and "logits" in table.tensors  # a TensorRT cache covers all
    assert cache.read_text().startswith("TRT-") and len(cache.read_text().splitlines()) == len(table.tensors) + 1


def test_cli_text_with_builtin_tokenizer_asymmetric(minilm_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "calib.json"
    result = CliRunner().invoke(command, [str(minilm_onnx), "--data", "builtin:text", "--tokenizer", "minilm",
                                          "-n", "4", "-b", "4", "--max-length", "16", "--asymmetric",
                                          "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    table = CalibrationTable.load(out)
    assert table.tensors and all(r.qtype == "uint8" for r in table.tensors.values())
    assert table.meta["num_samples"] == 4 and table.meta["config"]["scope"] == "quantizable"
    result = CliRunner().invoke(command, [str(minilm_onnx), "--data", "builtin:text", "--tokenizer", "minilm",
                                          "-n", "4", "--max-length", "16", "--all-tensors",
                                          "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    everything = CalibrationTable.load(out)
    assert everything.get("last_hidden_state").qtype == "int8" and len(everything.tensors) > 3 * len(table.tensors)


def _text_model_without_tokenizer(folder: Path) -> Path:
    """A small text-shaped model (int64 input_ids/attention_mask) with no tokenizer anywhere near it."""
    import onnx
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("out", TensorProto.INT64, ["batch", "sequence"])
    graph = helper.make_graph([helper.make_node("Add", ["input_ids", "attention_mask"], ["out"])], "g", [ids, mask], [out])
    path = folder / "bare" / "text.onnx"
    path.parent.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_cli_errors_are_one_line(digits_cnn_onnx: Path, minilm_onnx: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "c.json")
    cases = [
        ([str(digits_cnn_onnx), "--data", str(tmp_path / "nothing.txt"), "-o", out], "nothing.txt"),
        ([str(tmp_path / "absent.onnx"), "--data", "builtin:digits", "-o", out], "absent.onnx"),
        ([str(_text_model_without_tokenizer(tmp_path)), "--data", "builtin:text", "-o", out], "--tokenizer"),
        ([str(minilm_onnx), "--data", "builtin:digits", "-o", out], "attention_mask"),
    ]
    for args, needle in cases:
        result = runner.invoke(command, args + ["--no-progress"])
        assert result.exit_code == 1, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], result.output
    assert not (tmp_path / "c.json").exists()
