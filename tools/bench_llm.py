"""Weight-only quantization benchmark on the reference LM: perplexity, size and tokens/s on ONNX Runtime CPU.

    nice python tools/bench_llm.py                     # FP32, INT8, INT4 g128 RTN/GPTQ, ZeroQuant-style
    nice python tools/bench_llm.py --groups 32 64 128 --act-order
    nice python tools/bench_llm.py --model smollm2 --groups 128 --asymmetric --hera --ort-peers --no-dynamic
    nice python tools/bench_llm.py --model smollm2 --workdir W --domains tune --json tune.json   # held-out domains
    nice python tools/bench_llm.py --domains report --domain mine=notes.txt --extra "awq only=algo=gptq,awq=true"

Domain mode (``--domains tune|report`` and/or ``--domain NAME=FILE``; tools/bench_llm_domains.py): FP32, INT4
g128 RTN, plain GPTQ, ``qdq default`` (DEFAULT_INT4), ``--extra`` recipes and onnxruntime's MatMulNBits
default/HQQ/k-quant, each quantized once and evaluated on every domain (ppl, Δppl, Δ/RTN's Δ, KL vs FP32),
with the issue's two targets as PASS/FAIL lines. The rest of this text is about the default mode.

``--ort-peers`` adds onnxruntime's ``MatMulNBitsQuantizer`` (default RTN, HQQ, k-quant) at each group size,
measured in the same run on the same text.

One run exports the model (FP32 ONNX, KV cache; an existing ``--workdir``/fp32.onnx of the same model is
reused), quantizes each variant in a fresh process (its wall time and peak RSS reported: GPTQ and HERA
calibrate sequentially on the training text, converter.llm.data.training_text), and measures: held-out perplexity
(converter.llm.data.heldout_text), model file size, and greedy-generation tokens/s at batch 1
(runtime.generate, prompt + new tokens, best of a few runs). Prints a table with ratios to FP32 and
mean per-token KL divergence from FP32 (a lower-noise view of the same damage), and
checks the issue's targets: INT4 g128 GPTQ perplexity increase <= 0.5x RTN's; INT8 within 1% of FP32.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/llm_domains.py, tools/bench_llm_domains.py

import numpy as np  # noqa: E402

from converter.llm.config import WeightOnlyConfig  # noqa: E402
from converter.llm.data import heldout_text, training_text  # noqa: E402
from converter.llm.dynamic import session_options  # noqa: E402
from converter.llm.export import export_causal_lm  # noqa: E402
from converter.llm.feeds import encode_text, load_tokenizer  # noqa: E402
from converter.llm.perplexity import window_logits  # noqa: E402
from converter.llm.weight_only import lm_calibration, needs_hessians, quantize_weights  # noqa: E402
from converter.models import resolve_model, source_model_dir  # noqa: E402
from runtime import Engine  # noqa: E402
from runtime.cpu import cpu_int8  # noqa: E402
from runtime.generate import generate  # noqa: E402

log = logging.getLogger("bench_llm")
REFERENCE = Path(__file__).resolve().parent / "reference_lm"


@dataclass
class Row:
    name: str
    ppl: float
    kl: float
    size_mb: float
    tok_s: float
    quant_s: float = 0.0
    rss_gb: float = 0.0
    error: str = ""


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x -= x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def evaluate(eng: Engine, held: np.ndarray, context: int, base: list[np.ndarray] | None) -> tuple[float, float, list]:
    """Perplexity, mean KL(FP32 || this model) per token (0 without ``base``), and the log-probs per window."""
    nll, kl, count, logprobs = 0.0, 0.0, 0, []
    for i, (logits, targets) in enumerate(window_logits(eng, held, context)):
        lp = _log_softmax(logits)
        nll -= float(np.take_along_axis(lp, targets[..., None], -1).sum())
        if base is not None:
            kl += float((np.exp(base[i]) * (base[i] - lp)).sum())
        count += targets.size
        logprobs.append(lp.astype(np.float32))
    return math.exp(nll / count), kl / count, logprobs


def accuracy(path: Path, name: str, held: np.ndarray, args: argparse.Namespace,
             base: list[np.ndarray] | None = None, quant_s: float = 0.0, rss_gb: float = 0.0) -> tuple[Row, list]:
    """Perplexity and KL vs FP32 on the held-out stream (tokens/s is filled in later by ``speed``)."""
    with Engine.load(path, session_options=session_options(0, args.threads)) as eng:
        ppl, kl, logprobs = evaluate(eng, held, args.context, base)
    row = Row(name, ppl, kl, path.stat().st_size / 1e6, 0.0, quant_s, rss_gb)
    log.info("%-30s ppl %.3f  KL %.5f  %.2f MB", name, row.ppl, row.kl, row.size_mb)
    return row, logprobs


def speed(paths: list[Path], rows: list[Row], prompt: np.ndarray, args: argparse.Namespace) -> None:
    """Greedy tokens/s at batch 1, all models timed round-robin so machine load hits them alike; best of N."""
    engines = [Engine.load(p, session_options=session_options(0, args.threads)) for p in paths]
    try:
        for eng in engines:
            generate(eng, prompt, 4)  # warm-up
        best = [float("inf")] * len(engines)
        for _ in range(args.repeats):
            for i, eng in enumerate(engines):
                t0 = time.perf_counter()
                out = generate(eng, prompt, args.new_tokens)
                best[i] = min(best[i], time.perf_counter() - t0)
                assert out.shape[1] == prompt.shape[1] + args.new_tokens
        for row, t in zip(rows, best):
            row.tok_s = args.new_tokens / t
    finally:
        for eng in engines:
            eng.close()


def variants(args: argparse.Namespace) -> list[tuple[str, WeightOnlyConfig]]:
    out = [("INT8 g128 RTN", WeightOnlyConfig(bits=8, group_size=128))]
    ao = not args.no_act_order
    for g in args.groups:
        out += [(f"INT4 g{g} RTN", WeightOnlyConfig(bits=4, group_size=g)),
                (f"INT4 g{g} GPTQ", WeightOnlyConfig(bits=4, group_size=g, algo="gptq", act_order=ao))]
        if args.hera:
            out += [(f"INT4 g{g} RTN+HERA", WeightOnlyConfig(bits=4, group_size=g, hera=True)),
                    (f"INT4 g{g} GPTQ+HERA", WeightOnlyConfig(bits=4, group_size=g, algo="gptq", act_order=ao, hera=True))]
        if args.asymmetric:
            out += [(f"INT4 g{g} RTN asym", WeightOnlyConfig(bits=4, group_size=g, symmetric=False)),
                    (f"INT4 g{g} GPTQ asym", WeightOnlyConfig(bits=4, group_size=g, algo="gptq", symmetric=False,
                                                              act_order=ao))]
    if not args.no_dynamic:
        out += [("INT8 g128 RTN + dyn-int8 act", WeightOnlyConfig(bits=8, group_size=128, accuracy_level=4)),
                ("INT4 g128 GPTQ + dyn-int8 act", WeightOnlyConfig(bits=4, group_size=128, algo="gptq", act_order=ao,
                                                                   accuracy_level=4))]
    return out


def peak_rss_gb() -> float:
    """This process's peak RSS: VmHWM, which starts afresh at exec (ru_maxrss keeps the forking parent's peak)."""
    import resource

    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1e6
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _quantize_job(fp32: str, out: str, cfg: WeightOnlyConfig, context: int, samples: int,
                  sources: list[str] | None = None) -> tuple[float, float]:
    """In a fresh process: quantize, return (seconds, peak RSS in GB of this process).

    Calibration (when ``cfg`` needs it): the text ``sources`` in equal shares, else the reference training text."""
    from converter.llm.calib_text import text_calibration

    t0 = time.perf_counter()
    calib = None
    if needs_hessians(cfg):
        calib = (text_calibration(fp32, sources, seq_len=context, max_windows=samples) if sources
                 else lm_calibration(fp32, training_text(), seq_len=context, max_windows=samples))
    quantize_weights(fp32, out, cfg, calib)
    return time.perf_counter() - t0, peak_rss_gb()


def quantize_in_process(fp32: Path, out: Path, cfg: WeightOnlyConfig, args: argparse.Namespace) -> tuple[float, float]:
    """Run one qdq quantization in a spawned process, so its time and peak RSS are its own."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_quantize_job, (str(fp32), str(out), cfg, args.calib_length, args.calib_samples,
                                          args.calib if args.domain_mode else None))


def ort_peers(fp32: Path, work: Path, groups: list[int]) -> list[tuple[str, Path | None, float, str]]:
    """onnxruntime's own 4-bit weight-only quantizers: (name, path or None when it failed, seconds, error)."""
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    out = []
    for g in groups:
        for label, algo in (("default", mnb.DefaultWeightOnlyQuantConfig(block_size=g, is_symmetric=False)),
                            ("HQQ", mnb.HQQWeightOnlyQuantConfig(block_size=g)),
                            ("k-quant", mnb.KQuantWeightOnlyQuantConfig())):
            path = work / f"ort_{label.lower().replace('-', '')}_g{g}.onnx"
            t0 = time.perf_counter()
            try:
                q = mnb.MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=g, is_symmetric=False,
                                             algo_config=algo)
                q.process()
                q.model.save_model_to_file(str(path), use_external_data_format=False)
            except Exception as exc:  # a peer that fails is reported as a row, not fatal
                log.warning("onnxruntime MatMulNBitsQuantizer %s g%d failed: %s", label, g, exc)
                out.append((f"ORT MatMulNBits {label} g{g}", None, time.perf_counter() - t0,
                            f"{type(exc).__name__}: {exc}"))
                continue
            out.append((f"ORT MatMulNBits {label} g{g}", path, time.perf_counter() - t0, ""))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(REFERENCE),
                   help="HF causal-LM folder or a built-in name such as smollm2 (default: tools/reference_lm)")
    p.add_argument("--workdir", default=None, help="where to write the ONNX files (default: a temp folder)")
    p.add_argument("--groups", type=int, nargs="+", default=[128])
    p.add_argument("--act-order", action="store_true", help="(GPTQ uses act-order by default; kept for old command lines)")
    p.add_argument("--no-act-order", action="store_true", help="GPTQ without act-order")
    p.add_argument("--asymmetric", action="store_true")
    p.add_argument("--hera", action="store_true", help="also RTN+HERA and GPTQ+HERA")
    p.add_argument("--skip", nargs="*", default=[], help="variant names to leave out (e.g. 'INT4 g128 GPTQ asym')")
    p.add_argument("--calib-samples", type=int, default=64, help="calibration windows for GPTQ/HERA")
    p.add_argument("--calib-length", type=int, default=128, help="tokens per calibration window")
    p.add_argument("--no-dynamic", action="store_true", help="skip the ZeroQuant-style int8-activation variants")
    p.add_argument("--ort-peers", action="store_true", help="also onnxruntime's MatMulNBitsQuantizer variants")
    p.add_argument("--context", type=int, default=None, help="tokens per evaluation window (default 128; 256 with domains)")
    d = p.add_argument_group("held-out domains (tools/bench_llm_domains.py; replaces the reference held-out text)")
    d.add_argument("--domains", choices=["tune", "report"], default=None,
                   help="the tools/llm_domains.py split (built under build/llm_domains when missing): "
                        "choose defaults on tune, report numbers on report")
    d.add_argument("--domain", action="append", default=[], metavar="NAME=FILE",
                   help="a held-out text domain, any UTF-8 text file (repeatable; with or without --domains)")
    d.add_argument("--calib", action="append", default=None, metavar="SOURCE",
                   help="calibration text for every data-using variant: a file or builtin:NAME, repeatable, equal "
                        "shares (default builtin:mix)")
    d.add_argument("--max-eval-tokens", type=int, default=16384, help="tokens evaluated per domain")
    d.add_argument("--eval-models", type=int, default=3,
                   help="quantized models loaded beside FP32 at a time while evaluating (memory vs FP32 re-runs)")
    d.add_argument("--extra", action="append", default=[], metavar="NAME=key=val,...",
                   help="one more variant: WeightOnlyConfig fields over its defaults, e.g. "
                        "'awq only=algo=gptq,awq=true' (repeatable)")
    d.add_argument("--json", type=Path, default=None, help="write every number to this JSON file")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    args.domain_mode = bool(args.domains or args.domain)
    args.context = args.context or (256 if args.domain_mode else 128)
    args.calib = args.calib or ["builtin:mix"]
    domains = _domains(p, args) if args.domain_mode else {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("onnx_ir", "onnxscript", "torch", "transformers", "converter"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_llm."))
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "fp32.onnx"
    if fp32.is_file() and source_model_dir(fp32) == resolve_model(args.model):
        log.info("reusing %s", fp32)
    else:
        export_causal_lm(args.model, fp32)
    tok = load_tokenizer(str(resolve_model(args.model)))
    if args.domain_mode:
        return domain_bench(args, fp32, work, tok, domains)
    held = encode_text(tok, heldout_text())
    prompt = held[None, : args.prompt_tokens]
    first, base = accuracy(fp32, "FP32", held, args)
    rows, paths = [first], [fp32]

    for name, cfg in variants(args):
        if name in args.skip:
            continue
        out = work / (name.replace(" ", "_").replace("+", "_").lower() + ".onnx")
        seconds, rss = quantize_in_process(fp32, out, cfg, args)
        rows.append(accuracy(out, name, held, args, base, seconds, rss)[0])
        paths.append(out)
    if args.ort_peers:
        failed = []
        for name, out, seconds, error in ort_peers(fp32, work, args.groups):
            if out is None:
                failed.append(Row(name, math.nan, math.nan, math.nan, math.nan, seconds, error=error))
                continue
            rows.append(accuracy(out, name, held, args, base, seconds)[0])
            paths.append(out)
    speed(paths, rows, prompt, args)
    if args.ort_peers:
        rows += failed
    report(rows, args, len(held))


def _domains(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Path]:
    """{name: text file} from --domains and --domain NAME=FILE (checked before any work)."""
    from llm_domains import domain_files

    out = dict(domain_files(args.domains)) if args.domains else {}
    for spec in args.domain:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            p.error(f"--domain wants NAME=FILE, got {spec!r}")
        if not Path(file).is_file():
            p.error(f"--domain {name}: file not found: {file}")
        out[name] = Path(file)
    for src in args.calib:
        if not src.startswith("builtin:") and not Path(src).is_file():
            p.error(f"--calib: file not found: {src}")
    try:
        from bench_llm_domains import variants as domain_variants

        domain_variants(args.extra)
    except (ValueError, TypeError) as exc:
        p.error(str(exc).splitlines()[0])
    except Exception as exc:  # noqa: BLE001 - a WeightOnlyConfig that rejects the fields
        p.error(f"--extra: {exc}")
    if args.eval_models < 1:
        p.error("--eval-models must be >= 1")
    if args.max_eval_tokens < 2:
        p.error("--max-eval-tokens must be >= 2")
    return out


def domain_bench(args: argparse.Namespace, fp32: Path, work: Path, tok, domains: dict[str, Path]) -> None:  # noqa: ANN001
    """Every variant quantized once and evaluated on every domain; tables, target lines, optional JSON."""
    import bench_llm_domains as bd

    def quantize(src: Path, out: Path, cfg: WeightOnlyConfig) -> tuple[float, float]:
        return quantize_in_process(src, out, cfg, args)

    vs = bd.run(args, fp32, work, tok, domains, quantize)
    header = (f"LM {args.model}; CPU {cpu_int8().describe()}, {os.cpu_count()} logical cores; "
              f"ONNX Runtime CPU, {args.threads} thread(s); evaluation: the first "
              f"{args.max_eval_tokens} tokens of each domain, windows of {args.context} tokens (each a prefill); "
              f"calibration for GPTQ/AWQ/clip/HERA variants: {args.calib_samples} windows of {args.calib_length} "
              f"tokens from {' + '.join(args.calib)} (equal shares); quant s / peak GB: wall time and peak RSS of "
              f"the fresh process that quantized; this process (evaluation, FP32 beside {args.eval_models} others) "
              f"peaked at {peak_rss_gb():.2f} GB")
    print("\n" + "\n".join(bd.report(vs, list(domains), header)))
    if args.json:
        bd.write_json(args.json, bd.to_json(vs, domains, {
            "model": args.model, "cpu": cpu_int8().describe(), "threads": args.threads, "context": args.context,
            "max_eval_tokens": args.max_eval_tokens, "calib": args.calib, "calib_samples": args.calib_samples,
            "calib_length": args.calib_length, "split": args.domains, "eval_peak_rss_gb": peak_rss_gb()}))
        print(f"wrote {args.json}")


def report(rows: list[Row], args: argparse.Namespace, n_tokens: int) -> None:
    base = rows[0]
    by_name = {r.name: r for r in rows}
    print(f"\nLM {args.model}; CPU {cpu_int8().describe()}, {os.cpu_count()} logical cores; held-out {n_tokens} tokens, context {args.context}; generation: batch 1, "
          f"{args.prompt_tokens}-token prompt + {args.new_tokens} new tokens, best of {args.repeats}, {args.threads} thread(s), "
          f"ONNX Runtime CPU; GPTQ/HERA calibration: {args.calib_samples} windows of {args.calib_length} tokens "
          f"(sequential); quant s / peak GB: wall time and peak RSS of the process that quantized")
    print(f"{'variant':<30} {'ppl':>9} {'Δppl':>8} {'ppl/FP32':>9} {'KL(FP32‖q)':>10} {'size MB':>8} {'size/FP32':>9} "
          f"{'tok/s':>7} {'speed/FP32':>10} {'quant s':>7} {'peak GB':>7}")
    for r in rows:
        if r.error:
            print(f"{r.name:<30} failed after {r.quant_s:.1f}s: {r.error}")
            continue
        print(f"{r.name:<30} {r.ppl:9.3f} {r.ppl - base.ppl:+8.3f} {r.ppl / base.ppl:9.4f} {r.kl:10.5f} {r.size_mb:8.2f} "
              f"{r.size_mb / base.size_mb:9.3f} {r.tok_s:7.1f} {r.tok_s / base.tok_s:10.2f} {r.quant_s:7.1f} "
              + (f"{r.rss_gb:7.2f}" if r.rss_gb else f"{'':>7}"))
    print()
    for g in args.groups:
        peers = [r for r in rows if r.name.startswith("ORT MatMulNBits") and r.name.endswith(f" g{g}") and not r.error]
        for sym in ("", " asym"):
            rtn, gptq = by_name.get(f"INT4 g{g} RTN{sym}"), by_name.get(f"INT4 g{g} GPTQ{sym}")
            if not (rtn and gptq):
                continue
            d_rtn, d_gptq = rtn.ppl - base.ppl, gptq.ppl - base.ppl
            ratio = d_gptq / d_rtn if d_rtn > 0 else float("nan")
            verdict = "PASS" if d_rtn > 0 and ratio <= 0.5 else "FAIL"
            print(f"target INT4 g{g}{sym}: GPTQ increase {d_gptq:+.3f} vs RTN {d_rtn:+.3f} (ratio {ratio:.2f}, "
                  f"need <= 0.5): {verdict}; KL ratio {gptq.kl / rtn.kl:.2f}")
            if peers:
                best = min(peers, key=lambda r: r.ppl)
                print(f"target INT4 g{g}{sym}: GPTQ ppl {gptq.ppl:.3f} below every onnxruntime variant (best "
                      f"{best.name} {best.ppl:.3f}): {'PASS' if gptq.ppl < best.ppl else 'FAIL'}")
            print(f"target INT4 g{g}{sym}: GPTQ in {gptq.quant_s:.0f}s (< 180 s) and {gptq.rss_gb:.2f} GB peak RSS "
                  f"(< 2 GB): {'PASS' if gptq.quant_s < 180 and gptq.rss_gb < 2 else 'FAIL'}")
    int8 = by_name.get("INT8 g128 RTN")
    if int8:
        rel = abs(int8.ppl / base.ppl - 1)
        print(f"target INT8 weight-only within 1% of FP32: {100 * rel:.3f}%: {'PASS' if rel <= 0.01 else 'FAIL'}")


if __name__ == "__main__":
    main()
