"""Weight-only quantization of real causal LMs: the trained reference LM and a tiny random Llama."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from converter.llm.config import WeightOnlyConfig
from converter.llm.data import heldout_text, training_text
from converter.llm.feeds import encode_text, prefill_feeds
from converter.llm.perplexity import perplexity, stream_perplexity, window_logits
from converter.llm.weight_only import lm_calibration, quantize_weights
from runtime import Engine


@pytest.fixture(scope="module")
def heldout_ppl(reference_lm_onnx: Path) -> float:
    return perplexity(reference_lm_onnx, heldout_text()).perplexity


def test_onnx_perplexity_matches_torch(reference_lm, reference_lm_onnx: Path) -> None:
    model, tok = reference_lm
    stream = encode_text(tok, heldout_text())[:301]
    with torch.no_grad():
        nll = [torch.nn.functional.cross_entropy(model(input_ids=torch.as_tensor(stream[s:s + 101])[None, :-1]).logits[0],
                                                 torch.as_tensor(stream[s + 1:s + 101]), reduction="sum").item()
               for s in range(0, 300, 100)]
    with Engine.load(reference_lm_onnx) as eng:
        got = stream_perplexity(eng, stream, context=100)
    assert got.tokens == 300
    assert got.perplexity == pytest.approx(math.exp(sum(nll) / 300), rel=1e-4)


def test_int8_weight_only_perplexity_within_1pct(reference_lm_onnx: Path, heldout_ppl: float, tmp_path: Path) -> None:
    out = quantize_weights(reference_lm_onnx, tmp_path / "int8.onnx", WeightOnlyConfig(bits=8, group_size=128))
    assert len(out.quantized) == 4 * 7 + 1  # q k v o gate up down per layer, and lm_head
    ppl = perplexity(out.path, heldout_text()).perplexity
    assert abs(ppl / heldout_ppl - 1) < 0.01
    assert out.path.stat().st_size < 0.45 * reference_lm_onnx.stat().st_size


def _heldout_kl(reference: Path, quantized: Path, stream: np.ndarray) -> float:
    """Mean per-token KL(reference || quantized) of the next-token distributions."""
    def logprobs(path: Path) -> np.ndarray:
        with Engine.load(path) as eng:
            x = np.concatenate([lg.reshape(-1, lg.shape[-1]) for lg, _ in window_logits(eng, stream)]).astype(np.float64)
        x -= x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    p, q = logprobs(reference), logprobs(quantized)
    return float((np.exp(p) * (p - q)).sum(-1).mean())


def test_int4_gptq_beats_rtn_on_reference_lm(reference_lm, reference_lm_onnx: Path, tmp_path: Path) -> None:
    """Second-order INT4 g128 stays closer to the float LM than RTN on held-out text (KL, less noisy than ppl)."""
    rtn = quantize_weights(reference_lm_onnx, tmp_path / "rtn.onnx", WeightOnlyConfig(bits=4, group_size=128)).path
    calib = lm_calibration(reference_lm_onnx, training_text(), max_windows=48)
    gptq = quantize_weights(reference_lm_onnx, tmp_path / "gptq.onnx",
                            WeightOnlyConfig(bits=4, group_size=128, algo="gptq"), calibration=calib).path
    assert sum(n.op_type == "MatMulNBits" for n in onnx.load(gptq).graph.node) == 29
    stream = encode_text(reference_lm[1], heldout_text())[:2049]
    kl_rtn, kl_gptq = _heldout_kl(reference_lm_onnx, rtn, stream), _heldout_kl(reference_lm_onnx, gptq, stream)
    assert 0 < kl_gptq < 0.6 * kl_rtn, (kl_gptq, kl_rtn)


def test_tiny_llama_gptq_asymmetric_act_order(tiny_llama_onnx: Path, tmp_path: Path) -> None:
    """GPTQ end to end on random-token calibration; the quantized LM stays close to the float one."""
    rng = np.random.default_rng(0)
    with Engine.load(tiny_llama_onnx) as eng:
        specs = eng.input_specs
        calib = [prefill_feeds(specs, rng.integers(3, 256, (4, 32))) for _ in range(4)]
        probe = prefill_feeds(specs, rng.integers(3, 256, (2, 16)))
        ref = eng.run(probe, ["logits"])["logits"]
    cfg = WeightOnlyConfig(bits=4, group_size=32, algo="gptq", symmetric=False, act_order=True)
    out = quantize_weights(tiny_llama_onnx, tmp_path / "q.onnx", cfg, calibration=calib)
    assert len(out.quantized) == 2 * 7 + 1
    with Engine.load(out.path) as eng:
        got = eng.run(probe, ["logits"])["logits"]
    rel = np.abs(got - ref).mean() / np.abs(ref).mean()
    assert 0 < rel < 0.2


def test_calibration_feeds_bound_to_the_loaded_model_equal_the_files(reference_lm_onnx: Path) -> None:
    """quantize_weights hands the model it loaded to the feeds (no second parse of the file): same feeds, reusable."""
    import onnx_ir as ir

    from converter.models import source_model_dir

    loaded = ir.load(reference_lm_onnx)
    assert source_model_dir(loaded) == source_model_dir(reference_lm_onnx) is not None
    from_file = list(lm_calibration(reference_lm_onnx, training_text(), max_windows=6, seq_len=32, batch=4))
    bound = lm_calibration(reference_lm_onnx, training_text(), max_windows=6, seq_len=32, batch=4)
    bound.bind(loaded)
    assert bound.reads(reference_lm_onnx) and not bound.reads(loaded)
    for feeds in (list(bound), list(bound)):  # iterable more than once
        assert [f.keys() for f in feeds] == [f.keys() for f in from_file] and len(feeds) == 2
        for got, want in zip(feeds, from_file):
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])
