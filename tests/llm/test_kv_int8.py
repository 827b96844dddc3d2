"""INT8 KV cache: int8 past/present with per-token scales, exact pass-through of the cached integers,
decoding from it like decoding from the float cache, SmolLM2's greedy tokens unchanged."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from converter.cli import main
from converter.llm.config import WeightQuantError
from converter.llm.kv_int8 import quantize_kv_cache
from runtime import Engine
from runtime.generate import generate


@pytest.fixture(scope="module")
def tiny_kv8(tiny_llama_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quantize_kv_cache(tiny_llama_onnx, tmp_path_factory.mktemp("kv8") / "tiny.kv8.onnx").path


def _decode_feeds(past: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """A decode step after ``past`` cached tokens: int8 feeds and the float feeds they dequantize to."""
    ids = rng.integers(3, 256, (2, 1))
    base = {"input_ids": ids, "attention_mask": np.ones((2, past + 1), np.int64),
            "position_ids": np.full((2, 1), past, np.int64)}
    q_feeds, f_feeds = dict(base), dict(base)
    for layer in range(2):
        for kind in ("key", "value"):
            q = rng.integers(-127, 128, (2, 2, past, 16)).astype(np.int8)
            scale = rng.uniform(0.005, 0.02, (2, 2, past, 1)).astype(np.float32)
            q_feeds[f"past_key_values.{layer}.{kind}"] = q
            q_feeds[f"past_key_values.{layer}.{kind}_scale"] = scale
            f_feeds[f"past_key_values.{layer}.{kind}"] = q.astype(np.float32) * scale
    return q_feeds, f_feeds


def test_cache_is_int8_and_decodes_like_the_float_cache(tiny_llama_onnx: Path, tiny_kv8: Path) -> None:
    q_feeds, f_feeds = _decode_feeds(past=5, rng=np.random.default_rng(0))
    with Engine.load(tiny_kv8) as q_eng, Engine.load(tiny_llama_onnx) as f_eng:
        specs = {s.name: s for s in q_eng.input_specs}
        assert np.dtype(specs["past_key_values.0.key"].dtype) == np.int8
        assert specs["past_key_values.0.key_scale"].shape[-1] == 1
        got, ref = q_eng.run(q_feeds), f_eng.run(f_feeds)
    # the model dequantizes the int8 past where the float past was used: same logits
    np.testing.assert_allclose(got["logits"], ref["logits"], rtol=1e-4, atol=1e-4 * np.abs(ref["logits"]).max())
    for name, present in got.items():
        if not name.startswith("present.") or name.endswith("_scale"):
            continue
        scale, past = got[name + "_scale"], q_feeds["past_key_values." + name[len("present."):]]
        assert present.dtype == np.int8 and present.shape[2] == 6
        np.testing.assert_array_equal(present[:, :, :5], past)  # cached integers pass through unchanged
        new = ref[name][:, :, 5:]  # the new token, float
        np.testing.assert_allclose(scale[:, :, 5:], np.abs(new).max(-1, keepdims=True) / 127, rtol=1e-6)
        assert np.abs(present[:, :, 5:] * scale[:, :, 5:] - new).max() <= 0.5001 * scale[:, :, 5:].max()


def test_generate_feeds_the_int8_cache_back(tiny_llama_onnx: Path, tiny_kv8: Path) -> None:
    """generate() runs the int8-cache model (scales fed back with the caches) and stays close to float."""
    ids = np.array([[1, 17, 42, 99, 7, 130, 5, 66]])
    with Engine.load(tiny_llama_onnx) as f_eng, Engine.load(tiny_kv8) as q_eng:
        ref, got = generate(f_eng, ids, 12), generate(q_eng, ids, 12)
    assert got.shape == ref.shape
    assert (got[0, 8:] == ref[0, 8:]).mean() >= 0.75, (got, ref)


def test_smollm2_int8_cache_generates_the_float_tokens(smollm2, smollm2_export, tmp_path: Path) -> None:
    _, tok = smollm2
    kv8 = quantize_kv_cache(smollm2_export.path, tmp_path / "smollm2.kv8.onnx").path
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok(tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False), return_tensors="np")
    with Engine.load(smollm2_export.path) as f_eng, Engine.load(kv8) as q_eng:
        ref = generate(f_eng, ids["input_ids"], 10, eos_token_id=tok.eos_token_id)
        got = generate(q_eng, ids["input_ids"], 10, eos_token_id=tok.eos_token_id)
    np.testing.assert_array_equal(got, ref)
    assert "Paris" in tok.decode(got[0, ids["input_ids"].shape[1]:])


def test_refusals_name_the_problem(tiny_kv8: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightQuantError, match="already int8"):
        quantize_kv_cache(tiny_kv8, tmp_path / "again.onnx")
    res = CliRunner().invoke(main, ["quantize-kv", str(tiny_kv8), "-o", str(tmp_path / "again.onnx")])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "already int8" in res.output
    assert not (tmp_path / "again.onnx").exists()


def test_cli_refuses_a_model_without_a_cache(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.onnx"
    res = CliRunner().invoke(main, ["quantize-kv", str(digits_cnn_onnx), "-o", str(out)])
    assert res.exit_code == 1 and "no past_key_values" in res.output and not out.exists()
