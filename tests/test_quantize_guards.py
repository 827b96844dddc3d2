"""`qdq quantize` refuses what would silently give a wrong model: --exclude that matches nothing, and an
edited calibration table with NaN or inverted ranges, for every target (issue 17, items 6 and 7)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from converter.calib.table import CalibrationError, CalibrationTable
from converter.cli import main
from converter.quant.config import QuantConfig
from converter.quant.errors import QuantizationError
from converter.quantize import quantize


def _run(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.output


def _error(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    return lines[0]


@pytest.fixture(scope="module")
def tables(digits_cnn_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Digits CNN tables from `qdq calibrate`: symmetric (the default) and asymmetric."""
    folder = tmp_path_factory.mktemp("tables")
    out = {}
    for name, extra in (("symmetric", []), ("asymmetric", ["--asymmetric"])):
        out[name] = folder / f"{name}.json"
        code, output = _run("calibrate", digits_cnn_onnx, "--data", "builtin:digits", "-n", "32", "--no-progress",
                            "-o", out[name], *extra)
        assert code == 0, output
    return out


@pytest.mark.parametrize("exclude, message", [
    ("node_conv2d_x", "'node_conv2d_x' matches no node name (near: 'node_conv2d_1', 'node_conv2d')"),
    ("op:Convv", "'op:Convv' matches no op type of the model (near: 'op:Conv')"),
    ("op:gemm", "'op:gemm' matches no op type of the model (near: 'op:Gemm')"),
    ("re:^node_lineer", "'re:^node_lineer' matches no node name (near: 'node_linear'"),
])
def test_exclude_matching_nothing_is_an_error(exclude: str, message: str, digits_cnn_onnx: Path,
                                              tables: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    code, output = _run("quantize", digits_cnn_onnx, "--calib", tables["symmetric"], "--exclude", exclude, "-o", out)
    assert code == 1
    assert _error(output).startswith(f"Error: --exclude {message}"), output
    assert not out.exists()


def test_exclude_lists_every_miss_and_keeps_working_ones(digits_cnn_onnx: Path, tables: dict[str, Path],
                                                         tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    code, output = _run("quantize", digits_cnn_onnx, "--calib", tables["symmetric"], "-o", out,
                        "--exclude", "node_linear_1,op:Gemm,re:conv2d_1$", "--exclude", "nothing_like_it")
    assert code == 1 and "'nothing_like_it' matches no node name (`qdq inspect MODEL`" in _error(output)
    code, output = _run("quantize", digits_cnn_onnx, "--calib", tables["symmetric"], "-o", out,
                        "--exclude", "node_linear_1,op:Gemm,re:conv2d_1$")
    assert code == 0, output
    graph = onnx.load(str(out)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    # an excluded layer keeps float weights (its input may still come from the DQ of the quantized
    # output of the layer before it, after a folded Relu)
    int8_weights = {n.name for n in graph.node if len(n.input) > 1 and n.input[1] in dequantized}
    assert "node_conv2d" in int8_weights  # the first Conv is quantized; the excluded three stay float
    assert not int8_weights & {"node_conv2d_1", "node_linear", "node_linear_1"}


def _edited(table: Path, folder: Path, **change: float) -> tuple[Path, str]:
    data = json.loads(table.read_text())
    name = next(n for n in data["tensors"] if n != "image")
    data["tensors"][name].update(change)
    path = folder / f"edited-{'-'.join(change)}.json"
    path.write_text(json.dumps(data))  # json writes NaN as the bare token NaN, which json.loads reads back
    return path, name


@pytest.mark.parametrize("change", [{"lo": math.nan}, {"lo": 3.0, "hi": -3.0}, {"scale": -0.1}])
def test_edited_table_is_rejected_for_every_target(change: dict, digits_cnn_onnx: Path, tables: dict[str, Path],
                                                   tmp_path: Path) -> None:
    """Before, ort-cpu re-derived asymmetric ranges from a symmetric table's statistics and never looked at the
    edited range (and tensorrt did the same with an asymmetric table), so the edit passed for one target only."""
    for symmetry, table in tables.items():
        edited, tensor = _edited(table, tmp_path, **change)
        for target in ("ort-cpu", "tensorrt"):
            out = tmp_path / f"{target}.onnx"
            code, output = _run("quantize", digits_cnn_onnx, "--calib", edited, "--target", target, "-o", out)
            assert code == 1, (symmetry, target, output)
            line = _error(output)
            assert line.startswith(f"Error: {edited}: tensor '{tensor}' has an invalid "), line
            assert not out.exists()
        with pytest.raises(CalibrationError, match=f"tensor '{tensor}' has an invalid"):
            CalibrationTable.load(edited)


def test_invalid_table_in_memory_is_rejected(digits_cnn_onnx: Path, tables: dict[str, Path]) -> None:
    table = CalibrationTable.load(tables["symmetric"])
    name = next(iter(table.channel_absmax))
    table.channel_absmax[name] = -table.channel_absmax[name]
    for target in ("ort-cpu", "tensorrt"):
        with pytest.raises(CalibrationError, match=f"tensor '{name}' has a non-finite or negative channel abs-max"):
            quantize(digits_cnn_onnx, table, QuantConfig(target=target, smoothquant=0.5))


def test_exclusions_are_checked_in_the_api(digits_cnn_onnx: Path, tables: dict[str, Path]) -> None:
    table = CalibrationTable.load(tables["symmetric"])
    with pytest.raises(QuantizationError, match="'op:MatMul' matches no op type"):
        quantize(digits_cnn_onnx, table, QuantConfig(exclude_op_types=("MatMul",)))


def test_weight_only_exclude_matching_nothing_is_an_error(tmp_path: Path) -> None:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from converter.llm.config import WeightOnlyConfig, WeightQuantError
    from converter.llm.weight_only import quantize_weights

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "W"], ["Y"], name="proj")], "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(np.ones((64, 16), np.float32), "W")])
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    with pytest.raises(WeightQuantError, match=r"--exclude 'prj' names no MatMul with a constant weight \(near: 'proj'\)"):
        quantize_weights(path, tmp_path / "q.onnx", WeightOnlyConfig(group_size=32, exclude=("prj",)))
    assert not (tmp_path / "q.onnx").exists()
    with pytest.raises(WeightQuantError, match="no MatMul with a constant"):  # a real name: excluded, nothing left
        quantize_weights(path, tmp_path / "q.onnx", WeightOnlyConfig(group_size=32, exclude=("W",)))
