"""Benchmark streaming calibration on all-MiniLM-L6-v2 against plain FP32 inference and onnxruntime's calibrators.

    python tools/bench_calibration.py                 # full run (about 15-25 minutes on 2 cores)
    python tools/bench_calibration.py --quick         # 64 samples only, no ORT Entropy/Percentile
    python tools/bench_calibration.py --json out.json
    python tools/bench_calibration.py --sizes 1024 --no-reference --repeat 3   # the time ratio only

Every measurement runs in its own subprocess so its peak RSS (ru_maxrss) is clean. Samples are the
sentences shipped with calibration_data (builtin text, text-heldout and corpus: 1051 lines), in
batches of 8, either padded per batch ("ragged", what `qdq calibrate` does) or padded to 128 tokens
(what onnxruntime.quantization needs: it cannot take ragged batches). Time includes loading the
model; tokenization happens before the clock starts. FP32 inference is timed with ONNX Runtime's
default options and with intra-op spinning off; ratios use the faster. `qdq` rows calibrate the
tensors `qdq quantize` can quantize (the default); `all-tensors` rows every float activation of
the ops ONNX Runtime's calibrators observe too (`qdq calibrate --all-tensors`).
The machine should be otherwise idle: on shared cores the timings swing by 2x or more.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BATCH = 8
MAX_LENGTH = 128
DEFAULT_MODEL = Path(tempfile.gettempdir()) / "qdq-bench" / "minilm.onnx"


# -- child side ------------------------------------------------------------------------------
def _sentences(n: int) -> list[str]:
    from calibration_data import read_texts

    lines: list[str] = []
    for name in ("builtin:text", "builtin:text-heldout", "builtin:corpus"):
        lines.extend(read_texts(name))
    if not lines:
        raise SystemExit("no built-in sentences found")
    return [lines[i % len(lines)] for i in range(n)]


def _tokenize(n: int, padded: bool, out: Path) -> Path:
    """Tokenize ``n`` sentences into batches of 8 and save them (children never import transformers/torch,
    which would inflate their RSS)."""
    import numpy as np
    from transformers import AutoTokenizer

    from converter.models import resolve_model

    tok = AutoTokenizer.from_pretrained(str(resolve_model("minilm")), local_files_only=True)
    texts = _sentences(n)
    arrays = {}
    for i in range(0, n, BATCH):
        enc = tok(texts[i:i + BATCH], padding="max_length" if padded else "longest", truncation=True,
                  max_length=MAX_LENGTH, return_tensors="np")
        for k, v in enc.items():
            arrays[f"{i // BATCH:05d}/{k}"] = np.ascontiguousarray(v, dtype=np.int64)
    np.savez(out, **arrays)
    return out


def _load_batches(path: str) -> list[dict]:
    import numpy as np

    batches: dict[str, dict] = {}
    with np.load(path) as data:
        for key in sorted(data.files):
            index, name = key.split("/")
            batches.setdefault(index, {})[name] = data[key]
    return [batches[k] for k in sorted(batches)]


def _child(spec: dict) -> dict:
    model = spec["model"]
    batches = _load_batches(spec["data"])
    result: dict = {"tokens": int(sum(b["input_ids"].size for b in batches)),
                    "max_len": int(max(b["input_ids"].shape[1] for b in batches))}
    start = time.perf_counter()
    kind = spec["kind"]
    if kind == "fp32":
        from runtime import Engine

        options = None
        if spec.get("nospin"):  # the setting calibration uses; faster when the cores are shared
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        with Engine.load(model, session_options=options) as eng:
            for b in batches:
                eng.run(b)
    elif kind == "qdq":
        from converter.calibrate import CalibConfig, calibrate

        config = CalibConfig(method=spec["method"], scope=spec.get("scope", "quantizable"))
        table = calibrate(model, batches, config, progress=False)
        result["tensors"] = len(table.tensors)
        result["channel_stats"] = len(table.channel_absmax)
    elif kind == "ort":
        result.update(_ort_calibrate(model, batches, spec["method"]))
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _ort_calibrate(model: str, batches: list[dict], method: str) -> dict:
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            cal = create_calibrator(model, None, Path(tmp) / "augmented.onnx",
                                    calibrate_method=getattr(CalibrationMethod, method),
                                    use_external_data_format=True)
            cal.collect_data(Reader())
            ranges = cal.compute_data()
            return {"tensors": len(ranges.data)}
        except Exception as exc:  # record what the reference hits
            return {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"}


# -- parent side -----------------------------------------------------------------------------
def _run(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:160]}"}
    return json.loads(lines[-1])


def _export(model: Path) -> None:
    if model.is_file():
        return
    from converter.export import export_hf

    model.parent.mkdir(parents=True, exist_ok=True)
    print(f"exporting MiniLM to {model} ...", file=sys.stderr)
    export_hf("minilm", model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="FP32 MiniLM ONNX (exported if missing)")
    ap.add_argument("--quick", action="store_true", help="64 samples only; ORT MinMax only")
    ap.add_argument("--sizes", type=int, nargs="+", help="sample counts to measure (default 64 1024)")
    ap.add_argument("--no-reference", action="store_true", help="skip onnxruntime's calibrators")
    ap.add_argument("--method", default="percentile", help="our histogram method (default percentile)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per measurement")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds over all measurements (interleaved); the fastest time of each is kept")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))), flush=True)
        return

    _export(args.model)
    model = str(args.model)
    sizes = args.sizes or ([64] if args.quick else [64, 1024])
    plan: list[tuple[str, dict]] = [("warm-up (numba cache)", {"kind": "qdq", "samples": 8, "padded": False, "method": args.method})]
    for padded in (False, True):
        pad = "pad128" if padded else "ragged"
        for n in sizes:
            plan.append((f"fp32 inference {pad} n={n}", {"kind": "fp32", "samples": n, "padded": padded}))
            plan.append((f"fp32 no-spin {pad} n={n}", {"kind": "fp32", "samples": n, "padded": padded, "nospin": True}))
            plan.append((f"qdq {args.method} {pad} n={n}", {"kind": "qdq", "samples": n, "padded": padded, "method": args.method}))
            plan.append((f"qdq {args.method} all-tensors {pad} n={n}",
                         {"kind": "qdq", "samples": n, "padded": padded, "method": args.method, "scope": "all"}))
    for method in [] if args.no_reference else ["MinMax"] if args.quick else ["MinMax", "Entropy", "Percentile"]:
        plan.append((f"ort {method} pad128 n=64", {"kind": "ort", "samples": 64, "padded": True, "method": method}))

    results = {}
    tmp = tempfile.TemporaryDirectory(prefix="qdq-bench-")
    data: dict[tuple[int, bool], str] = {}
    for round_ in range(args.repeat):
        for label, spec in plan:
            if round_ and (label.startswith("warm-up") or spec["kind"] == "ort"):
                continue  # the reference runs once: minutes each
            key = (spec["samples"], spec["padded"])
            if key not in data:
                data[key] = str(_tokenize(*key, Path(tmp.name) / f"n{key[0]}_{'pad' if key[1] else 'ragged'}.npz"))
            spec["model"], spec["data"] = model, data[key]
            print(f"[{round_ + 1}/{args.repeat}] running {label} ...", file=sys.stderr, flush=True)
            r = _run(spec, args.timeout)
            r["spec"] = {k: v for k, v in spec.items() if k not in ("model", "data")}
            best = results.get(label)
            if best is None or ("seconds" in r and r["seconds"] < best.get("seconds", float("inf"))):
                if best is not None and "peak_rss_mb" in best:
                    r["peak_rss_mb"] = max(r.get("peak_rss_mb", 0), best["peak_rss_mb"])
                results[label] = r
            elif "peak_rss_mb" in r:
                best["peak_rss_mb"] = max(best.get("peak_rss_mb", 0), r["peak_rss_mb"])
    tmp.cleanup()
    _report(results, args.method, sizes)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _report(results: dict, method: str, sizes: list[int]) -> None:
    print(f"\n{'measurement':38s} {'seconds':>8s} {'peak RSS MB':>12s}  notes")
    for label, r in results.items():
        if label.startswith("warm-up"):
            continue
        notes = r.get("error", "")
        if "tensors" in r:
            notes = f"{r['tensors']} tensors" + (f", {r['channel_stats']} channel stats" if "channel_stats" in r else "")
        if "max_len" in r:
            notes += f" (max len {r['max_len']}, {r['tokens']} tokens)"
        sec = f"{r['seconds']:.1f}" if "seconds" in r else "-"
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        print(f"{label:38s} {sec:>8s} {rss:>12s}  {notes}")
    print()
    for pad in ("ragged", "pad128"):
        for n in sizes:
            fp32 = [results.get(f"fp32 {k} {pad} n={n}", {}).get("seconds") for k in ("inference", "no-spin")]
            fp32 = [t for t in fp32 if t]
            for scope in ("", "all-tensors "):
                ours = results.get(f"qdq {method} {scope}{pad} n={n}", {})
                if "seconds" in ours and fp32:
                    print(f"time ratio qdq {scope}/ fastest fp32 {pad} n={n}: {ours['seconds'] / min(fp32):.2f}x "
                          f"(target <= 1.5x)")
        for scope in ("", "all-tensors ") if len(sizes) > 1 else ():
            a = results.get(f"qdq {method} {scope}{pad} n={sizes[0]}", {})
            b = results.get(f"qdq {method} {scope}{pad} n={sizes[-1]}", {})
            if "peak_rss_mb" in a and "peak_rss_mb" in b:
                print(f"RSS growth qdq {scope}{pad} n={sizes[0]}->{sizes[-1]}: "
                      f"{100 * (b['peak_rss_mb'] / a['peak_rss_mb'] - 1):+.1f}% (target <= +10%, peak <= 1200 MB)")


if __name__ == "__main__":
    main()
