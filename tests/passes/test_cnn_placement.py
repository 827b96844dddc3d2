"""CNN activations: Relu/Clip fold into the producer's output quantization (quantized once, after the
activation), ORT fuses the result into QLinearConv; an SE block stays within tolerance of FP32."""
from __future__ import annotations

import numpy as np
import pytest
import onnx
import onnx_ir as ir
from onnx import helper
from int8_numerics import assert_fused_close, run_exact
from qdq_graphs import calibrate_table, make_model, optimized_op_types, run

from converter.pipeline import preprocess
from converter.passes.qdq_placement import QDQPlacementPass, plan_of, required_tensors
from converter.quant.config import QuantConfig
from converter.quantize import quantize

C = 16


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _conv_chain() -> onnx.ModelProto:
    """Conv -> Clip(0, 6) -> depthwise Conv -> Relu -> Conv -> GlobalAveragePool, with biases that give
    the pre-activation tensors a much wider range than the activations' outputs."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"], name="relu6"),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=C, name="dwconv"),
        helper.make_node("Relu", ["c2"], ["a2"], name="relu"),
        helper.make_node("Conv", ["a2", "w3", "b3"], ["c3"], name="project"),
        helper.make_node("GlobalAveragePool", ["c3"], ["y"], name="gap"),
    ]
    inits = {"w1": _w(rng, C, 3, 3, 3, scale=2.0), "b1": _w(rng, C, scale=8.0),
             "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
             "w2": _w(rng, C, 1, 3, 3), "b2": _w(rng, C, scale=4.0) - 3.0,
             "w3": _w(rng, C, C, 1, 1), "b3": _w(rng, C)}
    return make_model(nodes, {"x": ["batch", 3, 12, 12]}, ["y"], inits)


def _batches(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((4, 3, 12, 12)).astype(np.float32)} for _ in range(n)]


def _q_inputs(model: onnx.ModelProto) -> set[str]:
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_relu_and_clip_fold_into_the_conv_output() -> None:
    config = QuantConfig()
    m = preprocess(ir.from_proto(_conv_chain()), config)
    QDQPlacementPass(config)(m)
    plans = {n.name: plan_of(n) for n in m.graph if plan_of(n) is not None}
    assert [a.name for a in plans["conv1"].folded] == ["relu6"]
    assert [a.name for a in plans["dwconv"].folded] == ["relu"]
    assert plans["project"].folded == ()
    # the pre-activation tensors c1, c2 need no range: quantized once, after the activation
    assert sorted(required_tensors(m)) == ["a1", "a2", "c3", "x"]


def test_conv_activation_chain_is_quantized_once_and_fused(tmp_path) -> None:
    model = _conv_chain()
    q = quantize(model, calibrate_table(model, _batches(1, 4)), QuantConfig())
    assert _q_inputs(q) == {"x", "a1", "a2", "c3"}  # not c1, c2 (before and after each activation)
    ops = optimized_op_types(q, tmp_path)
    assert ops["QLinearConv"] == 3, ops  # the activations are absorbed by the Q's range
    assert ops["Clip"] == 0 and ops["Relu"] == 0, ops
    feeds = _batches(7, 1)[0]
    ref, exact, fused = run(model, feeds)[0], run_exact(q, feeds)["y"], run(q, feeds)[0]
    assert np.abs(exact - ref).max() < 0.03 * np.abs(ref).max()
    assert_fused_close(fused, exact)


def test_activation_with_other_users_or_graph_output_is_not_folded() -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu"),
             helper.make_node("Conv", ["x", "w"], ["d"], name="conv2"),
             helper.make_node("Relu", ["d"], ["e"], name="relu2"),
             helper.make_node("Tanh", ["d"], ["f"], name="tanh")]  # a Sigmoid output would make conv2 a score head
    model = make_model(nodes, {"x": [1, 3, 4, 4]}, ["y", "e", "f"], {"w": _w(rng, 4, 3, 1, 1)})
    config = QuantConfig()
    m = preprocess(ir.from_proto(model), config)
    QDQPlacementPass(config)(m)
    plans = {n.name: plan_of(n) for n in m.graph if plan_of(n) is not None}
    assert plans["conv"].folded == () and plans["conv"].output  # Relu output is a graph output
    assert plans["conv2"].folded == () and plans["conv2"].output  # d has two users
    assert sorted(required_tensors(m)) == ["c", "d", "x"]


def _se_block() -> onnx.ModelProto:
    """Conv -> Relu -> squeeze-excite (GlobalAveragePool -> Conv -> Relu -> Conv -> Sigmoid -> Mul)
    -> Conv, the block of MobileNetV3 / EfficientNet."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["a1"]),
        helper.make_node("GlobalAveragePool", ["a1"], ["g"]),
        helper.make_node("Conv", ["g", "ws", "bs"], ["s"]),
        helper.make_node("Relu", ["s"], ["sr"]),
        helper.make_node("Conv", ["sr", "we", "be"], ["e"]),
        helper.make_node("Sigmoid", ["e"], ["gate"]),
        helper.make_node("Mul", ["a1", "gate"], ["scaled"]),
        helper.make_node("Conv", ["scaled", "w2", "b2"], ["y"]),
    ]
    inits = {"w1": _w(rng, C, 3, 3, 3), "b1": _w(rng, C), "ws": _w(rng, 4, C, 1, 1), "bs": _w(rng, 4),
             "we": _w(rng, C, 4, 1, 1), "be": _w(rng, C), "w2": _w(rng, 8, C, 1, 1), "b2": _w(rng, 8)}
    return make_model(nodes, {"x": ["batch", 3, 12, 12]}, ["y"], inits)


def test_se_block_holds_fp32_tolerance(tmp_path) -> None:
    model = _se_block()
    q = quantize(model, calibrate_table(model, _batches(3, 4)), QuantConfig())
    assert {"c1", "s"}.isdisjoint(_q_inputs(q))  # quantized after their Relu, not before
    ops = optimized_op_types(q, tmp_path)
    assert ops["QLinearConv"] >= 3
    # the gate and its product run as integer kernels between the Convs, not float between DQ and Q
    assert ops["QLinearSigmoid"] == 1 and ops["QLinearMul"] == 1 and ops["Sigmoid"] == ops["Mul"] == 0
    feeds = _batches(8, 1)[0]
    ref, exact, fused = run(model, feeds)[0], run_exact(q, feeds)["y"], run(q, feeds)[0]
    assert np.abs(exact - ref).max() < 0.05 * np.abs(ref).max()
    assert_fused_close(fused, exact)


def test_channel_with_zero_weights_keeps_its_bias() -> None:
    """A dead channel (all-zero weights, as pruned or ReLU6-saturated nets have) outputs its bias: its
    int32 bias must not saturate (the weight scale is raised instead of a near-zero one)."""
    rng = np.random.default_rng(4)
    w = _w(rng, 4, 3, 3, 3)
    w[1] = 0.0
    w[2] = 1e-9
    b = np.array([0.1, 2.5, -1.5, 0.3], np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c", "w2"], ["y"])]
    model = make_model(nodes, {"x": ["batch", 3, 6, 6]}, ["y", "c"], {"w": w, "b": b, "w2": _w(rng, 2, 4, 1, 1)})
    feeds = {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)}
    q = quantize(model, calibrate_table(model, [feeds]), QuantConfig())
    biases = [i for i in q.graph.initializer if i.name == "b_quantized"]
    assert np.abs(onnx.numpy_helper.to_array(biases[0]).astype(np.int64)).max() < 2**31 - 1
    exact = run_exact(q, feeds)["c"]
    np.testing.assert_allclose(exact[:, 1], 2.5, atol=0.05)
    np.testing.assert_allclose(exact[:, 2], -1.5, atol=0.05)


def test_bias_correction_removes_the_mean_shift_of_weight_rounding(tmp_path) -> None:
    """Depthwise 3x3 kernels with one large tap: the small taps round coarsely, and on an input with a
    large mean that shifts every output channel. Bias correction folds (W - W_q) . E[x] into the bias
    (x: the quantized output of the Conv + Relu before it)."""
    rng = np.random.default_rng(5)
    w = _w(rng, C, 1, 3, 3, scale=0.05)
    w[:, 0, 1, 1] = 2.0
    nodes = [helper.make_node("Conv", ["x", "eye"], ["p"], name="pre"),
             helper.make_node("Relu", ["p"], ["a"]),
             helper.make_node("Conv", ["a", "w", "b"], ["y"], group=C, name="dw")]
    eye = np.eye(C, dtype=np.float32).reshape(C, C, 1, 1)
    model = make_model(nodes, {"x": ["batch", C, 8, 8]}, ["y"], {"eye": eye, "w": w, "b": _w(rng, C)})
    data = [{"x": (4.0 + rng.standard_normal((4, C, 8, 8))).astype(np.float32)} for _ in range(4)]
    table = calibrate_table(model, data)
    assert table.channel_mean["a"].shape == (C,) and abs(float(table.channel_mean["a"].mean()) - 4.0) < 0.1
    table.save(tmp_path / "t.json")
    from converter.calib.table import CalibrationTable

    loaded = CalibrationTable.load(tmp_path / "t.json")
    np.testing.assert_allclose(loaded.channel_mean["a"], table.channel_mean["a"])
    feeds = {"x": (4.0 + rng.standard_normal((8, C, 8, 8))).astype(np.float32)}
    ref = run(model, feeds)[0]
    shift = {}
    for on in (False, True):
        q = quantize(model, loaded, QuantConfig(bias_correction=on))
        shift[on] = np.abs((run_exact(q, feeds)["y"] - ref).mean((0, 2, 3))).max()
    assert shift[True] < 0.25 * shift[False], shift


def _excluded_depthwise() -> onnx.ModelProto:
    """Conv -> Relu -> depthwise Conv (channel scales spread over two decades) -> Relu -> Conv."""
    rng = np.random.default_rng(6)
    spread = np.geomspace(0.01, 1.0, C).astype(np.float32).reshape(C, 1, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["a1"], name="relu1"),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=C, name="dwconv"),
             helper.make_node("Relu", ["c2"], ["a2"], name="relu2"),
             helper.make_node("Conv", ["a2", "w3"], ["y"], name="project")]
    inits = {"w1": _w(rng, C, 3, 3, 3), "b1": _w(rng, C), "w2": _w(rng, C, 1, 3, 3, scale=1.0) * spread,
             "b2": np.abs(_w(rng, C)) * spread.reshape(C), "w3": _w(rng, 4, C, 1, 1)}
    return make_model(nodes, {"x": ["batch", 3, 10, 10]}, ["y", "a2"], inits)


def _batches_of(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((4, 3, 10, 10)).astype(np.float32)} for _ in range(n)]


def test_excluded_conv_keeps_float_weights_under_ort() -> None:
    """A Conv kept in float must not read a DequantizeLinear output: ONNX Runtime would quantize its float
    weights per tensor itself (the small channels of this depthwise Conv round to zero). The producer keeps
    a float output instead, and the fused model agrees with the exact one."""
    model = _excluded_depthwise()
    config = QuantConfig(exclude_nodes=("dwconv",))
    m = preprocess(ir.from_proto(model), config)
    QDQPlacementPass(config)(m)
    plans = {n.name: plan_of(n) for n in m.graph if plan_of(n) is not None}
    assert "dwconv" not in plans and not plans["conv1"].output
    q = quantize(model, calibrate_table(model, _batches_of(1, 4)), config)
    assert "a1" not in _q_inputs(q)
    feeds = _batches_of(9, 1)[0]
    ref, exact, fused = run(model, feeds), run_exact(q, feeds), run(q, feeds)
    assert np.abs(exact["y"] - ref[0]).max() < 0.1 * np.abs(ref[0]).max()  # per-tensor a2 over spread channels
    assert_fused_close(fused[0], exact["y"])
    # every channel of the float depthwise output, small ones included, keeps its values when fused
    per_channel = np.abs(fused[1] - ref[1]).max(axis=(0, 2, 3)) / np.abs(ref[1]).max(axis=(0, 2, 3))
    assert per_channel.max() < 0.1, per_channel


def test_rotary_style_products_outside_convs_stay_float() -> None:
    """Elementwise rules apply to Conv feature maps only: a 4-D product of two activations that no Conv
    produced (rotary embeddings' q * cos in attention) is not quantized."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("Reshape", ["q", "heads"], ["qh"]),
        helper.make_node("Cos", ["angle"], ["cos"]),
        helper.make_node("Mul", ["qh", "cos"], ["rot"]),
        helper.make_node("Sigmoid", ["rot"], ["y"]),
    ]
    inits = {"wq": _w(rng, 8, 8), "heads": np.array([0, 2, 4, 2], np.int64)}
    model = make_model(nodes, {"x": ["batch", 4, 8], "angle": ["batch", 2, 4, 2]}, ["y"], inits)
    config = QuantConfig()
    m = preprocess(ir.from_proto(model), config)
    QDQPlacementPass(config)(m)
    assert {n.op_type for n in m.graph if plan_of(n) is not None} == {"MatMul"}


# -- MobileNetV3-style activations: HardSwish, hard-sigmoid SE, pooled gates, LeakyRelu ----------------------
def _hard_block() -> onnx.ModelProto:
    """Conv -> HardSwish -> depthwise Conv -> HardSwish -> SE (ReduceMean -> Conv -> Relu -> Conv -> HardSigmoid
    -> Mul) -> Conv -> LeakyRelu -> Conv -> ReduceMean -> Flatten -> Gemm, as torch exports MobileNetV3."""
    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("HardSwish", ["c1"], ["h1"], name="hswish1"),
        helper.make_node("Conv", ["h1", "wd", "bd"], ["c2"], pads=[1, 1, 1, 1], group=C, name="dwconv"),
        helper.make_node("HardSwish", ["c2"], ["h2"], name="hswish2"),
        helper.make_node("ReduceMean", ["h2", "hw"], ["pooled"], name="se_pool"),
        helper.make_node("Conv", ["pooled", "ws", "bs"], ["s"], name="se_reduce"),
        helper.make_node("Relu", ["s"], ["sr"]),
        helper.make_node("Conv", ["sr", "we", "be"], ["e"], name="se_expand"),
        helper.make_node("HardSigmoid", ["e"], ["gate"], alpha=1.0 / 6, beta=0.5, name="se_gate"),
        helper.make_node("Mul", ["h2", "gate"], ["scaled"], name="se_mul"),
        helper.make_node("Conv", ["scaled", "wp", "bp"], ["c3"], name="project"),
        helper.make_node("LeakyRelu", ["c3"], ["l3"], alpha=0.1, name="leaky"),
        helper.make_node("Conv", ["l3", "wo", "bo"], ["c4"], name="out_conv"),
        helper.make_node("ReduceMean", ["c4", "hw"], ["p4"], name="head_pool"),
        helper.make_node("Flatten", ["p4"], ["f4"]),
        helper.make_node("Gemm", ["f4", "wf", "bf"], ["y"], transB=1, name="classifier"),
    ]
    inits = {"w1": _w(rng, C, 3, 3, 3), "b1": _w(rng, C, scale=2.0), "wd": _w(rng, C, 1, 3, 3, scale=1.0),
             "bd": _w(rng, C), "hw": np.array([2, 3], np.int64), "ws": _w(rng, 4, C, 1, 1), "bs": _w(rng, 4),
             "we": _w(rng, C, 4, 1, 1), "be": _w(rng, C), "wp": _w(rng, 8, C, 1, 1), "bp": _w(rng, 8),
             "wo": _w(rng, 8, 8, 1, 1), "bo": _w(rng, 8), "wf": _w(rng, 5, 8), "bf": _w(rng, 5)}
    return make_model(nodes, {"x": ["batch", 3, 12, 12]}, ["y"], inits)


def test_hard_activations_and_pools_run_on_integer_kernels(tmp_path) -> None:
    """ort-cpu: HardSwish/HardSigmoid become depthwise Conv + Clip (+ Mul), spatial ReduceMean becomes
    GlobalAveragePool, so ONNX Runtime runs the whole block as QLinear* kernels: nothing is dequantized to
    float between layers (before, each HardSwish ran in float between a DQ and a Q). The gates' ranges
    come from their inputs' calibrated ranges: the table is calibrated on the original model."""
    model = _hard_block()
    table = calibrate_table(model, _batches(12, 4))
    assert "c1" in table.tensors and not any("gate" in name and name != "gate" for name in table.tensors)
    q = quantize(model, table, QuantConfig())
    assert {n.op_type for n in q.graph.node}.isdisjoint({"HardSwish", "HardSigmoid", "ReduceMean"})
    ops = optimized_op_types(q, tmp_path)
    assert ops["QLinearConv"] == 6 + 3, ops  # 6 Convs + one gate Conv per HardSwish/HardSigmoid
    assert ops["QLinearMul"] == 3 and ops["QLinearGlobalAveragePool"] == 2 and ops["QLinearLeakyRelu"] == 1, ops
    float_ops = {"HardSigmoid", "HardSwish", "Mul", "Clip", "ReduceMean", "GlobalAveragePool", "LeakyRelu", "Conv"}
    assert not float_ops & {op for op, n in ops.items() if n}, ops
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 0, ops  # the input; QGemm outputs float
    feeds = _batches(13, 1)[0]
    ref, exact, fused = run(model, feeds)[0], run_exact(q, feeds)["y"], run(q, feeds)[0]
    assert np.abs(exact - ref).max() < 0.05 * np.abs(ref).max()
    assert_fused_close(fused, exact)


def test_tensorrt_keeps_hardswish_and_passes_its_check() -> None:
    """The rewrites are ort-cpu's (profile fields): TensorRT fuses Conv + HardSwish itself, and its output
    still passes ``check --target tensorrt``."""
    from converter.check import check_model

    model = _hard_block()
    table = calibrate_table(model, _batches(12, 4), symmetric=True)
    q = quantize(model, table, QuantConfig(target="tensorrt"))
    types = [n.op_type for n in q.graph.node]
    assert types.count("HardSwish") == 2 and types.count("HardSigmoid") == 1 and types.count("ReduceMean") == 2
    assert check_model(q, "tensorrt").ok


def test_hardswish_after_an_excluded_conv_stays_float() -> None:
    """No gate Conv is added where the producing Conv is kept float (its output is not quantized)."""
    config = QuantConfig(exclude_nodes=("stem",))
    m = preprocess(ir.from_proto(_hard_block()), config)
    types = {n.name: n.op_type for n in m.graph}
    assert types["hswish1"] == "HardSwish" and types["hswish2"] == "Mul"


def test_only_spatial_means_with_kept_dims_become_pools() -> None:
    """ReduceMean over H, W of a 4-D map with kept dims is GlobalAveragePool; a mean over channels, over the
    last axis of a 3-D tensor (RMSNorm), or without kept dims stays ReduceMean."""
    from converter.passes.global_pool import GlobalPoolPass

    nodes = [helper.make_node("ReduceMean", ["x", "hw"], ["a"], name="spatial"),
             helper.make_node("ReduceMean", ["x", "hw"], ["b"], keepdims=0, name="flat"),
             helper.make_node("ReduceMean", ["x", "c"], ["d"], name="channels"),
             helper.make_node("ReduceMean", ["t", "last"], ["e"], name="rms")]
    inits = {"hw": np.array([-2, -1], np.int64), "c": np.array([1], np.int64), "last": np.array([-1], np.int64)}
    model = make_model(nodes, {"x": ["batch", 4, 6, 6], "t": ["batch", 5, 8]}, ["a", "b", "d", "e"], inits)
    m = ir.from_proto(model)
    GlobalPoolPass()(m)
    assert {n.name: n.op_type for n in m.graph} == {"spatial": "GlobalAveragePool", "flat": "ReduceMean",
                                                    "channels": "ReduceMean", "rms": "ReduceMean"}
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32),
             "t": np.ones((2, 5, 8), np.float32)}
    for got, want in zip(run(ir.to_proto(m), feeds), run(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _seg_head(mode: str) -> onnx.ModelProto:
    """A U-Net decoder step: Conv -> Resize (x2) -> Concat with a skip Conv output -> Conv."""
    rng = np.random.default_rng(21)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["skip"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["skip"], ["s1"]),
        helper.make_node("Conv", ["s1", "wd", "bd"], ["down"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["down"], ["d1"]),
        helper.make_node("Resize", ["d1", "", "scales"], ["up"], mode=mode),
        helper.make_node("Concat", ["up", "s1"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w2", "b2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = {"w1": _w(rng, C, 3, 3, 3), "b1": _w(rng, C), "wd": _w(rng, C, C, 3, 3), "bd": _w(rng, C),
             "scales": np.array([1, 1, 2, 2], np.float32), "w2": _w(rng, 8, 2 * C, 3, 3), "b2": _w(rng, 8)}
    return make_model(nodes, {"x": ["batch", 3, 12, 12]}, ["y"], inits)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_and_concat_run_on_uint8_between_convs(tmp_path, mode: str) -> None:
    """ort-cpu: the Concat runs as QLinearConcat and a nearest Resize on uint8 (its DQ/Q dropped: the Q
    after it reuses its input's scale); before, both ran in float between a DequantizeLinear and the next
    QuantizeLinear. ORT 1.32 keeps a linear Resize in float between DQ and Q."""
    model = _seg_head(mode)
    q = quantize(model, calibrate_table(model, _batches(22, 4)), QuantConfig())
    ops = optimized_op_types(q, tmp_path)
    assert ops["QLinearConv"] == 2 and ops["QLinearConcat"] == 1 and ops["Concat"] == 0, ops
    # left: the last Conv's input, weight and bias DQs (it writes the float graph output), and linear's
    assert ops["DequantizeLinear"] == (3 if mode == "nearest" else 4), ops
    feeds = _batches(23, 1)[0]
    ref, exact, fused = run(model, feeds)[0], run_exact(q, feeds)["y"], run(q, feeds)[0]
    assert np.abs(exact - ref).max() < 0.05 * np.abs(ref).max()
    assert_fused_close(fused, exact)
