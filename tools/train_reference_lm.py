"""Train the reference causal LM shipped in tools/reference_lm/ (a few million parameters, Llama-shaped).

    nice python tools/train_reference_lm.py            # ~5-10 min on one CPU core; deterministic

Steps: a byte-level BPE tokenizer (``tokenizers``) is trained on the training text
(converter.llm.data.training_text: 90% of corpus.txt + sentences.txt); a LlamaForCausalLM from a
LlamaConfig is trained with AdamW on random 128-token windows of that text for a fixed number of
steps; the checkpoint with the lowest loss on a validation slice of the training text is kept,
stored in float16 (config.json, model.safetensors, tokenizer.json, tokenizer_config.json) and its
held-out perplexity (converter.llm.data.heldout_text) is written to the folder's README.md.
The folder is replaced atomically (written beside it, then renamed into place).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from converter.llm.data import heldout_text, training_text  # noqa: E402

log = logging.getLogger("train_reference_lm")
OUT = Path(__file__).resolve().parent / "reference_lm"
EOS = "<|endoftext|>"


def train_tokenizer(text: str, vocab_size: int):  # -> PreTrainedTokenizerFast
    """Byte-level BPE on ``text``; eos/bos/pad/unk all map to ``<|endoftext|>`` (GPT-2 style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.split("\n"), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS)


def encode(tokenizer, text: str) -> np.ndarray:
    """Paragraphs/lines joined with eos between them, as one token stream."""
    ids: list[int] = []
    for line in text.split("\n"):
        if line.strip():
            ids += tokenizer(line.strip())["input_ids"] + [tokenizer.eos_token_id]
    return np.asarray(ids, dtype=np.int64)


def add_residual_dropout(model, p: float) -> None:
    """Dropout on each attention and MLP output while training (GPT-2 style); no effect in eval mode."""
    def hook(module, inputs, output):
        if isinstance(output, tuple):
            return (torch.nn.functional.dropout(output[0], p, module.training), *output[1:])
        return torch.nn.functional.dropout(output, p, module.training)

    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(hook)
        layer.mlp.register_forward_hook(hook)


def make_model(vocab_size: int, args: argparse.Namespace):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=args.context * 2, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, attention_dropout=args.dropout,
    )
    model = LlamaForCausalLM(config)
    add_residual_dropout(model, args.dropout)
    return model


@torch.no_grad()
def mean_loss(model, stream: np.ndarray, context: int) -> float:
    """Mean next-token NLL over non-overlapping ``context``-token windows of ``stream``."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(stream) - 1, context):
        chunk = torch.as_tensor(stream[start:start + context + 1])
        logits = model(input_ids=chunk[None, :-1]).logits[0]
        total += float(torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum"))
        count += len(chunk) - 1
    model.train()
    return total / max(count, 1)


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    text = training_text()
    tokenizer = train_tokenizer(text, args.vocab)
    stream = encode(tokenizer, text)
    n_val = int(len(stream) * 0.05)
    train_ids, val_ids = stream[:-n_val], stream[-n_val:]
    held = encode(tokenizer, heldout_text())
    model = make_model(len(tokenizer), args)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tokens: train %d, val %d, held-out %d; vocab %d; params %.2fM",
             len(train_ids), len(val_ids), len(held), len(tokenizer), n_params / 1e6)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s, args.steps) / args.steps)) * 0.9 + 0.1)
    best, best_state, t0 = float("inf"), None, time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        starts = rng.integers(0, len(train_ids) - args.context - 1, args.batch)
        batch = torch.as_tensor(np.stack([train_ids[s:s + args.context] for s in starts]))
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            val = mean_loss(model, val_ids, args.context)
            if val < best:
                best, best_state = val, {k: v.detach().clone() for k, v in model.state_dict().items()}
            log.info("step %d  train %.3f  val %.3f (ppl %.1f)  %.0fs", step, loss.item(), val, math.exp(val),
                     time.perf_counter() - t0)
    model.load_state_dict(best_state)
    model.config.attention_dropout = 0.0  # training-only regularization
    model = model.to(torch.float16).float()  # score exactly the weights that are saved
    held_ppl = math.exp(mean_loss(model, held, args.context))
    log.info("best val loss %.3f; held-out perplexity %.2f", best, held_ppl)
    save(model.to(torch.float16), tokenizer, args, held_ppl, len(held), n_params, time.perf_counter() - t0)


def save(model, tokenizer, args: argparse.Namespace, held_ppl: float, held_tokens: int, n_params: int,
         seconds: float) -> None:
    """Write the folder beside OUT, then swap it into place."""
    out = Path(args.output)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for extra in ("generation_config.json", "special_tokens_map.json"):
            (tmp / extra).unlink(missing_ok=True)
        (tmp / "README.md").write_text(
            "# Reference causal LM\n\n"
            f"A {n_params / 1e6:.2f}M-parameter LlamaForCausalLM (hidden {args.hidden}, {args.layers} layers, "
            f"{args.heads} heads, intermediate {args.intermediate}, vocab {len(tokenizer)} byte-level BPE), "
            "trained from scratch on the text in `calibration_data/samples/` (90% of corpus.txt + sentences.txt).\n\n"
            f"Reproduce: `nice python tools/train_reference_lm.py` (seed {args.seed}, {args.steps} steps, "
            f"batch {args.batch}x{args.context}, {args.threads} thread(s); took {seconds / 60:.1f} min here).\n\n"
            f"Held-out perplexity (last 10% of corpus.txt + sentences_heldout.txt, {held_tokens} tokens, "
            f"{args.context}-token windows): **{held_ppl:.2f}**. Weights are stored in float16.\n",
            encoding="utf-8",
        )
        for f in tmp.iterdir():
            f.chmod(0o644)
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        log.info("saved %s (%.1f MB)", out, sum(f.stat().st_size for f in out.iterdir()) / 1e6)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default=str(OUT))
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    train(args)


if __name__ == "__main__":
    main()
