"""AWQ scales (converter.llm.awq) and their ONNX fold (converter.llm.input_scales): exact, and useful."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
import torch

from converter.llm import awq
from converter.llm.config import WeightOnlyConfig
from converter.llm.data import training_text
from converter.llm.feeds import encode_text, prefill_feeds, windows
from converter.llm.input_scales import apply_input_scales
from converter.llm.sequential import _capture, _collect, _input_groups, _run_block, decoder_blocks, quantize_sequential


def _random_scale(w: torch.Tensor, _h: torch.Tensor, _cfg: WeightOnlyConfig, tie=None) -> tuple[torch.Tensor, float]:
    """Stand-in for the search: a random s in [0.25, 4] (tied across shared kv heads like the real one)."""
    gen = torch.Generator().manual_seed(w.shape[0] * 7 + w.shape[1])
    k = w.shape[1]
    if tie is None:
        return 4.0 ** (2 * torch.rand(k, generator=gen, dtype=torch.float64) - 1), 0.5
    kv, rep, d = tie
    s = 4.0 ** (2 * torch.rand(kv, 1, d, generator=gen, dtype=torch.float64) - 1)
    return s.expand(kv, rep, d).reshape(-1), 0.5


def _batches(tok_or_vocab, n: int = 4, length: int = 32) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"input_ids": rng.integers(3, tok_or_vocab, (2, length)).astype(np.int64)} for _ in range(n)]


def test_awq_scales_fold_exactly_into_norms_up_and_grouped_v(tiny_llama, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folding s into the norms, up_proj (for down_proj) and v_proj (for o_proj, 4 query heads on 2 kv heads)
    leaves the float block's output unchanged, and every fold kind happened."""
    monkeypatch.setattr(awq, "search_scale", _random_scale)
    model = copy.deepcopy(tiny_llama)
    block = decoder_blocks(model)[0]
    inputs = _capture(model, block, _batches(256))
    names = {m: n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    modules = {n: m for m, n in names.items()}
    groups = _input_groups(block, inputs, names)
    assert [len(g) for g in groups] == [3, 1, 2, 1]  # q/k/v, o, gate/up, down
    before = [w.detach().clone() for w in (block.self_attn.v_proj.weight, block.mlp.up_proj.weight,
                                            block.input_layernorm.weight, block.post_attention_layernorm.weight)]
    with torch.no_grad():
        ref = _run_block(block, inputs, 1)
        hessians = [a.hessian_tensor() for a in _collect(block, inputs, modules, groups)]
        scaled, onnx_scales = awq.scale_block(block, modules, groups, hessians, WeightOnlyConfig(awq=True),
                                              lambda: _run_block(block, inputs, 0))
        out = _run_block(block, inputs, 1)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    after = (block.self_attn.v_proj.weight, block.mlp.up_proj.weight, block.input_layernorm.weight,
             block.post_attention_layernorm.weight)
    assert all(not torch.allclose(a, b) for a, b in zip(after, before))
    assert set(onnx_scales) == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"}
    # the returned Hessians are those of the scaled inputs: H / s sᵀ, recollected here for the down group
    h_down = _collect(block, inputs, modules, [groups[3]])[0].hessian_tensor()
    torch.testing.assert_close(scaled[3], h_down, rtol=1e-3, atol=1e-6)


def test_awq_onnx_graph_computes_what_the_scaled_torch_model_does(reference_lm, reference_lm_onnx: Path,
                                                                  tmp_path: Path, monkeypatch) -> None:
    """quantize_sequential with AWQ leaves the torch model holding scaled norms and dequantized weights; the ONNX
    model built from its levels (norm constants divided by s) must give the same logits."""
    from converter.llm.weight_only import quantize_model
    from converter.onnx_files import write_onnx
    from runtime import Engine

    monkeypatch.setattr(awq, "search_scale", _random_scale)
    model, tok = reference_lm
    quant = copy.deepcopy(model)
    cfg = WeightOnlyConfig(bits=4, group_size=128, algo="rtn", awq=True)
    stream = encode_text(tok, training_text())[: 8 * 64]
    levels = quantize_sequential(quant, [{"input_ids": ids} for ids in windows(stream, 64, 4)], cfg, progress=False)
    assert sum(qw.input_scale is not None for qw in levels.values()) == 4 * 5  # q/k/v/gate/up of 4 blocks
    ir_model = ir.load(reference_lm_onnx)
    gammas = {k: v.const_value.numpy().copy() for k, v in ir_model.graph.initializers.items() if "layernorm" in k}
    quantize_model(ir_model, cfg, quantized=levels)
    changed = [k for k, g in gammas.items() if not np.allclose(ir_model.graph.initializers[k].const_value.numpy(), g)]
    assert len(changed) == 8  # both norms of every block took 1/s; no Mul was added
    assert not any(n.name.endswith("_awq_scale") for n in ir_model.graph)
    path = write_onnx(ir_model, tmp_path / "awq.onnx")
    ids = np.asarray(encode_text(tok, "The quick brown fox jumps over the lazy dog.")[:24])[None]
    with Engine.load(path) as eng:
        got = eng.run(prefill_feeds(eng.input_specs, ids), ["logits"])["logits"]
    with torch.no_grad():
        want = quant(input_ids=torch.as_tensor(ids), use_cache=False).logits.numpy()
    np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(want).max())


def test_input_scales_become_a_mul_when_the_norm_output_has_another_reader() -> None:
    """x -> Mul(gamma) -> {MatMulNBits-like reader, Relu}: gamma cannot take 1/s, so Mul(x, 1/s) feeds the reader."""
    import onnxruntime as ort

    from converter.onnx_files import write_onnx

    rng = np.random.default_rng(0)
    k, n = 8, 4
    gamma, w, s = rng.random(k).astype(np.float32) + 0.5, rng.standard_normal((k, n)).astype(np.float32), \
        rng.random(k).astype(np.float32) + 0.5
    x = ir.Value(name="x", shape=ir.Shape([2, k]), type=ir.TensorType(ir.DataType.FLOAT))
    g = ir.Value(name="gamma", const_value=ir.tensor(gamma))
    wv = ir.Value(name="w", const_value=ir.tensor(w * s[:, None]))  # the reader's weight takes s: W·diag(s)
    mul = ir.node("Mul", [x, g])
    mm = ir.node("MatMul", [mul.outputs[0], wv])
    relu = ir.node("Relu", [mul.outputs[0]])
    mm.outputs[0].name, relu.outputs[0].name = "y", "r"
    for v in (mm.outputs[0], relu.outputs[0]):
        v.type, v.shape = ir.TensorType(ir.DataType.FLOAT), ir.Shape([2, n if v is mm.outputs[0] else k])
    graph = ir.Graph([x], [mm.outputs[0], relu.outputs[0]], nodes=[mul, mm, relu], initializers=[g, wv], opset_imports={"": 17})
    assert apply_input_scales(graph, [(mm, s)]) == (0, 1)
    path = write_onnx(ir.Model(graph, ir_version=9), Path(pytest.importorskip("tempfile").mkdtemp()) / "m.onnx")
    xv = rng.standard_normal((2, k)).astype(np.float32)
    y, r = ort.InferenceSession(str(path)).run(None, {"x": xv})
    np.testing.assert_allclose(y, (xv * gamma) @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r, np.maximum(xv * gamma, 0), rtol=1e-6)


def test_awq_search_lowers_the_output_error_on_outlier_channels() -> None:
    """With a few input channels 20x louder than the rest, the searched s (α > 0) lowers tr(E H Eᵀ) below s = 1."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2048, 256))
    x[:, :8] *= 20
    h = torch.as_tensor(2 * x.T @ x / len(x))
    w = torch.as_tensor(rng.standard_normal((64, 256)) * 0.05)
    cfg = WeightOnlyConfig(bits=4, group_size=128, awq=True)
    s, alpha = awq.search_scale(w, h, cfg)
    assert alpha > 0

    def err(scale: torch.Tensor) -> float:
        e = w - awq.rtn_dequantized(w * scale, 4, 128, True) / scale
        return float(((e @ h) * e).sum())

    assert err(s) < 0.8 * err(torch.ones(256, dtype=torch.float64))
