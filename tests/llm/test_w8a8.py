"""SmoothQuant static W8A8 of a causal LM: integer MatMuls in the optimized graph, perplexity near FP32,
an alpha search that beats alpha=0 where activations have outlier channels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from converter.llm.data import heldout_text, training_text
from converter.llm.w8a8 import W8A8Config, quantize_w8a8
from tests.int8_numerics import assert_fused_close, exact_session_options

REFERENCE_MATMULS = 28  # 4 layers x (q, k, v, o, gate, up, down); lm_head stays float by default
CONFIG = W8A8Config(num_samples=16, seq_len=64, batch=4, fallback_error=None)  # all static INT8


@pytest.fixture(scope="module")
def search_cache() -> dict:
    return {}


@pytest.fixture(scope="module")
def w8a8_lm(reference_lm_onnx: Path, tmp_path_factory: pytest.TempPathFactory, search_cache: dict):
    out = tmp_path_factory.mktemp("w8a8") / "lm.w8a8.onnx"
    return quantize_w8a8(reference_lm_onnx, out, CONFIG, text=training_text(), cache=search_cache)


def _optimized_ops(path: Path, tmp_path: Path) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime runs (default session: all optimizations, fused kernels)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    counts: dict[str, int] = {}
    for node in onnx.load(so.optimized_model_filepath).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_every_linear_layer_runs_on_integer_kernels(w8a8_lm, tmp_path: Path) -> None:
    assert (w8a8_lm.quantized_matmuls, w8a8_lm.float_matmuls) == (REFERENCE_MATMULS, 1 + 8)  # lm_head, Q.K^T, P.V
    graph = onnx.load(str(w8a8_lm.path)).graph
    produced = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in produced and produced[node.input[1]].op_type == "DequantizeLinear":
            act = produced[node.input[0]]
            assert act.op_type == "DequantizeLinear", node.name  # both operands INT8
            assert produced[act.input[0]].op_type == "QuantizeLinear"
    # SwiGLU's product (the down projection's input) folds its 1/s into the up projection: no inserted Mul there
    inserted = [n for n in graph.node if n.name.endswith("_SmoothQuant_Mul")]
    assert all(produced[n.input[0]].op_type != "Mul" for n in inserted), [n.name for n in inserted]
    ops = _optimized_ops(w8a8_lm.path, tmp_path)
    assert ops.get("MatMulIntegerToFloat", 0) == REFERENCE_MATMULS, ops
    assert ops.get("MatMul", 0) + ops.get("FusedMatMul", 0) == 9, ops  # lm_head + attention stay float


def test_layers_above_the_error_threshold_fall_back(w8a8_lm, reference_lm_onnx: Path, tmp_path: Path,
                                                     search_cache: dict) -> None:
    """Layers whose simulated static INT8 error exceeds ``fallback_error`` get dynamic INT8 activations
    (MatMulNBits, per token and block); the others stay static; the searched errors are reported."""
    errors = sorted(w8a8_lm.errors.values())
    assert len(errors) == 16 and errors[-1] > 0  # 4 layers x (qkv, o, gate/up, down inputs)
    threshold = errors[-4] * 0.999  # the 4 worst activations fall back
    cfg = W8A8Config(**{**CONFIG.__dict__, "fallback_error": threshold, "fallback": "dynamic"})
    res = quantize_w8a8(reference_lm_onnx, tmp_path / "fallback.onnx", cfg, text=training_text(), cache=search_cache)
    assert res.dynamic_matmuls >= 4 and res.quantized_matmuls + res.dynamic_matmuls == REFERENCE_MATMULS
    ops = _optimized_ops(res.path, tmp_path)
    assert ops.get("MatMulNBits", 0) == res.dynamic_matmuls, ops
    assert ops.get("MatMulIntegerToFloat", 0) == res.quantized_matmuls, ops


def test_perplexity_close_to_fp32(w8a8_lm, reference_lm_onnx: Path) -> None:
    from converter.llm.perplexity import perplexity

    text = heldout_text()  # never the calibration text
    fp32 = perplexity(reference_lm_onnx, text, context=128).perplexity
    int8 = perplexity(w8a8_lm.path, text, context=128).perplexity
    assert int8 <= fp32 * 1.05, f"W8A8 perplexity {int8:.3f} vs FP32 {fp32:.3f}"  # measured +1-2%


def test_fused_matches_exact_integer_math(w8a8_lm) -> None:
    from converter.llm.feeds import prefill_feeds
    from runtime import Engine

    ids = np.arange(2 * 32).reshape(2, 32) % 200 + 5
    with Engine.load(w8a8_lm.path) as eng:
        feeds = prefill_feeds(eng.input_specs, ids)
        fused = eng.run(feeds, ["logits"])["logits"]
    with Engine.load(w8a8_lm.path, session_options=exact_session_options()) as eng:
        exact = eng.run(feeds, ["logits"])["logits"]
    assert_fused_close(fused, exact)


def _outlier_model(tmp_path: Path) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """x -> Mul(gamma) -> MatMul(W): gamma blows 4 of 64 channels up 60x, as LLM activations do."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    gamma = np.ones(64, np.float32)
    gamma[[3, 17, 40, 51]] = 60.0
    w = rng.normal(0, 0.05, (64, 48)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "gamma"], ["h"]), helper.make_node("MatMul", ["h", "w"], ["y"])], "outliers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 48])],
        [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(w, "w")])
    path = tmp_path / "outliers.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path, [{"x": rng.normal(0, 1, (128, 64)).astype(np.float32)} for _ in range(4)]


def test_alpha_search_beats_alpha_zero_on_outlier_channels(tmp_path: Path) -> None:
    from converter.quant.config import QuantConfig
    from converter.quantize import quantize

    path, data = _outlier_model(tmp_path)
    held = {"x": np.random.default_rng(1).normal(0, 1, (256, 64)).astype(np.float32)}
    from runtime import Engine

    with Engine.load(path) as eng:
        ref = eng.run(held)["y"]

    def error(smoothquant, search="layer") -> tuple[float, dict]:
        cache: dict = {}
        proto = quantize(str(path), None, QuantConfig(smoothquant=smoothquant, smoothquant_search=search,
                                                      op_types=("MatMul",)), calib_data=data, smoothquant_cache=cache)
        with Engine.load(proto, session_options=exact_session_options()) as eng:
            out = eng.run(held)["y"]
        return float(np.square(out - ref).sum() / np.square(ref).sum()), cache.get("chosen", {})

    err_zero, _ = error(0.0)
    err_off, _ = error(None)
    for search in ("layer", "model"):
        err_auto, chosen = error("auto", search)
        assert chosen["h"] is not None and chosen["h"] > 0.0, chosen
        assert err_auto < 0.5 * min(err_zero, err_off), (search, err_auto, err_zero, err_off)


def test_cli_quantize_w8a8(reference_lm_onnx: Path, tmp_path: Path) -> None:
    from converter.cli import QdqGroup
    from converter.cli.llm import commands

    cli = QdqGroup("qdq")
    for cmd in commands:
        cli.add_command(cmd)
    out = tmp_path / "w8a8.onnx"
    res = CliRunner().invoke(cli, ["quantize-w8a8", str(reference_lm_onnx), "-o", str(out), "--data", "builtin:corpus",
                                   "--num-samples", "4", "--max-length", "64", "--alpha-search", "model",
                                   "--lm-head", "int8", "--fallback-error", "1"])
    assert res.exit_code == 0, res.output
    assert f"{REFERENCE_MATMULS + 1} MatMuls with static INT8 activations and weights" in res.output and out.is_file()
    res = CliRunner().invoke(cli, ["quantize-w8a8", str(reference_lm_onnx), "-o", str(tmp_path / "x.onnx"),
                                   "--data", "builtin:corpus", "--smoothquant", "1.5"])
    assert res.exit_code == 2 and "alpha must be in [0, 1]" in res.output
    res = CliRunner().invoke(cli, ["quantize-w8a8", str(reference_lm_onnx), "-o", str(tmp_path / "x.onnx"),
                                   "--data", "missing.txt"])
    assert res.exit_code == 1 and "text file not found" in res.output
