"""QDQ placement (what gets marked) and insertion (what the graph becomes, what ORT fuses)."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper
from int8_numerics import assert_fused_close, run_exact
from qdq_graphs import calibrate_table, make_model, optimized_op_types, run

from converter.calib.table import CalibrationError
from converter.pipeline import preprocess
from converter.passes.qdq_placement import QDQPlacementPass, plan_of, required_tensors
from converter.quant.config import QuantConfig
from converter.quantize import quantize

D = 64


def _attention_like() -> onnx.ModelProto:
    """x @ Wq, x @ Wk -> scores -> Softmax -> @ x -> Gemm; one linear op also feeds a residual Add."""
    rng = np.random.default_rng(0)
    w = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="proj_q"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="proj_k"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[1, 0]),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "x"], ["ctx"], name="context"),
        helper.make_node("Add", ["ctx", "x"], ["res"], name="residual"),
        helper.make_node("Gemm", ["res", "wo", "bo"], ["y"], name="out_proj", transB=1),
    ]
    return make_model(nodes, {"x": [16, D]}, ["y"], {"wq": w(D, D), "wk": w(D, D), "wo": w(8, D), "bo": w(8)})


def _marked(model: onnx.ModelProto, config: QuantConfig) -> dict[str, object]:
    m = preprocess(ir.from_proto(model), config)
    QDQPlacementPass(config)(m)
    return {n.name: plan_of(n) for n in m.graph if plan_of(n) is not None}


def test_placement_marks_linear_ops_only() -> None:
    marks = _marked(_attention_like(), QuantConfig(quantize_attention=False))
    assert set(marks) == {"proj_q", "proj_k", "out_proj"}
    assert marks["proj_q"].weight == (1, 1) and marks["proj_q"].activations == [0]
    assert marks["out_proj"].weight == (1, 0)  # transB: output channels on axis 0


def test_placement_attention_and_exclusions() -> None:
    assert {"scores", "context"} <= set(_marked(_attention_like(), QuantConfig()))  # ort-cpu default
    assert "scores" not in _marked(_attention_like(), QuantConfig(target="tensorrt"))
    cfg = QuantConfig(exclude_nodes=("proj_q",), exclude_op_types=("Gemm",), exclude_patterns=(r"_k$", "^(sc|con)"))
    assert _marked(_attention_like(), cfg) == {}
    per_tensor = _marked(_attention_like(), QuantConfig(per_channel=False))
    assert per_tensor["proj_q"].weight == (1, None)


def test_required_tensors_are_the_linear_inputs() -> None:
    cfg = QuantConfig(quantize_attention=False)
    m = preprocess(ir.from_proto(_attention_like()), cfg)
    QDQPlacementPass(cfg)(m)
    assert sorted(required_tensors(m)) == ["res", "x"]


def _feeds(seed: int, n: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((16, D)).astype(np.float32)} for _ in range(n)]


def test_insertion_stores_int8_weights_and_fuses_on_ort(tmp_path) -> None:
    model = _attention_like()
    table = calibrate_table(model, _feeds(1, 4))
    q = quantize(model, table, QuantConfig(quantize_attention=False))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    assert inits["wq_quantized"].dtype == np.int8 and "wq" not in inits
    assert inits["wq_scale"].shape == (D,)
    assert inits["x_zero_point"].dtype == np.uint8
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") == 2  # x (shared by both projections) and res
    dq_weight = next(n for n in q.graph.node if n.input[0] == "wq_quantized")
    assert dq_weight.attribute[0].name == "axis" and dq_weight.attribute[0].i == 1
    optimized = optimized_op_types(q, tmp_path)
    assert optimized["MatMulIntegerToFloat"] >= 2 and optimized["DequantizeLinear"] == 0
    feeds = _feeds(5)[0]
    ref, exact, fused = run(model, feeds)[0], run_exact(q, feeds)["y"], run(q, feeds)[0]
    assert np.abs(exact - ref).max() < 0.05 * np.abs(ref).max()
    assert_fused_close(fused, exact)


def test_tensorrt_target_uses_symmetric_int8(tmp_path) -> None:
    model = _attention_like()
    table = calibrate_table(model, _feeds(1, 2), symmetric=True)
    q = quantize(model, table, QuantConfig(target="tensorrt"))
    zps = [numpy_helper.to_array(i) for i in q.graph.initializer if i.name in ("x_zero_point", "res_zero_point")]
    assert len(zps) == 2 and all(z.dtype == np.int8 and not z.any() for z in zps)


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    inits = {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
             "b": rng.standard_normal(8).astype(np.float32)}
    return make_model(nodes, {"x": ["batch", 3, 8, 8]}, ["y"], inits)


def test_conv_gets_int32_bias_and_becomes_qlinearconv(tmp_path) -> None:
    model = _conv_model()
    rng = np.random.default_rng(1)
    batches = [{"x": rng.random((4, 3, 8, 8), dtype=np.float32)} for _ in range(3)]
    q = quantize(model, calibrate_table(model, batches), QuantConfig())
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    assert inits["b_quantized"].dtype == np.int32
    np.testing.assert_allclose(inits["b_scale"], inits["x_scale"] * inits["w_scale"], rtol=1e-6)
    assert optimized_op_types(q, tmp_path)["QLinearConv"] == 1
    feeds = {"x": rng.random((2, 3, 8, 8), dtype=np.float32)}
    ref, exact, fused = run(model, feeds)[0], run_exact(q, feeds)["y"], run(q, feeds)[0]
    assert np.abs(exact - ref).max() < 0.05 * np.abs(ref).max()
    assert_fused_close(fused, exact)


def test_missing_tensor_is_named() -> None:
    model = _attention_like()
    table = calibrate_table(model, _feeds(1)).copy()
    del table.tensors["res"]
    with pytest.raises(CalibrationError, match="'res'"):
        quantize(model, table, QuantConfig())


def test_table_of_another_model_is_rejected() -> None:
    other = _conv_model()
    other.graph.input[0].name = "image"
    other.graph.node[0].input[0] = "image"
    table = calibrate_table(other, [{"image": np.ones((1, 3, 8, 8), np.float32)}])
    with pytest.raises(CalibrationError, match="another model"):
        quantize(_attention_like(), table, QuantConfig())


def test_embedding_table_is_stored_int8_and_dequantized_after_lookup() -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((300, 16)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], name="lookup"),
             helper.make_node("MatMul", ["emb", "w"], ["y"])]
    graph = helper.make_graph(nodes, "emb", [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(table, "table"),
                               numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    ids = {"ids": rng.integers(0, 300, (2, 7))}
    q = quantize(model, calibrate_table(model, [ids]), QuantConfig())
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    assert inits["table_quantized"].dtype == np.int8 and "table" not in inits
    gather = next(n for n in q.graph.node if n.op_type == "Gather")
    consumer = next(n for n in q.graph.node if gather.output[0] in n.input)
    assert consumer.op_type == "DequantizeLinear"
    ref, out = run(model, ids)[0], run(q, ids)[0]
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


def test_nothing_to_quantize_is_an_error() -> None:
    from converter.quant.errors import QuantizationError

    model = _attention_like()
    table = calibrate_table(model, _feeds(1))
    with pytest.raises(QuantizationError, match="nothing to quantize"):
        quantize(model, table, QuantConfig(exclude_op_types=("MatMul", "Gemm")))
