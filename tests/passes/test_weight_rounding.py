"""Output-aware (GPTQ) weight rounding for Conv/Gemm: the layer statistics match what the Conv computes,
the rounding lowers the layer's output error, and a quantized CNN gets closer to FP32."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
import pytest
from int8_numerics import assert_fused_close, run_exact
from onnx import helper
from qdq_graphs import calibrate_table, make_model, run

from converter.quant.config import QuantConfig
from converter.quant.errors import QuantizationError
from converter.quant.weight_rounding import HessianSum, collect_hessians, gptq_round, layer_inputs
from converter.quantize import quantize


def _conv(w: np.ndarray, **attrs) -> object:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)]
    return make_model(nodes, {"x": ["batch", w.shape[1] * attrs.get("group", 1), 9, 9]}, ["y"], {"w": w})


@pytest.mark.parametrize("attrs,shape", [
    ({"pads": [1, 1, 1, 1]}, (4, 3, 3, 3)),
    ({"pads": [0, 1, 2, 1], "strides": [2, 2]}, (4, 3, 3, 3)),
    ({"pads": [2, 2, 2, 2], "group": 5}, (5, 1, 5, 5)),
    ({}, (6, 5, 1, 1)),
])
def test_layer_statistics_are_those_the_conv_sees(attrs, shape) -> None:
    """E[y²] per output channel, from ONNX Runtime's Conv, equals w H wᵀ from the collected statistics."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape).astype(np.float32)
    model = _conv(w, **attrs)
    batches = [{"x": rng.standard_normal((2, shape[1] * attrs.get("group", 1), 9, 9)).astype(np.float32) + 0.5}
               for _ in range(3)]
    m = ir.from_proto(model)
    layers = layer_inputs(m, list(m.graph))
    hessians = collect_hessians(m, layers, batches)
    y = np.concatenate([run(model, b)[0] for b in batches])
    h = hessians["conv"]
    w2 = w.reshape(shape[0], -1).astype(np.float64)
    want = (y.astype(np.float64) ** 2).mean(axis=(0, 2, 3))
    got = np.einsum("ck,ckl,cl->c", w2, h, w2) if h.ndim == 3 else np.einsum("ck,kl,cl->c", w2, h, w2)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_gptq_rounding_lowers_the_output_error() -> None:
    """Correlated inputs: GPTQ's output error E[((W - W_q) x)²] is well below round-to-nearest's, on
    the same grid (same scales, |q| <= qmax), for 8- and 7-bit weights."""
    rng = np.random.default_rng(1)
    k, n = 48, 16
    mix = rng.standard_normal((k, k)) * 0.3 + np.eye(k)
    x = rng.standard_normal((4096, k)) @ mix + 0.3
    h = x.T @ x / len(x)
    w = rng.standard_normal((n, k))
    for qmax in (127, 63):
        scale = np.abs(w).max(1) / qmax
        nearest = np.clip(np.rint(w / scale[:, None]), -qmax, qmax)
        q = gptq_round(w, scale, qmax, h)
        assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= qmax

        def err(qw: np.ndarray) -> float:
            d = w - qw * scale[:, None]
            return float(np.einsum("nk,kl,nl->", d, h, d))

        assert err(q) < 0.6 * err(nearest), (qmax, err(q), err(nearest))


def test_gptq_per_row_statistics_match_a_loop_over_rows() -> None:
    """Depthwise layers: one H per output channel gives the same rounding as each row alone."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 9))
    xs = [rng.standard_normal((500, 9)) @ (np.eye(9) + 0.4 * rng.standard_normal((9, 9))) for _ in range(3)]
    hs = np.stack([x.T @ x / len(x) for x in xs])
    scale = np.abs(w).max(1) / 127
    together = gptq_round(w, scale, 127, hs)
    alone = np.concatenate([gptq_round(w[i:i + 1], scale[i:i + 1], 127, hs[i]) for i in range(3)])
    np.testing.assert_array_equal(together, alone)


def test_statistics_refuse_grouped_convs() -> None:
    from converter.quant.weight_rounding import ConvGeometry

    g = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), group=2)
    with pytest.raises(QuantizationError, match="grouped"):
        HessianSum(g, (4, 2, 3, 3)).add(np.zeros((1, 4, 5, 5), np.float32))


def _small_cnn() -> object:
    """Conv(3->16, 3x3) -> Relu -> depthwise 3x3 -> Relu -> Conv 1x1 (16->8) -> Flatten -> Gemm: weights
    with a spread of magnitudes, inputs with a mean and correlated channels."""
    rng = np.random.default_rng(3)
    c = 16
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("Relu", ["c1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=c, name="dw"),
        helper.make_node("Relu", ["c2"], ["a2"]),
        helper.make_node("Conv", ["a2", "w3", "b3"], ["c3"], name="pw"),
        helper.make_node("Flatten", ["c3"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1, name="fc"),
    ]
    inits = {"w1": rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * rng.uniform(0.05, 1, (c, 1, 1, 1)).astype(np.float32),
             "b1": rng.standard_normal(c).astype(np.float32) * 0.1,
             "w2": rng.standard_normal((c, 1, 3, 3)).astype(np.float32) * 0.5,
             "b2": rng.standard_normal(c).astype(np.float32) * 0.1,
             "w3": rng.standard_normal((8, c, 1, 1)).astype(np.float32) * 0.3,
             "b3": rng.standard_normal(8).astype(np.float32) * 0.1,
             "wf": rng.standard_normal((10, 8 * 6 * 6)).astype(np.float32) * 0.1,
             "bf": np.zeros(10, np.float32)}
    return make_model(nodes, {"x": ["batch", 3, 6, 6]}, ["y"], inits)


def _images(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.standard_normal((8, 1, 6, 6))
        out.append({"x": (0.8 * base + 0.4 * rng.standard_normal((8, 3, 6, 6)) + 0.5).astype(np.float32)})
    return out


def test_gptq_rounding_brings_a_cnn_closer_to_fp32(tmp_path) -> None:
    """7-bit weights (the avx2 profile's grid, where rounding matters most): GPTQ rounding lowers the
    error against FP32 on held-out data; the model loads and the fused kernels agree with exact math.
    (The 288-input classifier has too few calibration rows and rounds to nearest.)"""
    model = _small_cnn()
    calib = _images(0, 16)
    table = calibrate_table(model, calib)
    cfg = QuantConfig(cpu="avx2")
    nearest = quantize(model, table, dataclasses.replace(cfg, weight_rounding="nearest"), calib_data=calib)
    gptq = quantize(model, table, cfg, calib_data=calib)
    feeds = {"x": np.concatenate([f["x"] for f in _images(9, 8)])}
    ref = run(model, feeds)[0]
    e_near = float(((run_exact(nearest, feeds)["y"] - ref) ** 2).mean())
    e_gptq = float(((run_exact(gptq, feeds)["y"] - ref) ** 2).mean())
    assert e_gptq < 0.9 * e_near, (e_gptq, e_near)  # measured 0.0098 vs 0.0121
    assert_fused_close(run(gptq, feeds)[0], run_exact(gptq, feeds)["y"])


def test_weight_rounding_option_is_checked() -> None:
    with pytest.raises(QuantizationError, match="weight_rounding"):
        QuantConfig(weight_rounding="adaround")
