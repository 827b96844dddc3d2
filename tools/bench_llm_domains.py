"""The held-out domain mode of tools/bench_llm.py: every variant quantized once, evaluated on every domain.

Variants: FP32; INT4 g128 RTN; INT4 g128 GPTQ (plain: no AWQ, no clip); ``qdq default``
(converter.llm.config.DEFAULT_INT4); each ``--extra NAME=key=val,...`` (WeightOnlyConfig fields over its
defaults); onnxruntime's MatMulNBitsQuantizer default (asymmetric RTN), HQQ and k-quant at g128. Data-using
variants calibrate on the ``--calib`` sources (converter.llm.calib_text: equal shares per source).

Per domain: perplexity over the first ``--max-eval-tokens`` tokens (windows of ``--context`` tokens, each a
prefill), Δppl vs FP32, Δ / RTN's Δ, and mean per-token KL(FP32 ‖ variant), with all models run window by
window side by side so no logits are kept. Per variant: quantization wall time and peak RSS of the fresh
process that quantized, and file size.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converter.llm.config import DEFAULT_INT4, WeightOnlyConfig
from converter.llm.dynamic import session_options
from converter.llm.feeds import encode_text
from converter.llm.perplexity import window_logits
from runtime import Engine

log = logging.getLogger("bench_llm")
RTN, GPTQ, DEFAULT, FP32 = "INT4 g128 RTN", "INT4 g128 GPTQ", "qdq default", "FP32"
ORT_PREFIX = "ORT MatMulNBits"


@dataclass
class Variant:
    name: str
    config: WeightOnlyConfig | None = None  # None: FP32 or an onnxruntime quantizer
    ort: str | None = None  # onnxruntime quantizer label
    path: Path | None = None
    quant_s: float = 0.0
    rss_gb: float = 0.0
    size_mb: float = 0.0
    error: str = ""
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # domain -> ppl, kl


def _value(text: str, kind: object) -> object:
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(f"not a boolean: {text!r}")
        return text.lower() in ("true", "1", "yes", "on")
    if kind in (int, float, str):
        return kind(text)
    return tuple(t for t in text.split("+") if t)  # exclude: names joined by '+'


def parse_extra(spec: str) -> tuple[str, WeightOnlyConfig]:
    """``NAME=key=val,key=val`` -> (NAME, WeightOnlyConfig with those fields over its defaults)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest:
        raise ValueError(f"--extra wants NAME=key=val[,key=val...], got {spec!r}")
    hints = typing.get_type_hints(WeightOnlyConfig)
    kinds = {f.name: hints[f.name] for f in dataclasses.fields(WeightOnlyConfig)}
    values = {}
    for item in rest.split(","):
        key, sep, val = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in kinds:
            raise ValueError(f"--extra {name}: {item!r} is not key=value of a WeightOnlyConfig field "
                             f"({', '.join(kinds)})")
        values[key] = _value(val.strip(), kinds[key])
    return name.strip(), WeightOnlyConfig(**values)


def variants(extras: list[str]) -> list[Variant]:
    out = [Variant(FP32), Variant(RTN, WeightOnlyConfig(bits=4, group_size=128)),
           Variant(GPTQ, WeightOnlyConfig(bits=4, group_size=128, algo="gptq")), Variant(DEFAULT, DEFAULT_INT4)]
    out += [Variant(*parse_extra(spec)) for spec in extras]
    out += [Variant(f"{ORT_PREFIX} {label} g128", ort=label) for label in ("default", "HQQ", "k-quant")]
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must differ: {names}")
    return out


def ort_job(fp32: str, out: str, label: str, group: int) -> tuple[float, float]:
    """In a fresh process: onnxruntime's MatMulNBitsQuantizer; (seconds, peak RSS GB)."""
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    from bench_llm import peak_rss_gb

    for name in ("onnxruntime", mnb.__name__):  # one INFO line per MatMul otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    t0 = time.perf_counter()
    algo = {"default": lambda: mnb.DefaultWeightOnlyQuantConfig(block_size=group, is_symmetric=False),
            "HQQ": lambda: mnb.HQQWeightOnlyQuantConfig(block_size=group),
            "k-quant": lambda: mnb.KQuantWeightOnlyQuantConfig()}[label]()
    q = mnb.MatMulNBitsQuantizer(onnx.load(fp32), bits=4, block_size=group, is_symmetric=False, algo_config=algo)
    q.process()
    q.model.save_model_to_file(out, use_external_data_format=False)
    return time.perf_counter() - t0, peak_rss_gb()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x -= x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def evaluate(engines: list[Engine], stream: np.ndarray, context: int) -> list[dict[str, float]]:
    """Perplexity and mean KL(first engine ‖ engine) per token of each engine, window by window side by side."""
    nll, kl, count = np.zeros(len(engines)), np.zeros(len(engines)), 0
    for outs in zip(*(window_logits(e, stream, context, batch=1) for e in engines)):
        for i, (logits, targets) in enumerate(outs):
            lp = _log_softmax(logits)
            nll[i] -= float(np.take_along_axis(lp, targets[..., None], -1).sum())
            if i == 0:
                base, p = lp, np.exp(lp)
            else:
                kl[i] += float((p * (base - lp)).sum())
        count += outs[0][1].size
    return [{"ppl": math.exp(nll[i] / count), "kl": kl[i] / count, "tokens": count} for i in range(len(engines))]


def evaluate_all(models: list[Variant], domains: dict[str, Path], tokenizer, args) -> None:  # noqa: ANN001
    """Fill each model's scores on every domain; FP32 (the first) runs beside ``args.eval_models`` others at a time."""
    streams = {name: encode_text(tokenizer, path.read_text(encoding="utf-8"))[: args.max_eval_tokens + 1]
               for name, path in domains.items()}
    base, rest = models[0], models[1:]
    for start in range(0, max(len(rest), 1), args.eval_models):
        group = [base, *rest[start:start + args.eval_models]]
        engines = [Engine.load(m.path, session_options=session_options(0, args.threads)) for m in group]
        try:
            for name, stream in streams.items():
                t0 = time.perf_counter()
                for m, score in zip(group, evaluate(engines, stream, args.context)):
                    m.scores[name] = score
                log.info("domain %s: %d tokens, %s in %.0fs", name, len(stream) - 1,
                         ", ".join(m.name for m in group), time.perf_counter() - t0)
        finally:
            for e in engines:
                e.close()


def run(args, fp32: Path, work: Path, tokenizer, domains: dict[str, Path], quantize) -> list[Variant]:  # noqa: ANN001
    """Quantize every variant once (``quantize(fp32, out, config)`` -> seconds, GB), then evaluate on every domain."""
    import multiprocessing as mp

    vs = variants(args.extra)
    for v in vs:
        if v.name == FP32:
            v.path = fp32
        else:
            v.path = work / (v.name.replace(" ", "_").replace("+", "_").replace("/", "_").lower() + ".onnx")
            try:
                if v.ort:
                    with mp.get_context("spawn").Pool(1) as pool:
                        v.quant_s, v.rss_gb = pool.apply(ort_job, (str(fp32), str(v.path), v.ort, 128))
                else:
                    v.quant_s, v.rss_gb = quantize(fp32, v.path, v.config)
            except Exception as exc:  # a variant that fails is a row, not the end of the run
                log.warning("%s failed: %s", v.name, exc)
                v.error, v.path = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", None
                continue
        v.size_mb = v.path.stat().st_size / 1e6
        log.info("%-30s quantized in %.1fs, %.2f GB peak, %.2f MB", v.name, v.quant_s, v.rss_gb, v.size_mb)
    evaluate_all([v for v in vs if not v.error], domains, tokenizer, args)
    return vs


def _delta(v: Variant, base: Variant, domain: str) -> float:
    return v.scores[domain]["ppl"] - base.scores[domain]["ppl"] if domain in v.scores else math.nan


def checks(vs: list[Variant], domains: list[str]) -> list[tuple[str, bool]]:
    """The issue's two targets, one line each: (text, passed)."""
    by = {v.name: v for v in vs}
    base, rtn, best = by[FP32], by[RTN], by[DEFAULT]
    out = []
    parts, ok = [], not best.error and not rtn.error
    for d in domains:
        dr, db = _delta(rtn, base, d), _delta(best, base, d)
        ok = ok and db <= 0.5 * dr  # NaN (not evaluated) fails
        parts.append(f"{d} {db:+.3f} vs {dr:+.3f}" + (f" ({db / dr:.2f})" if dr > 0 else ""))
    out.append((f"{DEFAULT} Δppl <= 0.5 x RTN's Δppl on every domain ({'; '.join(parts)}): "
                f"{'PASS' if ok else 'FAIL'}", ok))
    peers = [v for v in vs if v.ort]
    parts, ok = [], not best.error and any(not p.error for p in peers)  # a peer that cannot run is only named
    for d in domains:
        live = [p for p in peers if d in p.scores]
        top = min(live, key=lambda p: p.scores[d]["ppl"]) if live else None
        here = best.scores.get(d, {}).get("ppl", math.nan)
        ok = ok and top is not None and here < top.scores[d]["ppl"]
        parts.append(f"{d} {here:.3f} vs {top.name.removeprefix(ORT_PREFIX + ' ') if top else '-'} "
                     f"{top.scores[d]['ppl'] if top else math.nan:.3f}")
    failed = [p.name for p in peers if p.error]
    out.append((f"{DEFAULT} ppl below every onnxruntime variant on every domain ({'; '.join(parts)})"
                + (f" [not in the run, failed: {', '.join(failed)}]" if failed else "") + f": {'PASS' if ok else 'FAIL'}", ok))
    return out


def report(vs: list[Variant], domains: list[str], header: str) -> list[str]:
    """The printed tables and target lines."""
    by = {v.name: v for v in vs}
    base, rtn = by[FP32], by[RTN]
    lines = [header]
    for d in domains:
        tokens = base.scores[d]["tokens"]
        lines += ["", f"domain {d} ({tokens} tokens)",
                  f"{'variant':<34} {'ppl':>9} {'Δppl':>8} {'Δ/RTN Δ':>8} {'KL(FP32‖q)':>10}"]
        dr = _delta(rtn, base, d)
        for v in vs:
            if d not in v.scores:
                lines.append(f"{v.name:<34} {'failed: ' + v.error if v.error else 'not evaluated'}")
                continue
            dv = _delta(v, base, d)
            ratio = f"{dv / dr:8.2f}" if dr > 0 and v.name != FP32 else f"{'':>8}"
            lines.append(f"{v.name:<34} {v.scores[d]['ppl']:9.3f} {dv:+8.3f} {ratio} {v.scores[d]['kl']:10.5f}")
    lines += ["", f"{'variant':<34} {'quant s':>8} {'peak GB':>8} {'size MB':>8}  recipe"]
    for v in vs:
        recipe = v.config.label if v.config else (f"onnxruntime MatMulNBitsQuantizer {v.ort}" if v.ort else "")
        timing = f"{v.quant_s:8.1f} {v.rss_gb:8.2f}" if v.name != FP32 else f"{'':>8} {'':>8}"
        lines.append(f"{v.name:<34} {timing} {v.size_mb:8.2f}  {recipe}"
                     + (f"  FAILED {v.error}" if v.error else ""))
    lines.append("")
    lines += [text for text, _ in checks(vs, domains)]
    return lines


def to_json(vs: list[Variant], domains: dict[str, Path], meta: dict) -> dict:
    return {**meta, "domains": {k: str(p) for k, p in domains.items()},
            "variants": [{"name": v.name, "recipe": dataclasses.asdict(v.config) if v.config else None,
                          "ort": v.ort, "quant_s": v.quant_s, "peak_rss_gb": v.rss_gb, "size_mb": v.size_mb,
                          "error": v.error, "scores": v.scores} for v in vs],
            "checks": [{"line": t, "pass": ok} for t, ok in checks(vs, list(domains))]}


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
