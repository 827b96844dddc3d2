"""Weight-only quantization: GPTQ vs RTN error, MatMulNBits / block-wise DQ layouts, clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.llm.config import WeightOnlyConfig, WeightQuantError
from converter.llm.dynamic import dynamic_activations, session_options
from converter.llm.quantizers import layer_error, quantize_gptq, quantize_rtn
from converter.llm.weight_only import quantize_weights
from runtime import Engine


@pytest.fixture(scope="module")
def correlated_layer() -> dict[str, np.ndarray]:
    """A linear layer W [N, K] fed correlated, unevenly scaled inputs X [tokens, K] (as in real LMs)."""
    rng = np.random.default_rng(0)
    k, n, t = 256, 96, 2048
    mix = np.eye(k) + 2 * rng.standard_normal((k, k)) / np.sqrt(k)
    x = ((rng.standard_normal((t, k)) * rng.lognormal(0, 1, k)) @ mix).astype(np.float32)
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    calib = x[: t // 2].astype(np.float64)
    return {"w": w, "x_test": x[t // 2:], "h": 2 * calib.T @ calib / len(calib)}


@pytest.mark.parametrize("bits,group,symmetric,act_order", [
    (4, 128, True, False), (4, 64, False, False), (4, 32, True, True), (8, 128, True, False), (8, 64, False, True),
])
def test_gptq_lowers_layer_output_error_vs_rtn(correlated_layer, bits, group, symmetric, act_order) -> None:
    """Measured on held-out inputs of the same distribution as the calibration ones."""
    cfg = WeightOnlyConfig(bits=bits, group_size=group, symmetric=symmetric, act_order=act_order, algo="gptq")
    w, x = correlated_layer["w"], correlated_layer["x_test"]
    rtn = layer_error(w, quantize_rtn(w, cfg).dequantize(), x)
    gptq = layer_error(w, quantize_gptq(w, correlated_layer["h"], cfg).dequantize(), x)
    assert gptq < 0.5 * rtn, (gptq, rtn)


def test_quantized_levels_and_groups_are_valid(correlated_layer) -> None:
    w = correlated_layer["w"]
    for sym in (True, False):
        cfg = WeightOnlyConfig(bits=4, group_size=32, symmetric=sym)
        qw = quantize_gptq(w, correlated_layer["h"], cfg)
        assert qw.q.max() <= 15 and qw.scales.shape == (96, 8) and qw.zero_points.shape == (96, 8)
        if sym:
            assert (qw.zero_points == 8).all()
        # every group's dequantized values are exactly its levels times its own scale
        deq = qw.dequantize().reshape(96, 8, 32)
        levels = qw.q.reshape(96, 8, 32).astype(np.float32) - qw.zero_points[..., None]
        np.testing.assert_allclose(deq, levels * qw.scales[..., None], rtol=1e-6)
    for sym in (True, False):  # RTN: within one step of each group (the top level may clip by < 1 step)
        rtn = quantize_rtn(w, WeightOnlyConfig(bits=4, group_size=32, symmetric=sym))
        err = np.abs(rtn.dequantize() - w).reshape(96, 8, 32).max(-1)
        assert (err <= np.abs(rtn.scales) * (1 + 1e-5)).all()
        assert np.median(err / np.abs(rtn.scales)) < 0.6


def _matmul_model(path: Path, w: np.ndarray) -> Path:
    k, n = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "W"], ["Y"], name="proj")], "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["batch", "sequence", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", "sequence", n])],
        [numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    return path


@pytest.fixture(scope="module")
def matmul_case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((256, 80)).astype(np.float32)  # ONNX layout [K, N]
    path = _matmul_model(tmp_path_factory.mktemp("mm") / "mm.onnx", w)
    return {"path": path, "w": w, "a": rng.standard_normal((2, 7, 256)).astype(np.float32)}


@pytest.mark.parametrize("bits,symmetric,fmt", [
    (4, True, "matmulnbits"), (4, False, "matmulnbits"), (8, True, "matmulnbits"), (8, False, "matmulnbits"),
    (4, True, "qdq"), (8, False, "qdq"),
])
def test_ort_output_matches_dequantized_reference(matmul_case, tmp_path: Path, bits, symmetric, fmt) -> None:
    cfg = WeightOnlyConfig(bits=bits, group_size=32, symmetric=symmetric, format=fmt)
    out = quantize_weights(matmul_case["path"], tmp_path / "q.onnx", cfg).path
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert ops == (["MatMulNBits"] if fmt == "matmulnbits" else ["DequantizeLinear", "MatMul"])
    a = matmul_case["a"]
    ref = a @ quantize_rtn(matmul_case["w"].T, cfg).dequantize().T
    # accuracy level 0: float compute (ORT would otherwise fuse DQ->MatMul with int8 activations)
    with Engine.load(out, session_options=session_options(0)) as eng:
        got = eng.run({"A": a})["Y"]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    assert np.abs(got - a @ matmul_case["w"]).max() > 1e-3  # really quantized


@pytest.mark.parametrize("symmetric", [True, False])
def test_packing_matches_onnxruntime_quantizer(matmul_case, symmetric: bool) -> None:
    """Our int4 RTN packs to exactly the bytes, scales and zero points of ONNX Runtime's own quantizer."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    from converter.llm.matmulnbits import pack_matmulnbits

    w, g = matmul_case["w"], 32
    k, n = w.shape
    packed = np.zeros((n, k // g, g // 2), np.uint8)
    scales = np.zeros((n, k // g), np.float32)
    zp = np.zeros((n, (k // g + 1) // 2), np.uint8)
    quantize_matmul_4bits(packed, w, scales, zp, g, n, k, symmetric)
    ours, our_scales, our_zp = pack_matmulnbits(quantize_rtn(w.T, WeightOnlyConfig(bits=4, group_size=g, symmetric=symmetric)))
    np.testing.assert_array_equal(ours, packed)
    np.testing.assert_allclose(our_scales.reshape(n, -1), scales, rtol=1e-6)
    if symmetric:
        assert our_zp is None  # MatMulNBits then uses 8
    else:
        np.testing.assert_array_equal(our_zp.reshape(n, -1), zp)


def test_dynamic_activations_sets_int8_compute(matmul_case, tmp_path: Path) -> None:
    cfg = WeightOnlyConfig(bits=4, group_size=32)
    q = quantize_weights(matmul_case["path"], tmp_path / "q.onnx", cfg).path
    dyn = dynamic_activations(q, tmp_path / "dyn.onnx")
    node = onnx.load(dyn).graph.node[0]
    assert {a.name: a.i for a in node.attribute}["accuracy_level"] == 4
    a = matmul_case["a"]
    ref = a @ quantize_rtn(matmul_case["w"].T, cfg).dequantize().T
    with Engine.load(dyn) as eng:
        got = eng.run({"A": a})["Y"]
    err = np.abs(got - ref).max()
    assert 0 < err < 0.02 * np.abs(ref).max()  # int8 activations: close, but not float-exact


def test_dynamic_activations_needs_matmulnbits(matmul_case, tmp_path: Path) -> None:
    with pytest.raises(WeightQuantError, match="no MatMulNBits"):
        dynamic_activations(matmul_case["path"], tmp_path / "x.onnx")


def _numpy_rtn(w: np.ndarray, bits: int, group: int, symmetric: bool) -> np.ndarray:
    """Reference dequantized RTN of W [N, K], the last group shorter when ``group`` does not divide K."""
    out = np.empty_like(w, dtype=np.float64)
    maxq, mid = 2**bits - 1, 2 ** (bits - 1)
    for j in range(0, w.shape[1], group):
        blk = w[:, j:j + group].astype(np.float64)
        if symmetric:  # signed scale: the largest-magnitude weight maps to level 0 exactly
            scale = blk[np.arange(len(blk)), np.abs(blk).argmax(1)] / -mid
            zero = np.full_like(scale, mid)
        else:
            lo, hi = np.minimum(blk.min(1), 0), np.maximum(blk.max(1), 0)
            scale = (hi - lo) / maxq
            zero = np.clip(np.round(-lo / scale), 0, maxq)
        scale = scale.astype(np.float32).astype(np.float64)
        q = np.clip(np.round(blk / scale[:, None]) + zero[:, None], 0, maxq)
        out[:, j:j + group] = (q - zero[:, None]) * scale[:, None]
    return out


@pytest.fixture(scope="module")
def odd_k_case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """K = 200: group 64 leaves a last group of 8 (SmolLM2's K = 576 with group 128 leaves 64)."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((200, 48)).astype(np.float32)  # ONNX layout [K, N]
    mix = np.eye(200) + 2 * rng.standard_normal((200, 200)) / np.sqrt(200)
    x = (rng.standard_normal((2048, 200)) * rng.lognormal(0, 1, 200)) @ mix  # correlated, as in real LMs
    calib = x[:1024]
    return {"path": _matmul_model(tmp_path_factory.mktemp("odd") / "odd.onnx", w), "w": w, "x_test": x[1024:],
            "a": rng.standard_normal((2, 5, 200)).astype(np.float32), "h": 2 * calib.T @ calib / len(calib)}


@pytest.mark.parametrize("bits,symmetric", [(4, True), (4, False), (8, True), (8, False)])
def test_rtn_pads_a_last_partial_group_like_numpy_reference(odd_k_case, bits: int, symmetric: bool) -> None:
    w = odd_k_case["w"].T
    qw = quantize_rtn(w, WeightOnlyConfig(bits=bits, group_size=64, symmetric=symmetric))
    assert qw.q.shape == (48, 200) and qw.scales.shape == (48, 4) and qw.blocks == 4
    np.testing.assert_allclose(qw.dequantize(), _numpy_rtn(w, bits, 64, symmetric), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("algo,bits,symmetric,fmt", [
    ("rtn", 4, True, "matmulnbits"), ("rtn", 4, False, "matmulnbits"), ("rtn", 8, False, "matmulnbits"),
    ("rtn", 4, True, "qdq"), ("rtn", 4, False, "qdq"), ("gptq", 4, True, "matmulnbits"), ("gptq", 4, False, "qdq"),
])
def test_k_not_divisible_by_group_runs_in_onnxruntime(odd_k_case, tmp_path: Path, algo, bits, symmetric, fmt) -> None:
    """Both output formats hold a padded last group; ONNX Runtime computes A @ dequantized W."""
    cfg = WeightOnlyConfig(bits=bits, group_size=64, symmetric=symmetric, format=fmt, algo=algo)
    w, a = odd_k_case["w"], odd_k_case["a"]
    if algo == "gptq":
        qw = quantize_gptq(w.T, odd_k_case["h"], cfg)
        from converter.llm.weight_only import load_model, quantize_model

        model = load_model(odd_k_case["path"])
        quantize_model(model, cfg, hessians={"A": odd_k_case["h"]})
        import onnx_ir as ir

        out = tmp_path / "q.onnx"
        ir.save(model, out)
    else:
        qw = quantize_rtn(w.T, cfg)
        out = quantize_weights(odd_k_case["path"], tmp_path / "q.onnx", cfg).path
    assert qw.q.shape == (48, 200) and qw.scales.shape == (48, 4)
    with Engine.load(out, session_options=session_options(0)) as eng:
        got = eng.run({"A": a})["Y"]
    np.testing.assert_allclose(got, a @ qw.dequantize().T, atol=1e-4, rtol=1e-4)
    assert np.abs(got - a @ w).max() > 1e-3  # really quantized


@pytest.mark.parametrize("symmetric", [True, False])
def test_padded_packing_matches_onnxruntime_quantizer(odd_k_case, symmetric: bool) -> None:
    """For K = 200, group 64, our bytes equal ONNX Runtime's own MatMulNBits quantizer's ([N, ceil(K/G), G/2])."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    from converter.llm.matmulnbits import pack_matmulnbits

    w, g = odd_k_case["w"], 64
    k, n = w.shape
    blocks = -(-k // g)
    packed = np.zeros((n, blocks, g // 2), np.uint8)
    scales = np.zeros((n, blocks), np.float32)
    zp = np.zeros((n, (blocks + 1) // 2), np.uint8)
    quantize_matmul_4bits(packed, w, scales, zp, g, n, k, symmetric)
    ours, our_scales, our_zp = pack_matmulnbits(quantize_rtn(w.T, WeightOnlyConfig(bits=4, group_size=g, symmetric=symmetric)))
    np.testing.assert_allclose(our_scales.reshape(n, -1), scales, rtol=1e-6)
    np.testing.assert_array_equal(ours[:, :-1], packed[:, :-1])
    # the padded tail of the last block is never read (K = 200): compare the real 8 values only
    np.testing.assert_array_equal(ours[:, -1, :4], packed[:, -1, :4])
    if not symmetric:
        np.testing.assert_array_equal(our_zp.reshape(n, -1), zp)


def test_gptq_with_padded_group_beats_rtn(odd_k_case) -> None:
    """Held-out inputs of the calibration distribution: the padded last group keeps GPTQ's gain."""
    w, h, x = odd_k_case["w"].T, odd_k_case["h"], odd_k_case["x_test"]
    cfg = WeightOnlyConfig(bits=4, group_size=64, algo="gptq")
    gptq = layer_error(w, quantize_gptq(w, h, cfg).dequantize(), x)
    rtn = layer_error(w, quantize_rtn(w, cfg).dequantize(), x)
    assert gptq < 0.5 * rtn, (gptq, rtn)


def test_model_without_matmul_weights(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["Y"])], "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [2, 32]),
         helper.make_tensor_value_info("B", TensorProto.FLOAT, [32, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 4])])
    path = tmp_path / "dyn_b.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(WeightQuantError, match="no MatMul with a constant"):
        quantize_weights(path, tmp_path / "q.onnx", WeightOnlyConfig())


def test_gptq_needs_calibration(matmul_case, tmp_path: Path) -> None:
    with pytest.raises(WeightQuantError, match="calibration"):
        quantize_weights(matmul_case["path"], tmp_path / "q.onnx", WeightOnlyConfig(algo="gptq"))


@pytest.mark.parametrize("kwargs,message", [
    ({"bits": 3}, "bits must be 4 or 8"), ({"group_size": 48}, "power of two"), ({"group_size": 8}, "power of two"),
    ({"algo": "awq"}, "unknown algorithm"), ({"damp": 1.5}, "damp"), ({"format": "qdq", "accuracy_level": 4}, "matmulnbits"),
])
def test_bad_config(kwargs, message) -> None:
    with pytest.raises(WeightQuantError, match=message):
        WeightOnlyConfig(**kwargs)


def test_missing_model_file(tmp_path: Path) -> None:
    from converter.errors import ModelFileError

    with pytest.raises(ModelFileError, match="not found"):
        quantize_weights(tmp_path / "none.onnx", tmp_path / "q.onnx", WeightOnlyConfig())
