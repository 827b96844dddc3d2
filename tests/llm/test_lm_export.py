"""Causal-LM export with a KV cache, and greedy generation with ONNX Runtime, against torch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from converter.errors import ExportError
from converter.llm.export import export_causal_lm
from converter.llm.kv_cache import cache_argument, returned_cache
from runtime import Engine, InputError
from runtime.generate import generate


def _torch_step(model, ids, mask, past=None):
    from transformers.cache_utils import DynamicCache

    cache = past if past is not None else DynamicCache()
    pos = torch.clamp(torch.as_tensor(mask).cumsum(-1) - 1, min=0)[:, -ids.shape[1]:]
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), position_ids=pos,
                    **{cache_argument(model): cache}, use_cache=True)
    return out.logits.numpy(), returned_cache(out)


def test_tiny_llama_io_names_and_dynamic_axes(tiny_llama_onnx: Path) -> None:
    with Engine.load(tiny_llama_onnx) as eng:
        inputs = {s.name: s.shape for s in eng.input_specs}
        outputs = {s.name: s.shape for s in eng.output_specs}
    assert inputs["input_ids"] == ("batch", "sequence")
    assert inputs["attention_mask"] == ("batch", "total_sequence")
    assert inputs["position_ids"] == ("batch", "sequence")
    for i in range(2):
        for kind in ("key", "value"):
            assert inputs[f"past_key_values.{i}.{kind}"] == ("batch", 2, "past_sequence", 16)
            assert f"present.{i}.{kind}" in outputs
    assert outputs["logits"] == ("batch", "sequence", 256)


def test_tiny_llama_prefill_and_decode_logits_match_torch(tiny_llama, tiny_llama_onnx: Path) -> None:
    """Prefill (empty past, left padding) then two decode steps fed from the presents."""
    rng = np.random.default_rng(5)
    ids = rng.integers(3, 256, (3, 9))
    mask = np.ones_like(ids)
    mask[2, :4] = 0
    ref_logits, cache = _torch_step(tiny_llama, ids, mask)
    feeds = {"input_ids": ids, "attention_mask": mask,
             "position_ids": np.clip(mask.cumsum(-1) - 1, 0, None)}
    feeds.update({f"past_key_values.{i}.{k}": np.zeros((3, 2, 0, 16), np.float32) for i in range(2) for k in ("key", "value")})
    with Engine.load(tiny_llama_onnx) as eng:
        out = eng.run(feeds)
        keep = mask.astype(bool)
        np.testing.assert_allclose(out["logits"][keep], ref_logits[keep], atol=1e-4, rtol=1e-3)
        for _ in range(2):
            nxt = rng.integers(3, 256, (3, 1))
            mask = np.concatenate([mask, np.ones((3, 1), np.int64)], axis=1)
            ref_logits, cache = _torch_step(tiny_llama, nxt, mask, cache)
            feeds = {"input_ids": nxt, "attention_mask": mask, "position_ids": mask.sum(-1, keepdims=True) - 1}
            feeds.update({f"past_key_values.{i}.{k}": out[f"present.{i}.{k}"] for i in range(2) for k in ("key", "value")})
            out = eng.run(feeds)
            np.testing.assert_allclose(out["logits"], ref_logits, atol=1e-4, rtol=1e-3)
            assert out["present.0.key"].shape == (3, 2, mask.shape[1], 16)


def test_generate_matches_torch_greedy_tiny(tiny_llama, tiny_llama_onnx: Path) -> None:
    ids = np.random.default_rng(1).integers(3, 256, (2, 6))
    mask = np.ones_like(ids)
    mask[1, :2] = 0  # left padding
    ref = tiny_llama.generate(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), max_new_tokens=15,
                              do_sample=False, eos_token_id=2, pad_token_id=0).numpy()
    with Engine.load(tiny_llama_onnx) as eng:
        got = generate(eng, ids, 15, eos_token_id=2, attention_mask=mask, pad_token_id=0)
    np.testing.assert_array_equal(got, ref)


def test_generate_stops_rows_at_eos(tiny_llama_onnx: Path) -> None:
    ids = np.random.default_rng(2).integers(3, 256, (1, 5))
    with Engine.load(tiny_llama_onnx) as eng:
        free = generate(eng, ids, 6)
        eos = int(free[0, 7])  # pretend the third generated token is eos
        stopped = generate(eng, ids, 6, eos_token_id=eos)
    first = 5 + int(np.argmax(free[0, 5:] == eos))
    np.testing.assert_array_equal(stopped[0, : first + 1], free[0, : first + 1])
    assert stopped.shape[1] == first + 1


def test_reference_lm_generate_matches_torch(reference_lm, reference_lm_onnx: Path) -> None:
    model, tok = reference_lm
    prompts = ["The old lighthouse keeper climbed the stairs", "Every evening, just before the sun",
                "The software update fixed the crash but"]
    with Engine.load(reference_lm_onnx) as eng:
        for prompt in prompts:  # stops at eos like transformers does
            ids = tok(prompt, return_tensors="np")["input_ids"]
            ref = model.generate(torch.as_tensor(ids), max_new_tokens=24, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id).numpy()
            got = generate(eng, ids, 24, eos_token_id=tok.eos_token_id)
            np.testing.assert_array_equal(got, ref)


def test_reference_lm_logits_match_torch(reference_lm, reference_lm_onnx: Path) -> None:
    model, tok = reference_lm
    ids = tok(["A storm came in from the west.", "Pepper the cat"], padding=True, return_tensors="np")
    mask = np.ones_like(ids["input_ids"])
    ref, _ = _torch_step(model, ids["input_ids"], mask)
    feeds = {"input_ids": ids["input_ids"], "attention_mask": mask, "position_ids": mask.cumsum(-1) - 1}
    feeds.update({f"past_key_values.{i}.{k}": np.zeros((2, 4, 0, 64), np.float32) for i in range(4) for k in ("key", "value")})
    with Engine.load(reference_lm_onnx) as eng:
        got = eng.run(feeds, ["logits"])["logits"]
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-3)


def test_export_rejects_non_causal_model(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64))
    with pytest.raises(ExportError, match="causal LM"):
        export_causal_lm(bert, tmp_path / "bert.onnx")
    assert not list(tmp_path.iterdir())


def test_export_missing_folder(tmp_path: Path) -> None:
    from converter.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="not found"):
        export_causal_lm(tmp_path / "nope", tmp_path / "x.onnx")


def test_generate_rejects_model_without_kv_cache(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence"])])
    save(helper.make_model(graph), tmp_path / "no_cache.onnx")
    with Engine.load(tmp_path / "no_cache.onnx") as eng, pytest.raises(InputError, match="past_key_values"):
        generate(eng, np.zeros((1, 3), np.int64), 2)


def test_generate_rejects_bad_ids(tiny_llama_onnx: Path) -> None:
    with Engine.load(tiny_llama_onnx) as eng:
        with pytest.raises(InputError, match="integer"):
            generate(eng, np.zeros((1, 3), np.float32), 2)
        with pytest.raises(InputError, match="max_new_tokens"):
            generate(eng, np.zeros((1, 3), np.int64), -1)


def test_gpt2_export_generate_and_weight_only(tmp_path: Path) -> None:
    """GPT-2 shape: learned positions, Conv1D layers exported as Gemm (quantized too)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from converter.llm.config import WeightOnlyConfig
    from converter.llm.weight_only import quantize_weights

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                       bos_token_id=0, eos_token_id=0)).eval()
    path = export_causal_lm(model, tmp_path / "gpt2.onnx").path
    ids = np.random.default_rng(0).integers(1, 128, (1, 5))
    ref = model.generate(torch.as_tensor(ids), max_new_tokens=10, min_new_tokens=10, do_sample=False,
                         pad_token_id=0).numpy()
    with Engine.load(path) as eng:
        np.testing.assert_array_equal(generate(eng, ids, 10), ref)
    result = quantize_weights(path, tmp_path / "q.onnx", WeightOnlyConfig(bits=8, group_size=32))
    assert len(result.quantized) == 2 * 4 + 1  # c_attn, c_proj, c_fc, mlp c_proj per layer, and lm_head
    from converter.llm.feeds import prefill_feeds

    with Engine.load(path) as eng:
        feeds = prefill_feeds(eng.input_specs, ids)
        want = eng.run(feeds, ["logits"])["logits"]
    with Engine.load(result.path) as eng:
        got = eng.run(feeds, ["logits"])["logits"]
    assert 0 < np.abs(got - want).max() < 0.02 * np.abs(want).max()


class _CacheLM(torch.nn.Module):
    """Wraps a causal LM behind one spelling of the KV-cache argument and output field."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config

    def _run(self, input_ids, attention_mask, position_ids, cache, field: str):
        from transformers.modeling_outputs import ModelOutput

        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         **{cache_argument(self.inner): cache}, use_cache=True, return_dict=True)
        return ModelOutput(logits=out.logits, **{field: returned_cache(out)})


class _PastKeyValuesLM(_CacheLM):
    """transformers < 5.24: ``forward(past_key_values=...)``, ``output.past_key_values``."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True,
                return_dict=True):
        return self._run(input_ids, attention_mask, position_ids, past_key_values, "past_key_values")


class _RenamedCacheLM(_CacheLM):
    """transformers >= 5.24: ``forward(cache=...)``, ``output.cache``."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=True,
                return_dict=True):
        return self._run(input_ids, attention_mask, position_ids, cache, "cache")


@pytest.mark.parametrize(("wrapper", "name"), [(_PastKeyValuesLM, "past_key_values"), (_RenamedCacheLM, "cache")])
def test_export_takes_either_cache_argument_name(tiny_llama, tmp_path: Path, wrapper, name: str) -> None:
    """transformers 5.24 renamed ``past_key_values`` to ``cache``: both spellings export and match torch."""
    model = wrapper(tiny_llama)
    assert cache_argument(model) == name
    result = export_causal_lm(model, tmp_path / "lm.onnx")
    ids = np.random.default_rng(3).integers(3, 256, (2, 5))
    mask = np.ones_like(ids)
    ref, _ = _torch_step(model, ids, mask)
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": mask.cumsum(-1) - 1}
    feeds.update({f"past_key_values.{i}.{k}": np.zeros((2, 2, 0, 16), np.float32) for i in range(2) for k in ("key", "value")})
    with Engine.load(result.path) as eng:
        np.testing.assert_allclose(eng.run(feeds, ["logits"])["logits"], ref, atol=1e-4, rtol=1e-3)


class _DriftingHead(torch.nn.Module):
    """An LM head whose exported graph scales the logits by 1.01 (eager torch does not): a broken export."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(x)
        return out * 1.01 if torch.compiler.is_exporting() else out


def test_broken_lm_export_fails_its_check_and_keeps_nothing(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    model.lm_head = _DriftingHead(model.lm_head)
    with pytest.raises(ExportError, match=r"'logits' differs from torch .* of its largest magnitude"):
        export_causal_lm(model, tmp_path / "drift.onnx")
    assert list(tmp_path.iterdir()) == []


def test_tolerance_is_relative_to_the_output_scale() -> None:
    """Float32 rounding of a deep model's large outputs passes; a 1% drift of the same outputs fails."""
    from converter.export import check_output, output_scale

    ref = np.random.default_rng(0).normal(0, 10, (4, 1000))
    ref[0, 0] = 40.0  # logits of a trained LM reach tens
    assert output_scale(ref) == 40.0
    rounding = ref + np.random.default_rng(1).normal(0, 1e-4, ref.shape)  # ~4e-4 max, like SmolLM2's export
    assert check_output("logits", ref, rounding, atol=1e-4, rtol=1e-3) == pytest.approx(np.abs(rounding - ref).max())
    with pytest.raises(ExportError, match="'logits' differs"):
        check_output("logits", ref, ref * 1.01, atol=1e-4, rtol=1e-3)
    small = np.full((3,), 0.5)  # below 1 the tolerance stays absolute
    with pytest.raises(ExportError):
        check_output("x", small, small + 2e-4, atol=1e-4, rtol=0.0)
