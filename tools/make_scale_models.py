"""Write Llama-shaped Hugging Face folders with random weights, for measuring cost (time, memory) at scale.

    python tools/make_scale_models.py --out /tmp/scale 360m 1.1b

``360m`` is shaped like SmolLM2-360M (hidden 960, 32 layers, 15 heads, 5 KV heads, MLP 2560, vocab 49152,
tied embeddings); ``1.1b`` like TinyLlama-1.1B (hidden 2048, 22 layers, 32 heads, 4 KV heads, MLP 5632,
untied) but with SmolLM2's vocabulary (49152) so the tokenizer copied from the built-in SmolLM2 folder matches.
Weights are random (normal, std 0.02): these models measure cost, not quality. Saved as float32 safetensors.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

SMOLLM2_VOCAB = 49152
SHAPES = {
    "360m": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                 intermediate_size=2560, tie_word_embeddings=True, rope_theta=100000.0),
    "1.1b": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                 intermediate_size=5632, tie_word_embeddings=False, rope_theta=10000.0),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")

log = logging.getLogger("make_scale_models")


def make_model(name: str, out: Path, seed: int = 0) -> Path:
    """Write the random-weight Llama folder ``out/<name>`` (config, safetensors, SmolLM2 tokenizer)."""
    import torch
    import transformers

    from converter.models import resolve_model

    folder = out / name
    if (folder / "config.json").is_file():
        log.info("%s exists", folder)
        return folder
    config = transformers.LlamaConfig(vocab_size=SMOLLM2_VOCAB, max_position_embeddings=2048, rms_norm_eps=1e-5,
                                      bos_token_id=1, eos_token_id=2, **SHAPES[name])
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    model.tie_weights()
    model.model.rotary_emb.__init__(config)  # its inv_freq buffer was left empty by to_empty
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    src = resolve_model("smollm2")
    for f in TOKENIZER_FILES:
        if (src / f).is_file():
            shutil.copy(src / f, staging / f)
    staging.rename(folder)
    params = sum(p.numel() for p in model.parameters())
    log.info("wrote %s: %.1fM parameters (random weights)", folder, params / 1e6)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", choices=sorted(SHAPES))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.models:
        print(make_model(name, args.out))


if __name__ == "__main__":
    main()
