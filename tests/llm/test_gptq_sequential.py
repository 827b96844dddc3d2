"""Sequential GPTQ and HERA on the trained reference LM (torch, block by block), and the Hessian streaming."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from converter.llm.config import WeightOnlyConfig
from converter.llm.data import heldout_text, training_text
from converter.llm.feeds import encode_text, windows
from converter.llm.hessian import HessianAccumulator
from converter.llm.quantizers import hera_refine, layer_error, quantize_layer, quantize_rtn
from converter.llm.sequential import decoder_blocks, fingerprint, quantize_sequential


def _batches(tok, text: str, n: int, length: int = 64, batch: int = 4) -> list[dict[str, np.ndarray]]:
    stream = encode_text(tok, text)[: n * length]
    return [{"input_ids": ids} for ids in windows(stream, length, batch)]


def _layer_inputs(model, layer: torch.nn.Module, batches) -> np.ndarray:
    """Every token's input to ``layer`` [tokens, K] when ``model`` runs ``batches``."""
    got: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inp, _o: got.append(inp[0].reshape(-1, inp[0].shape[-1])))
    with torch.no_grad():
        for b in batches:
            model(input_ids=torch.as_tensor(b["input_ids"]), use_cache=False)
    handle.remove()
    return torch.cat(got).double().numpy()


@pytest.fixture(scope="module")
def sequential_gptq(reference_lm):
    """The reference LM quantized by sequential GPTQ (INT4 g128 sym) on 16 windows of training text."""
    model, tok = reference_lm
    float_model = copy.deepcopy(model)
    quant_model = copy.deepcopy(model)
    cfg = WeightOnlyConfig(bits=4, group_size=128, algo="gptq")
    levels = quantize_sequential(quant_model, iter(_batches(tok, training_text(), 16)), cfg, progress=False)
    return float_model, quant_model, levels, cfg


def test_hessian_accumulation_equals_batch_computation() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((3, 17, 24)).astype(np.float32) * (1 + np.arange(24)) for _ in range(5)]
    masks = [rng.random((3, 17)) > 0.3 for _ in range(5)]
    acc, masked = HessianAccumulator(24), HessianAccumulator(24)
    for x, m in zip(batches, masks):
        acc.add(torch.as_tensor(x) if len(masks) % 2 else x)  # torch and numpy inputs alike
        masked.add(x, m)
    all_x = np.concatenate([x.reshape(-1, 24) for x in batches]).astype(np.float64)
    np.testing.assert_allclose(acc.hessian(), 2 * all_x.T @ all_x / len(all_x), rtol=1e-4, atol=1e-4)
    kept = np.concatenate([x[m] for x, m in zip(batches, masks)]).astype(np.float64)
    np.testing.assert_allclose(masked.hessian(), 2 * kept.T @ kept / len(kept), rtol=1e-4, atol=1e-4)
    assert acc.count == 5 * 3 * 17 and masked.count == len(kept)
    assert acc.xtx.shape == (24, 24)  # the state is one K x K sum, whatever the number of batches


def test_sequential_gptq_beats_rtn_on_real_layers(sequential_gptq, reference_lm) -> None:
    """Held-out output error of real layers (inputs from the float model on held-out text): GPTQ < RTN."""
    float_model, _, levels, cfg = sequential_gptq
    held = _batches(reference_lm[1], heldout_text(), 8)
    blocks = decoder_blocks(float_model)
    for layer in (blocks[0].self_attn.q_proj, blocks[2].mlp.down_proj, blocks[3].self_attn.o_proj):
        w = layer.weight.detach().double().numpy()
        x = _layer_inputs(float_model, layer, held)
        gptq = layer_error(w, levels[fingerprint(w)].dequantize(), x)
        rtn = layer_error(w, quantize_rtn(w, cfg).dequantize(), x)
        assert gptq < 0.8 * rtn, (gptq, rtn)


def test_sequential_writes_dequantized_weights_back(sequential_gptq) -> None:
    """Every block's linear layers were quantized (4 x 7 + lm_head) and hold their dequantized weights."""
    float_model, quant_model, levels, _ = sequential_gptq
    assert len(levels) == 4 * 7 + 1
    for (name, fm), qm in zip(float_model.named_modules(), quant_model.modules()):
        if isinstance(fm, torch.nn.Linear):
            qw = levels[fingerprint(fm.weight.detach().numpy())]
            np.testing.assert_allclose(qm.weight.detach().numpy(), qw.dequantize(), rtol=0, atol=1e-7, err_msg=name)


def test_sequential_hessians_see_quantized_inputs(reference_lm) -> None:
    """Block 1's layers differ between sequential and float-input Hessians; block 0 (same inputs) does not."""
    model, tok = reference_lm
    batches = _batches(tok, training_text(), 8)
    got = {}
    for sequential in (True, False):
        cfg = WeightOnlyConfig(bits=4, group_size=128, algo="gptq", sequential=sequential)
        got[sequential] = quantize_sequential(copy.deepcopy(model), iter(batches), cfg, progress=False)
    blocks = decoder_blocks(model)
    first = fingerprint(blocks[0].self_attn.q_proj.weight.detach().numpy())
    later = fingerprint(blocks[1].self_attn.q_proj.weight.detach().numpy())
    np.testing.assert_array_equal(got[True][first].q, got[False][first].q)
    assert (got[True][later].q != got[False][later].q).mean() > 0.01


def test_hera_lowers_layer_error_after_rtn_and_gptq(reference_lm) -> None:
    """HERA's replacements only ever lower e H eᵀ: the calibration output error drops after RTN (by > 5%) and GPTQ."""
    model, tok = reference_lm
    layer = decoder_blocks(model)[1].mlp.down_proj
    x = _layer_inputs(model, layer, _batches(tok, training_text(), 16))
    h = torch.as_tensor(2 * x.T @ x / len(x))
    w = layer.weight.detach().float()
    for algo in ("rtn", "gptq"):
        cfg = WeightOnlyConfig(bits=4, group_size=128, algo=algo)
        base = quantize_layer(w, h, cfg)
        refined = hera_refine(w, h, base)
        assert refined.q.max() <= 15 and (refined.q != base.q).any()  # levels stay in range; some were replaced
        before = layer_error(w.double().numpy(), base.dequantize(), x)
        after = layer_error(w.double().numpy(), refined.dequantize(), x)
        assert after < (0.95 if algo == "rtn" else 1.0) * before, (algo, after, before)  # measured 0.96x after GPTQ


def test_sequential_pads_groups_that_do_not_divide_k(reference_lm_onnx: Path, tmp_path: Path) -> None:
    """GPTQ + HERA from the ONNX file (torch source found from its metadata) with group 512 > K=256
    (q/k/v/o/gate/up) and 768 = 512 + 256 (down): padded groups, valid MatMulNBits, an LM close to FP32."""
    import onnx

    from converter.llm.weight_only import lm_calibration, quantize_weights
    from runtime import Engine

    cfg = WeightOnlyConfig(bits=4, group_size=512, algo="gptq", hera=True)
    calib = lm_calibration(reference_lm_onnx, training_text(), max_windows=8, seq_len=64)
    out = quantize_weights(reference_lm_onnx, tmp_path / "q.onnx", cfg, calib, progress=False)
    nodes = [n for n in onnx.load(out.path).graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 29
    ids = np.arange(3, 35, dtype=np.int64)[None]
    from converter.llm.feeds import prefill_feeds

    with Engine.load(reference_lm_onnx) as ref, Engine.load(out.path) as q:
        a = ref.run(prefill_feeds(ref.input_specs, ids), ["logits"])["logits"]
        b = q.run(prefill_feeds(q.input_specs, ids), ["logits"])["logits"]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
