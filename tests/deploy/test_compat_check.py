"""`qdq check` on good QDQ models and on deliberately broken ones, for tensorrt and ort-cpu."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.check import CheckError, check_model


def _model(nodes: list, inits: list, inputs: list, outputs: list, opset: int = 20, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    *(helper.make_opsetid(d, v) for d, v in extra_opsets)])
    model.ir_version = 10
    return model


def qdq_conv(weight_axis: int = 0, n_scales: int | None = None, act_zp: int = 0, act_scale: float = 0.02,
             act_type: int = TensorProto.INT8, weight_type: int = TensorProto.INT8, act_axis: int | None = None,
             then: str | None = None) -> onnx.ModelProto:
    """x[1,3,8,8] -Q/DQ-> Conv(W[4,3,3,3] int8 -> DQ per channel) -Q/DQ-> y, optionally -> ``then`` op."""
    rng = np.random.default_rng(0)
    np_act = helper.tensor_dtype_to_np_dtype(act_type)
    np_w = helper.tensor_dtype_to_np_dtype(weight_type)
    n = n_scales if n_scales is not None else (4, 3, 3, 3)[weight_axis]
    act_scales = np.full(3, act_scale, np.float32) if act_axis is not None else np.array(act_scale, np.float32)
    inits = [
        numpy_helper.from_array(act_scales, "x_scale"),
        numpy_helper.from_array(np.full(act_scales.shape, act_zp, np_act), "x_zp"),
        numpy_helper.from_array(rng.integers(-100, 100, (4, 3, 3, 3)).astype(np_w), "w_q"),
        numpy_helper.from_array(np.full(n, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(n, np_w), "w_zp"),
        numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(act_zp, np_act), "y_zp"),
    ]
    axis = {"axis": act_axis} if act_axis is not None else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_Q", **axis),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_DQ", **axis),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_DQ", axis=weight_axis),
        helper.make_node("Conv", ["x_dq", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["conv", "y_scale", "y_zp"], ["y_q"], name="y_Q"),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["y"], name="y_DQ"),
    ]
    out = "y"
    if then:
        nodes.append(helper.make_node(then, ["y"], ["z"], name=then.lower()))
        out = "z"
    return _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])


def _rules(model, target: str, severity: str = "error") -> set[str]:
    return check_model(model, target).rules(severity)


# ---- good models -------------------------------------------------------------------------------------

def test_clean_models_pass(qdq_cnn_sym: Path, qdq_cnn: Path, qdq_minilm: Path) -> None:
    r = check_model(qdq_cnn_sym, "tensorrt")
    assert r.ok and not r.warnings, r.render()
    assert r.stats["opset"] == 20 and r.stats["Q"] >= 7 and r.stats["DQ"] >= 11
    assert check_model(qdq_minilm, "tensorrt").ok
    for model in (qdq_cnn_sym, qdq_cnn, qdq_minilm):
        assert check_model(model, "ort-cpu").ok
    assert check_model(qdq_conv(), "tensorrt").findings == []


def test_ort_cpu_load_test_reports_what_onnxruntime_fused(qdq_cnn: Path, qdq_minilm: Path) -> None:
    r = check_model(qdq_cnn, "ort-cpu", load_test=True)
    assert r.ok and not r.warnings
    (note,) = [f for f in r.findings if f.rule == "load"]
    assert "4 quantized kernel(s), 0 Q->DQ pair(s) and 0 weight DQ(s) remain" in note.message
    # ONNX Runtime leaves some of MiniLM's int8 MatMuls unfused on the CPU: the load test says which
    r = check_model(qdq_minilm, "ort-cpu", load_test=True)
    assert r.ok and {"unfused-qdq", "unfused-weight"} <= r.rules("warning")


# ---- broken models -----------------------------------------------------------------------------------

def test_asymmetric_zero_points_and_int32_bias_for_tensorrt(qdq_cnn: Path) -> None:
    r = check_model(qdq_cnn, "tensorrt")  # onnxruntime defaults: asymmetric int8 activations, int32 biases
    assert not r.ok and r.rules("error") == {"zero-point", "quant-type"}
    zp = [f for f in r.violations if f.rule == "zero-point"]
    assert {f.node for f in zp} >= {"image_QuantizeLinear", "relu_DequantizeLinear"}
    assert "zero point -128 is not 0" in zp[0].message
    bias = [f.message for f in r.violations if f.rule == "quant-type"]
    assert len(bias) == 4 and all("int32" in m and "QuantizeBias=False" in m for m in bias)
    assert _rules(qdq_conv(act_zp=3), "tensorrt") == {"zero-point"}
    assert _rules(qdq_conv(act_zp=3), "ort-cpu") == set()


def test_uint8_weights_and_activations(qdq_cnn_u8: Path) -> None:
    r = check_model(qdq_cnn_u8, "tensorrt")
    u8 = [f.message for f in r.violations if f.rule == "quant-type" and "uint8" in f.message]
    assert u8 and all("re-quantize with int8" in m for m in u8)
    assert any("weight_DequantizeLinear" in f.node for f in r.violations if f.rule == "quant-type")
    assert check_model(qdq_cnn_u8, "ort-cpu").ok
    assert _rules(qdq_conv(weight_type=TensorProto.UINT8), "tensorrt") == {"quant-type"}


def test_per_channel_axes() -> None:
    wrong_axis = qdq_conv(weight_axis=1)  # input channels instead of output channels
    assert _rules(wrong_axis, "tensorrt") == {"weight-axis"}
    assert "output-channel axis is 0" in check_model(wrong_axis, "tensorrt").violations[0].message
    assert _rules(wrong_axis, "ort-cpu") == set() and _rules(wrong_axis, "ort-cpu", "warning") == {"weight-axis"}
    for broken in (qdq_conv(weight_axis=4, n_scales=4), qdq_conv(n_scales=5)):  # out of range; wrong count
        for target in ("tensorrt", "ort-cpu"):
            assert "axis" in _rules(broken, target)
    assert "5 per-channel scales for axis 0" in check_model(qdq_conv(n_scales=5), "ort-cpu").violations[0].message
    per_channel_act = qdq_conv(act_axis=1)
    assert _rules(per_channel_act, "tensorrt") == {"activation-per-channel"}
    assert _rules(per_channel_act, "ort-cpu", "warning") == {"activation-per-channel"}


def test_bad_scale_is_a_violation_everywhere() -> None:
    for target in ("tensorrt", "ort-cpu"):
        assert _rules(qdq_conv(act_scale=0.0), target) == {"scale"}
        assert _rules(qdq_conv(act_scale=float("nan")), target) == {"scale"}


def test_ops_a_target_lacks() -> None:
    det = qdq_conv(then="Det")  # Det: no importer in TensorRT's ONNX parser; ONNX Runtime has a CPU kernel
    r = check_model(det, "tensorrt")
    assert r.rules("error") == {"op-support"} and "Det has no importer" in r.violations[0].message
    assert check_model(det, "ort-cpu").ok
    m = qdq_conv()
    m.graph.node.append(helper.make_node("Mystery", ["y"], ["z"], name="mystery", domain="com.example"))
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    m.graph.output[0].name = "z"
    assert "custom-domain op" in check_model(m, "tensorrt").violations[0].message
    r = check_model(m, "ort-cpu")
    assert r.rules("error") == {"op-support"} and "com.example.Mystery (version 1) has no CPU kernel" in r.violations[0].message


def test_dangling_and_unfused_qdq() -> None:
    # a QuantizeLinear whose int8 output is a graph output (no DequantizeLinear after it)
    m = qdq_conv()
    m.graph.output.append(helper.make_tensor_value_info("x_q", TensorProto.INT8, [1, 3, 8, 8]))
    r = check_model(m, "tensorrt")
    assert r.rules("error") == {"dangling-q"} and "'x_q' goes to a graph output" in r.violations[0].message
    assert check_model(m, "ort-cpu").rules("warning") == {"dangling-q"}
    # a Q/DQ pair between ops neither target runs in int8: only fake quantization
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("Exp", ["x"], ["e"], name="exp"),
             helper.make_node("QuantizeLinear", ["e", "s", "z"], ["e_q"], name="e_Q"),
             helper.make_node("DequantizeLinear", ["e_q", "s", "z"], ["e_dq"], name="e_DQ"),
             helper.make_node("Sqrt", ["e_dq"], ["y"], name="sqrt")]
    pair = _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    for target in ("tensorrt", "ort-cpu"):
        r = check_model(pair, target)
        assert r.ok and r.rules("warning") == {"unfused-qdq"}
        assert "feeds only Sqrt" in r.warnings[0].message


def test_half_quantized_layer_and_opset() -> None:
    m = qdq_conv()
    w = next(i for i in m.graph.initializer if i.name == "w_q")
    m.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(w).astype(np.float32), "w_float"))
    m.graph.node[3].input[1] = "w_float"  # Conv takes a float weight; its input is still quantized
    assert check_model(m, "tensorrt").rules("warning") >= {"half-quantized"}
    old = qdq_conv()
    old.opset_import[0].version = 8
    assert "opset" in _rules(old, "tensorrt")


def test_no_qdq_and_unknown_target(digits_cnn_onnx: Path) -> None:
    assert check_model(digits_cnn_onnx, "tensorrt").rules("warning") == {"no-qdq"}
    with pytest.raises(CheckError, match="unknown check target 'gpu'"):
        check_model(digits_cnn_onnx, "gpu")


# ---- command line ------------------------------------------------------------------------------------

def test_cli_check(qdq_cnn: Path, qdq_cnn_sym: Path, tmp_path: Path, cli) -> None:
    code, out = cli("check", qdq_cnn_sym, "--target", "tensorrt")
    assert code == 0 and "OK - 0 violation(s), 0 warning(s)" in out, out
    code, out = cli("check", qdq_cnn, "--target", "tensorrt")
    assert code == 1 and "NOT COMPATIBLE - 18 violation(s)" in out and "ERROR   [zero-point]" in out
    assert "ERROR   [zero-point] ... and 6 more like this (--json lists all)" in out  # 14 findings, 8 shown
    code, out = cli("check", qdq_cnn, "--target", "tensorrt", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and report["violations"] == 18 and len(report["findings"]) == 18
    code, out = cli("check", qdq_cnn, "--target", "ort-cpu", "--load-test")
    assert code == 0 and "loads the model" in out
    pair = tmp_path / "warn.onnx"
    onnx.save(qdq_conv(weight_axis=1), str(pair))
    assert cli("check", pair, "--target", "ort-cpu")[0] == 0
    assert cli("check", pair, "--target", "ort-cpu", "--strict")[0] == 1
    code, out = cli("check", tmp_path / "nope.onnx", "--target", "tensorrt")
    assert code == 1 and out.startswith("Error: model file not found")
