"""Feeds whose shapes disagree on a shared symbolic dimension are refused before ONNX Runtime runs,
naming the inputs and their shapes; a run that fails inside ONNX Runtime raises one EngineError
without ONNX Runtime's raw coloured log on stderr."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from converter.cli import main
from runtime import Engine, EngineError, InputError


def _add_model(path: Path, a_dims: list, b_dims: list) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")], "add",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_dims),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, b_dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_npz_with_mismatched_sequence_names_inputs(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    model = _add_model(tmp_path / "m.onnx", ["batch", "sequence"], ["batch", "sequence"])
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, a=np.ones((2, 10), np.float32), b=np.ones((2, 12), np.float32))
    res = CliRunner().invoke(main, ["run", str(model), "--input", str(feeds)], catch_exceptions=False)
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: inputs disagree on dimension 'sequence'"), res.output
    assert "'a' [2, 10]" in lines[0] and "'b' [2, 12]" in lines[0]
    assert "onnxruntime" not in capfd.readouterr().err


def test_failed_run_raises_without_raw_ort_log(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    model = _add_model(tmp_path / "m.onnx", ["n"], ["m"])  # different names: only ORT can find the clash
    with Engine.load(model) as eng:
        with pytest.raises(EngineError, match="running .*m.onnx failed"):
            eng.run({"a": np.ones(3, np.float32), "b": np.ones(4, np.float32)})
        with pytest.raises(InputError):
            eng.run({"a": np.ones(3, np.float64), "b": np.ones(3, np.float32)})
    assert "[E:onnxruntime" not in capfd.readouterr().err
