"""If/Loop subgraphs stay float with one line saying so; `qdq quantize` ends with a speed line."""
from __future__ import annotations

from pathlib import Path

import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import graphs
import numpy as np
from converter.cli import main
from converter.speed_check import SpeedCheck, SpeedResult, check_speed


def _qdq(*args: object):  # noqa: ANN202
    return CliRunner().invoke(main, [str(a) for a in args])


def test_if_branches_stay_float_and_are_named(tmp_path: Path, photos: Path, caplog) -> None:  # noqa: ANN001
    src = graphs.save(graphs.conv_net(with_if=True), tmp_path, "if.onnx")
    out = tmp_path / "q.onnx"
    with caplog.at_level("WARNING"):
        res = _qdq("quantize", src, "--data", photos, "-o", out, "--no-speed-check")
    assert res.exit_code == 0, res.output
    lines = [r.getMessage() for r in caplog.records if "control-flow" in r.getMessage()]
    assert len(lines) == 1 and "If 'guard/If' (2 nodes)" in lines[0]
    q = onnx.load(str(out))
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) >= 4  # the main graph is quantized
    if_node = next(n for n in q.graph.node if n.op_type == "If")
    assert all(n.op_type != "QuantizeLinear" for a in if_node.attribute for n in a.g.node)


def test_weights_only_inside_a_loop_body_is_one_line_error(tmp_path: Path, photos: Path) -> None:
    w = numpy_helper.from_array(np.eye(8, dtype=np.float32), "w")
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "w"], ["h_out"], name="body/MatMul"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, None)], [w])
    trips = numpy_helper.from_array(np.array(3, np.int64), "trips")
    cond = numpy_helper.from_array(np.array(True), "cond")
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "image"], ["final"], body=body, name="encoder/Loop")], "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("final", TensorProto.FLOAT, None)], [trips, cond])
    src = tmp_path / "loop.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(src))
    res = _qdq("quantize", src, "--data", photos, "-o", tmp_path / "q.onnx")
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "Loop 'encoder/Loop'" in lines[0] and "re-export without control flow" in lines[0]
    assert not (tmp_path / "q.onnx").exists()


def test_quantize_ends_with_a_speed_line(tmp_path: Path, photos: Path, model_file) -> None:
    src = model_file()
    res = _qdq("quantize", src, "--data", photos, "-o", tmp_path / "q.onnx")
    assert res.exit_code == 0, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith(("speed vs FP32: batch 1 ", "WARNING: the INT8 model is slower than FP32")), last
    assert "batch 8" in last
    res = _qdq("quantize", src, "--data", photos, "-o", tmp_path / "q2.onnx", "--no-speed-check")
    assert res.exit_code == 0 and "speed" not in res.output


def test_speed_check_fixed_batch_and_the_warning_line(tmp_path: Path, photos: Path, model_file) -> None:
    src = model_file(batch=1)
    out = tmp_path / "q.onnx"
    assert _qdq("quantize", src, "--data", photos, "-o", out, "--no-speed-check").exit_code == 0
    check = check_speed(src, out)  # synthetic feeds (no sample): the fixed batch 1 is measured, 8 is not
    assert [r.batch for r in check.results] == [1] and all(r.fp32_ms > 0 and r.int8_ms > 0 for r in check.results)
    assert "batch 8 not measured: the model fixes its batch size" in check.line()
    slow = SpeedCheck([SpeedResult(1, 1.0, 0.5), SpeedResult(8, 4.0, 5.0)])
    assert slow.slower == [SpeedResult(8, 4.0, 5.0)]
    assert slow.line().startswith("WARNING: the INT8 model is slower than FP32") and "\n" not in slow.line()
