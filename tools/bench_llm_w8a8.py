"""SmoothQuant static W8A8 on a causal LM vs FP32 and dynamic INT8: perplexity, prefill latency, size.

    nice python tools/bench_llm_w8a8.py --model smollm2 --workdir build/w8a8
    nice python tools/bench_llm_w8a8.py --fp32 build/w8a8/fp32.onnx --variants layer model off lm_head

One run exports the model (or takes ``--fp32``), quantizes each W8A8 variant (``converter.llm.w8a8``,
calibrated on windows of converter.llm.data.training_text), plus the peers: qdq's dynamic-activation path
(INT8 g128 MatMulNBits weights, activations quantized per token and block at run time, accuracy_level 4)
and onnxruntime's ``quantize_dynamic`` (per-tensor dynamic uint8 activations, MatMulInteger). Measures
perplexity on the held-out text (converter.llm.data.heldout_text, never the calibration text) and the
prefill latency of a batch x tokens window with an empty KV cache on ONNX Runtime's default (fully
optimized, fused) CPU session, all models timed round-robin (median of N) so machine load hits them alike.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from converter.llm.config import WeightOnlyConfig  # noqa: E402
from converter.llm.data import heldout_text, training_text  # noqa: E402
from converter.llm.export import export_causal_lm  # noqa: E402
from converter.llm.feeds import encode_text, load_tokenizer, prefill_feeds, tokenizer_dir  # noqa: E402
from converter.llm.perplexity import stream_perplexity  # noqa: E402
from converter.llm.w8a8 import W8A8Config, quantize_w8a8  # noqa: E402
from converter.llm.weight_only import quantize_weights  # noqa: E402
from runtime import Engine  # noqa: E402

log = logging.getLogger("bench_llm_w8a8")
REFERENCE = Path(__file__).resolve().parent / "reference_lm"

VARIANTS = {
    "default": ("W8A8 SmoothQuant auto/layer (default)", W8A8Config()),
    "all-int8": ("W8A8 auto/layer, no fallback", W8A8Config(fallback_error=None)),
    "model": ("W8A8 SmoothQuant auto/model", W8A8Config(alpha_search="model")),
    "off": ("W8A8 no smoothing", W8A8Config(alpha=None)),
    "dynamic": ("W8A8 auto/layer, dynamic fallback", W8A8Config(fallback="dynamic")),
    "minmax": ("W8A8 auto/layer, minmax ranges", W8A8Config(method="minmax")),
    "lm_head": ("W8A8 auto/layer, lm_head int8", W8A8Config(lm_head=True)),
    "attention": ("W8A8 auto/layer, attention int8", W8A8Config(attention=True)),
}
SHARES_SEARCH = {"default", "all-int8", "model", "dynamic", "lm_head", "attention"}  # same ranges: one search


@dataclass
class Row:
    name: str
    path: Path
    ppl: float = 0.0
    prefill_ms: float = 0.0
    quant_s: float = 0.0
    note: str = ""

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6


def ort_dynamic(fp32: Path, out: Path) -> None:
    """onnxruntime.quantization.quantize_dynamic: per-tensor dynamic uint8 activations x int8 weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])


def prefill_latency(rows: list[Row], batch: int, tokens: int, runs: int, vocab_ids: np.ndarray) -> None:
    """Median prefill time (ms) of a ``batch x tokens`` window per model, timed round-robin."""
    ids = vocab_ids[: batch * tokens].reshape(batch, tokens)
    engines = [Engine.load(r.path) for r in rows]
    try:
        feeds = [prefill_feeds(e.input_specs, ids) for e in engines]
        for e, f in zip(engines, feeds):
            e.run(f, ["logits"])  # warm-up
        times: list[list[float]] = [[] for _ in rows]
        for _ in range(runs):
            for i, (e, f) in enumerate(zip(engines, feeds)):
                t0 = time.perf_counter()
                e.run(f, ["logits"])
                times[i].append(time.perf_counter() - t0)
        for r, t in zip(rows, times):
            r.prefill_ms = 1000 * float(np.median(t))
    finally:
        for e in engines:
            e.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(REFERENCE), help="HF causal-LM folder or built-in name (smollm2)")
    p.add_argument("--fp32", default=None, help="an already exported FP32 ONNX LM (skips the export)")
    p.add_argument("--workdir", default=None, help="where to write the ONNX files (default: a temp folder)")
    p.add_argument("--variants", nargs="+", default=["default", "all-int8", "model", "lm_head"], choices=sorted(VARIANTS))
    p.add_argument("--no-peers", action="store_true", help="skip the dynamic INT8 peers")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch", type=int, default=4, help="prefill batch")
    p.add_argument("--tokens", type=int, default=256, help="prefill tokens per row")
    p.add_argument("--runs", type=int, default=5, help="timed prefills per model (median)")
    p.add_argument("--num-samples", type=int, default=32, help="calibration windows")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("onnx_ir", "onnxscript", "torch", "transformers", "converter"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_llm_w8a8."))
    work.mkdir(parents=True, exist_ok=True)
    fp32 = Path(args.fp32) if args.fp32 else work / "fp32.onnx"
    if not args.fp32:
        export_causal_lm(args.model, fp32)
    folder = tokenizer_dir(fp32)
    held = encode_text(load_tokenizer(str(folder)), heldout_text())
    calib = training_text()
    rows = [Row("FP32", fp32)]
    cache: dict = {}
    for key in args.variants:
        name, cfg = VARIANTS[key]
        cfg = W8A8Config(**{**cfg.__dict__, "num_samples": args.num_samples, "seq_len": args.context})
        out = work / f"w8a8_{key}.onnx"
        res = quantize_w8a8(fp32, out, cfg, text=calib, cache=cache if key in SHARES_SEARCH else None)
        alphas = [a for a in res.alphas.values()]
        smoothed = sum(a is not None for a in alphas)
        note = (f"{res.quantized_matmuls} static int8 / {res.dynamic_matmuls} dynamic int8 / {res.float_matmuls} "
                f"float MatMuls; smoothed {smoothed}/{len(alphas)}")
        if smoothed:
            note += f" (alpha {', '.join(f'{a:g}x{alphas.count(a)}' for a in sorted({a for a in alphas if a is not None}))})"
        rows.append(Row(name, out, quant_s=res.seconds, note=note))
    if not args.no_peers:
        out = work / "dyn_int8_g128.onnx"
        t0 = time.perf_counter()
        quantize_weights(fp32, out, WeightOnlyConfig(bits=8, group_size=128, accuracy_level=4))
        rows.append(Row("dynamic INT8 (qdq, MatMulNBits acc4)", out, quant_s=time.perf_counter() - t0,
                        note="int8 g128 weights, activations per token/block at run time"))
        out = work / "ort_quantize_dynamic.onnx"
        t0 = time.perf_counter()
        ort_dynamic(fp32, out)
        rows.append(Row("onnxruntime quantize_dynamic", out, quant_s=time.perf_counter() - t0,
                        note="per-channel int8 weights, per-tensor dynamic uint8 activations"))
    for r in rows:
        with Engine.load(r.path) as eng:
            r.ppl = stream_perplexity(eng, held, args.context).perplexity
        log.info("%-40s ppl %.3f  %.1f MB", r.name, r.ppl, r.size_mb)
    prefill_latency(rows, args.batch, args.tokens, args.runs, np.resize(held, args.batch * args.tokens))
    report(rows, args, len(held))


def report(rows: list[Row], args: argparse.Namespace, n_tokens: int) -> None:
    from runtime.cpu import cpu_int8

    base = rows[0]
    print(f"\nLM {args.fp32 or args.model}; held-out {n_tokens} tokens, context {args.context}; prefill batch "
          f"{args.batch} x {args.tokens} tokens, empty KV cache, median of {args.runs} round-robin runs, ONNX Runtime "
          f"CPU default session ({os.cpu_count()} logical CPUs; {cpu_int8()}); calibration: {args.num_samples} "
          f"windows of the training text")
    print(f"| variant | ppl | ppl/FP32 | prefill ms | speed-up | size MB | quantize s | notes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r.name} | {r.ppl:.3f} | {r.ppl / base.ppl:.4f} | {r.prefill_ms:.0f} | "
              f"{base.prefill_ms / r.prefill_ms:.2f}x | {r.size_mb:.1f} | {r.quant_s:.0f} | {r.note} |")
    for r in rows[1:]:
        if r.name.startswith("W8A8"):
            ok = r.ppl <= 1.03 * base.ppl and r.prefill_ms < base.prefill_ms
            print(f"target {r.name}: ppl within 3% ({100 * (r.ppl / base.ppl - 1):+.2f}%) and prefill faster "
                  f"({base.prefill_ms / r.prefill_ms:.2f}x): {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
