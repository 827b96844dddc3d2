"""SmoothQuant keeps the float function, folds 1/s where it can, and helps INT8 accuracy on outliers."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper
from qdq_graphs import calibrate_table, make_model, run

from converter.calib.table import CalibrationError, CalibrationTable
from converter.pipeline import preprocess, smooth
from converter.smoothquant import smoothing_scales
from converter.quant.config import QuantConfig
from converter.quant.errors import QuantizationError
from converter.quantize import quantize

C = 32
CFG = QuantConfig(smoothquant=0.5)


def _outlier_gamma() -> np.ndarray:
    g = np.ones(C, np.float32)
    g[[3, 17]] = 40.0  # LayerNorm outlier channels, as in transformer activations
    return g


def _ln_two_matmuls(residual: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["h"], axis=-1),
        helper.make_node("MatMul", ["h", "w1"], ["y1"]),
        helper.make_node("MatMul", ["h", "w2"], ["y2"]),
    ]
    outputs = ["y1", "y2"]
    if residual:
        nodes.append(helper.make_node("Add", ["y1", "h"], ["r"]))
        outputs = ["r", "y2"]
    inits = {"g": _outlier_gamma(), "b": rng.standard_normal(C).astype(np.float32) * 0.1,
             "w1": rng.standard_normal((C, C)).astype(np.float32) * 0.2,
             "w2": rng.standard_normal((C, 8)).astype(np.float32) * 0.2}
    return make_model(nodes, {"x": ["batch", "seq", C]}, outputs, inits)


def _batches(shape: tuple[int, ...], n: int = 3, seed: int = 0, name: str = "x") -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def _smoothed(model: onnx.ModelProto, alpha: float = 0.5) -> tuple[onnx.ModelProto, CalibrationTable, CalibrationTable]:
    table = calibrate_table(model, _batches(_input_shape(model)))
    m, new_table = smooth(preprocess(ir.from_proto(model), CFG), table, CFG, alpha)
    return ir.to_proto(m), table, new_table


def _input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.dim_value else 3 for d in dims)


def _assert_same_function(a: onnx.ModelProto, b: onnx.ModelProto, seed: int = 7) -> None:
    feeds = _batches(_input_shape(a), 1, seed, a.graph.input[0].name)[0]
    for x, y in zip(run(a, feeds), run(b, feeds)):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-4 * float(np.abs(x).max()))


def _op_count(model: onnx.ModelProto, op: str, consuming: str | None = None) -> int:
    return sum(n.op_type == op and (consuming is None or consuming in n.input) for n in model.graph.node)


def test_scales_follow_the_formula() -> None:
    s = smoothing_scales(np.array([4.0, 1.0, 0.0]), np.array([1.0, 4.0, 2.0]), 0.5)
    np.testing.assert_allclose(s, [2.0, 0.5, 1.0])


def test_folds_into_layernorm_and_keeps_function() -> None:
    model = _ln_two_matmuls()
    out, table, new_table = _smoothed(model)
    _assert_same_function(model, out)
    assert _op_count(out, "Mul") == 0  # 1/s went into gamma and beta
    gamma = next(i for i in out.graph.initializer if i.name == "g")
    assert onnx.numpy_helper.to_array(gamma)[3] < 40.0
    before, after = table.channel_absmax["h"], new_table.channel_absmax["h"]
    assert after.max() / np.median(after) < before.max() / np.median(before)  # outliers flattened
    assert new_table.tensors["h"].hi < table.tensors["h"].hi


def test_inserts_mul_when_the_activation_is_also_used_elsewhere() -> None:
    model = _ln_two_matmuls(residual=True)
    out, _, new_table = _smoothed(model)
    _assert_same_function(model, out)
    assert _op_count(out, "Mul") == 1
    assert "h_smoothed" in new_table.tensors and "h_smoothed" in new_table.channel_absmax


def test_inserts_mul_after_gelu() -> None:
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Gelu", ["x"], ["a"]), helper.make_node("MatMul", ["a", "w"], ["y"])]
    model = make_model(nodes, {"x": ["batch", C]}, ["y"], {"w": rng.standard_normal((C, 4)).astype(np.float32)})
    out, _, _ = _smoothed(model)
    _assert_same_function(model, out)
    assert _op_count(out, "Mul") == 1


def test_folds_into_previous_matmul_and_bias() -> None:
    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((C, C)).astype(np.float32)
    w1[:, 5] *= 30
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"]), helper.make_node("Add", ["m", "b"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["y"])]
    inits = {"w1": w1, "b": rng.standard_normal(C).astype(np.float32),
             "w2": rng.standard_normal((C, 6)).astype(np.float32)}
    model = make_model(nodes, {"x": ["batch", C]}, ["y"], inits)
    out, _, _ = _smoothed(model)
    _assert_same_function(model, out)
    assert _op_count(out, "Mul", consuming="h") == 0  # 1/s went into w1 and b (x, a graph input, gets a Mul)


def test_folds_into_previous_conv_through_relu() -> None:
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["y"], pads=[1, 1, 1, 1])]
    inits = {"w1": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
             "b1": rng.standard_normal(8).astype(np.float32),
             "w2": rng.standard_normal((4, 8, 3, 3)).astype(np.float32),
             "b2": rng.standard_normal(4).astype(np.float32)}
    model = make_model(nodes, {"x": ["batch", 1, 8, 8]}, ["y"], inits)
    out, _, _ = _smoothed(model)
    _assert_same_function(model, out)
    assert _op_count(out, "Mul", consuming="r") == 0  # 1/s went through Relu into w1 and b1


def test_needs_channel_maxima() -> None:
    model = _ln_two_matmuls()
    table = calibrate_table(model, _batches((2, 3, C))).copy()
    table.channel_absmax.clear()
    with pytest.raises(CalibrationError, match="per-channel"):
        smooth(preprocess(ir.from_proto(model), CFG), table, CFG, 0.5)


def test_improves_int8_error_on_outlier_channels() -> None:
    model = _ln_two_matmuls()
    batches = _batches((4, 16, C), 4)
    table = calibrate_table(model, batches)
    feeds = _batches((4, 16, C), 1, seed=9)[0]
    ref = run(model, feeds)

    def err(cfg: QuantConfig) -> float:
        out = run(quantize(model, table, cfg), feeds)
        return sum(float(np.square(o - r).mean() / np.square(r).mean()) for o, r in zip(out, ref))

    plain, smoothed = err(QuantConfig()), err(QuantConfig(smoothquant=0.5))
    assert smoothed < 0.5 * plain, (plain, smoothed)
    auto = run(quantize(model, table, QuantConfig(smoothquant="auto"), calib_data=batches), feeds)
    auto_err = sum(float(np.square(o - r).mean() / np.square(r).mean()) for o, r in zip(auto, ref))
    assert auto_err < 0.5 * plain, (plain, auto_err)
    with pytest.raises(QuantizationError, match="calibration data"):
        quantize(model, table, QuantConfig(smoothquant="auto"))


def test_auto_cache_gives_the_same_model_and_captures_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mixed precision shares one cache across exclusion lists: each variant equals a fresh
    quantization byte for byte, and the float model is run for the captures only once."""
    import converter.smoothquant.capture as capture_module

    model = _ln_two_matmuls()
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}"
    batches = _batches((4, 16, C), 4)
    table = calibrate_table(model, batches)
    captured = []
    real = capture_module.capture
    monkeypatch.setattr(capture_module, "capture",
                        lambda m, names, feeds, **kw: captured.append(list(names)) or real(m, names, feeds, **kw))
    cache: dict = {}
    for excluded in ((), ("n2",)):
        cfg = QuantConfig(smoothquant="auto", exclude_nodes=excluded)
        cached = quantize(model, table, cfg, calib_data=batches, smoothquant_cache=cache)
        assert cached.SerializeToString() == quantize(model, table, cfg, calib_data=batches).SerializeToString()
    assert captured == [["h"], ["h"], ["h"]]  # cached first variant, then the two fresh runs
    assert set(cache["samples"]) == {"h"} and len(cache["searched"]) == 2  # group of two MatMuls, then of one
