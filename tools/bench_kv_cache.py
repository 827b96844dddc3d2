"""INT8 KV cache vs float: cache memory at a long context, accuracy of decoding from the cache, greedy tokens.

    nice python tools/bench_kv_cache.py --model smollm2 --context 2048
    nice python tools/bench_kv_cache.py --onnx lm.onnx --tokenizer tools/reference_lm --context 512

The float model is an exported KV-cache LM (``--onnx``, or exported from ``--model``); the int8-cache copy
is made with ``converter.llm.kv_int8.quantize_kv_cache``. Each model runs in its own child process so
peak RSS is its own. Measured, on the held-out text (never calibration text):

* cache MB: bytes of the present tensors a decoder keeps after prefilling ``--context`` tokens;
* peak RSS of that child (prefill at ``--context`` + ``--new-tokens`` decode steps);
* decode ms/token at that context;
* continuation perplexity: ``--context`` tokens prefilled into the cache, the next ``--continue`` tokens
  decoded in chunks of ``--chunk`` that attend to the cache (the cache's precision is what differs);
* greedy tokens on ``--prompts`` short held-out prompts: share of positions equal to float's, prompts
  whose ``--gen`` tokens all match.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from converter.llm.data import heldout_text  # noqa: E402
from converter.llm.feeds import encode_text, load_tokenizer, prefill_feeds, tokenizer_dir  # noqa: E402
from runtime import Engine  # noqa: E402
from runtime.generate import generate  # noqa: E402

log = logging.getLogger("bench_kv_cache")


def _past_name(present: str) -> str:
    return "past_key_values." + present[len("present."):]


def _step(eng: Engine, ids: np.ndarray, cache: dict[str, np.ndarray], start: int) -> tuple[np.ndarray, dict]:
    """Run ``ids`` [1, S] after ``start`` cached tokens; return logits and the new cache."""
    feeds = prefill_feeds(eng.input_specs, ids)
    feeds.update(cache)
    names = {s.name for s in eng.input_specs}
    if "attention_mask" in names:
        feeds["attention_mask"] = np.ones((1, start + ids.shape[1]), np.int64)
    if "position_ids" in names:
        feeds["position_ids"] = np.arange(start, start + ids.shape[1], dtype=np.int64)[None]
    presents = [s.name for s in eng.output_specs if s.name.startswith("present.")]
    out = eng.run(feeds, ["logits", *presents])
    return out["logits"], {_past_name(p): out[p] for p in presents}


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-np.take_along_axis(logp, targets[..., None], -1).sum())


def child(args: argparse.Namespace) -> dict:
    """Measure one model (in this process): cache bytes, decode speed, continuation NLL, greedy tokens."""
    tok = load_tokenizer(str(tokenizer_dir(args.onnx_path, args.tokenizer)))
    stream = encode_text(tok, heldout_text())
    need = args.context + args.continue_tokens + 1
    if len(stream) < need:
        raise SystemExit(f"held-out text has {len(stream)} tokens, need {need}")
    with Engine.load(args.onnx_path) as eng:
        logits, cache = _step(eng, stream[None, :args.context], {}, 0)
        cache_bytes = sum(v.nbytes for v in cache.values())
        nll, count, pos = 0.0, 0, args.context
        while pos < args.context + args.continue_tokens:
            chunk = stream[None, pos:pos + args.chunk]
            logits, cache = _step(eng, chunk, cache, pos)
            nll += _nll(logits, stream[None, pos + 1:pos + 1 + chunk.shape[1]])
            count += chunk.shape[1]
            pos += chunk.shape[1]
        _, cache = _step(eng, stream[None, :args.context], {}, 0)
        nxt, times = stream[None, args.context:args.context + 1], []
        for i in range(args.new_tokens):
            t0 = time.perf_counter()
            logits, cache = _step(eng, nxt, cache, args.context + i)
            times.append(time.perf_counter() - t0)
            nxt = logits[:, -1:].argmax(-1)
        lines = [ln.strip() for ln in heldout_text().splitlines() if len(ln.split()) >= 6][:args.prompts]
        greedy = [generate(eng, np.asarray(tok(" ".join(ln.split()[:8]))["input_ids"])[None], args.gen)[0].tolist()
                  for ln in lines]
    return {"cache_mb": cache_bytes / 2**20, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "decode_ms": 1e3 * float(np.median(times)), "ppl": math.exp(nll / count), "tokens": count,
            "greedy": greedy}


def _run_child(path: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), "--context", str(args.context), "--continue",
           str(args.continue_tokens), "--chunk", str(args.chunk), "--new-tokens", str(args.new_tokens),
           "--prompts", str(args.prompts), "--gen", str(args.gen)]
    if args.tokenizer:
        cmd += ["--tokenizer", args.tokenizer]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="builtin or HF folder to export (when --onnx is not given)")
    ap.add_argument("--onnx", type=Path, default=None, help="an exported float KV-cache LM")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--continue", dest="continue_tokens", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--gen", type=int, default=24)
    ap.add_argument("--child", dest="onnx_path", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.onnx_path is not None:
        print(json.dumps(child(args)))
        return
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from converter.llm.kv_int8 import quantize_kv_cache

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = args.onnx
        if fp32 is None:
            from converter.llm.export import export_causal_lm

            fp32 = Path(tmp) / "lm.onnx"
            export_causal_lm(args.model, fp32)
        kv8 = quantize_kv_cache(fp32, Path(tmp) / "lm.kv8.onnx").path
        rows = {"float cache": _run_child(fp32, args), "int8 cache": _run_child(kv8, args)}
    base = rows["float cache"]
    print(f"KV cache at {args.context} tokens of context ({args.model if args.onnx is None else args.onnx}); "
          f"continuation: {base['tokens']} held-out tokens decoded in chunks of {args.chunk} from the cache; "
          f"greedy: {args.prompts} held-out prompts x {args.gen} tokens")
    print("| cache | cache MB | ratio | peak RSS MB | decode ms/token | continuation ppl | greedy tokens = float | "
          "prompts all equal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        same = [sum(a == b for a, b in zip(x[-args.gen:], y[-args.gen:])) / args.gen
                for x, y in zip(r["greedy"], base["greedy"])]
        full = sum(x == y for x, y in zip(r["greedy"], base["greedy"]))
        print(f"| {name} | {r['cache_mb']:.1f} | {base['cache_mb'] / r['cache_mb']:.2f}x | {r['peak_rss_mb']:.0f} | "
              f"{r['decode_ms']:.1f} | {r['ppl']:.3f} | {100 * float(np.mean(same)):.1f}% | {full}/{len(same)} |")


if __name__ == "__main__":
    main()
