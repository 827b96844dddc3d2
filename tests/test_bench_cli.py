"""`qdq bench`: the batch it reports is the batch it ran, bad batches are refused, build folders load,
and the timed runs show a progress bar on a terminal."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from converter.cli import main


def _run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _matmul_model(path: Path, batch: int | str) -> Path:
    """x float32[batch, 16] @ W[16, 4] -> y; ``batch`` a fixed size or a symbolic name."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def fixed_batch_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _matmul_model(tmp_path_factory.mktemp("bench") / "fixed1.onnx", 1)


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _matmul_model(tmp_path_factory.mktemp("bench") / "dynamic.onnx", "batch")


def test_fixed_batch_refuses_another_batch(fixed_batch_model: Path) -> None:
    res = _run("bench", fixed_batch_model, "--batch", "8", "--runs", "3")
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "fixes the batch at 1" in lines[0], res.output
    assert "samples/s" not in res.output


def test_throughput_counts_the_batch_that_ran(fixed_batch_model: Path, dynamic_model: Path) -> None:
    res = _run("bench", fixed_batch_model, "--batch", "1", "--runs", "5", "--json")
    assert res.exit_code == 0, res.output
    row = json.loads(res.output)[0]
    assert row["batch"] == 1 and row["throughput"] == pytest.approx(1000.0 / row["p50_ms"])
    res = _run("bench", dynamic_model, "--batch", "8", "--runs", "5", "--json")
    row = json.loads(res.output)[0]
    assert row["batch"] == 8 and row["throughput"] == pytest.approx(8000.0 / row["p50_ms"])


@pytest.mark.parametrize("option", ["--batch", "--runs"])
def test_non_positive_counts_are_usage_errors(dynamic_model: Path, option: str) -> None:
    res = _run("bench", dynamic_model, option, "0")
    assert res.exit_code == 2 and "samples/s" not in res.output
    assert f"Invalid value for '{option}'" in res.output


def test_bench_a_build_folder(dynamic_model: Path, tmp_path: Path) -> None:
    from converter.build import build

    folder = tmp_path / "build"
    folder.mkdir()
    res = _run("bench", folder, "--runs", "3")
    assert res.exit_code == 1 and "no build manifest" in res.output, res.output
    build(dynamic_model, "ort-cpu", folder)
    res = _run("bench", folder, "--batch", "2", "--runs", "3")
    assert res.exit_code == 0, res.output
    assert "batch   2" in res.output and "samples/s" in res.output
    build(dynamic_model, "ort-edge", folder)  # a second artifact: which one is meant is not clear
    res = _run("bench", folder, "--runs", "3")
    assert res.exit_code == 1 and "2 build manifests" in res.output, res.output


def test_runs_show_a_bar_on_a_terminal_only(dynamic_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _run("bench", dynamic_model, "--runs", "7")
    assert res.exit_code == 0 and "/7" not in res.stderr  # not a terminal: no bar in logs or pipes
    monkeypatch.setattr("converter.cli.progress.on_terminal", lambda: True)
    res = _run("bench", dynamic_model, "--runs", "7")
    assert res.exit_code == 0, res.output
    assert "batch 1:" in res.stderr and "/7 [" in res.stderr and "samples/s" in res.stdout
