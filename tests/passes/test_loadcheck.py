"""`qdq quantize` never exits 0 with a model ONNX Runtime cannot load; nothing is left behind."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper
from qdq_graphs import calibrate_table, make_model

from converter.cli import main
from converter.loadcheck import UnloadableModelError
from converter.quantize import quantize_file


def _model(last_op: str, domain: str = "") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["a"]),
             helper.make_node("Conv", ["a", "w2"], ["d"], name="conv2"),
             helper.make_node(last_op, ["d"], ["y"], domain=domain)]
    model = make_model(nodes, {"x": ["batch", 3, 6, 6]}, ["y"],
                       {"w": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
                        "w2": rng.standard_normal((4, 4, 1, 1)).astype(np.float32)})
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return model


@pytest.fixture
def unloadable(tmp_path: Path) -> tuple[Path, Path]:
    """A model whose last op no ONNX Runtime kernel implements, and a calibration table for its tensors."""
    rng = np.random.default_rng(1)
    table = calibrate_table(_model("Identity"), [{"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)}])
    table.save(tmp_path / "calib.json")
    onnx.save(_model("NoSuchOp", "com.example"), tmp_path / "custom.onnx")
    return tmp_path / "custom.onnx", tmp_path / "calib.json"


def test_quantize_file_refuses_a_model_ort_cannot_load(unloadable, tmp_path: Path) -> None:
    model, calib = unloadable
    out = tmp_path / "out" / "model.int8.onnx"
    with pytest.raises(UnloadableModelError, match="ONNX Runtime cannot load .*NoSuchOp"):
        quantize_file(model, out, calib)
    assert not out.exists() and list(out.parent.iterdir()) == []  # no temp file left either


def test_cli_quantize_exits_1_with_one_line(unloadable, tmp_path: Path) -> None:
    model, calib = unloadable
    out = tmp_path / "model.int8.onnx"
    res = CliRunner().invoke(main, ["quantize", str(model), "--calib", str(calib), "-o", str(out)])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ONNX Runtime cannot load"), res.output
    assert not out.exists()


def test_loadable_model_is_written_with_scalar_scales(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    model = _model("Identity")
    table = calibrate_table(model, [{"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)}])
    onnx.save(model, tmp_path / "m.onnx")
    out = quantize_file(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", table)
    q = onnx.load(out)
    per_tensor = [i for i in q.graph.initializer if i.name in ("x_scale", "x_zero_point", "a_scale", "d_scale")]
    assert len(per_tensor) == 4 and all(list(i.dims) == [] for i in per_tensor)  # scalars, not shape (1,)
