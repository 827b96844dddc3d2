"""Benchmark static INT8 quantization of all-MiniLM-L6-v2 against FP32 and ONNX Runtime's quantizers.

In one process, on the same data: FP32, ours (W8A8 for each ort-cpu CPU profile, --cpu vnni: 8-bit
weights, --cpu avx2: 7-bit weights; with and without SmoothQuant), onnxruntime
``quantize_static`` (QDQ, per-channel S8S8, MinMax and Entropy) and ``quantize_dynamic``
(per-channel), and NNCF's ONNX backend (transformer preset, in its own venv). Accuracy: cosine of
mean-pooled sentence embeddings vs FP32 on held-out sentences (``builtin:text-heldout``), with ONNX
Runtime's fused kernels on this CPU and with its fusions off (exact integer math: what a CPU whose
kernels do not saturate computes); speed: median latency at batch 1 and 8, sequence 128, ORT CPU with
``--threads`` intra-op threads, all models interleaved run by run so machine noise hits them alike.
Also the digits CNN: top-1 accuracy FP32 vs INT8.

    python tools/bench_quantize.py                 # exports MiniLM to a temp folder first
    python tools/bench_quantize.py --model m.onnx --runs 20 --skip-ort-static
    python tools/bench_quantize.py --model m.onnx --int8 m.int8.onnx --skip-ours --skip-ort --skip-digits
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
log = logging.getLogger("bench_quantize")


def _session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # Models are timed alternately: a session whose idle threads spin would steal the cores from the
    # one being timed (measured: FP32 looked 2.5x slower than when timed alone).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _mean_pooled(eng, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    out = []
    for f in batches:
        h = eng.run(f, ["last_hidden_state"])["last_hidden_state"]
        m = f["attention_mask"][..., None].astype(np.float32)
        out.append((h * m).sum(1) / m.sum(1))
    return np.concatenate(out)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _latency_feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(batch).integers(1000, 20000, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _timed(label: str, fn: Callable[[], object]) -> object:
    t = time.perf_counter()
    out = fn()
    log.info("%s: %.1fs", label, time.perf_counter() - t)
    return out


def _ort_reference(fp32: Path, work: Path, calib: list[dict[str, np.ndarray]], skip_static: bool) -> dict[str, Path]:
    """ONNX Runtime's own quantizers, configured as in the issue (QDQ, per-channel, S8S8)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "ort_pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    out: dict[str, Path] = {}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    if not skip_static:
        for label, method, ops in (("ort static MinMax", CalibrationMethod.MinMax, None),
                                   ("ort static MinMax MatMul", CalibrationMethod.MinMax, ["MatMul", "Gemm"]),
                                   ("ort static Entropy MatMul", CalibrationMethod.Entropy, ["MatMul", "Gemm"])):
            path = work / (label.replace(" ", "_") + ".onnx")
            _timed(label, lambda: quantize_static(
                str(pre), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                op_types_to_quantize=ops, extra_options={"ActivationSymmetric": True}))
            out[label] = path
    path = work / "ort_dynamic.onnx"
    _timed("ort dynamic", lambda: quantize_dynamic(str(pre), str(path), per_channel=True, weight_type=QuantType.QInt8))
    out["ort dynamic per-channel"] = path
    return out


def bench_minilm(args: argparse.Namespace, work: Path) -> list[dict[str, object]]:
    import onnxruntime as ort

    from calibration_data import open_data
    from converter.calib.config import CalibConfig
    from converter.calibrate import calibrate
    import onnx_ir as ir

    from converter.models import resolve_model
    from converter import pipeline
    from converter.quant.config import QuantConfig
    from converter.quantize import quantize, save_model
    from runtime import Engine

    model_dir = resolve_model("minilm")
    if args.model:
        fp32 = Path(args.model)
    else:
        from converter.export import export_hf

        fp32 = _timed("export", lambda: export_hf(model_dir, work / "minilm.onnx").path)
    inline = work / "fp32.onnx"  # one self-contained file for every tool
    onnx.save(onnx.load(str(fp32)), str(inline))
    with Engine.load(inline) as eng:
        specs = eng.input_specs
    calib = list(open_data("builtin:text", specs, batch_size=8, num_samples=args.calib_samples, model_dir=model_dir))
    held = list(open_data("builtin:text-heldout", specs, batch_size=8, num_samples=args.sentences, model_dir=model_dir))

    models: dict[str, Path] = {"fp32": inline}
    for path in args.int8 or []:
        models[f"given {Path(path).name}"] = Path(path)
    if not args.skip_ours:
        table = _timed("calibrate", lambda: calibrate(inline, calib, CalibConfig(method="minmax", symmetric=False),
                                                      progress=False))
        # the float graph after our cleanups alone (NaN guards, residual Sum): how much is not INT8
        cleaned = pipeline.preprocess(ir.load(inline), QuantConfig())
        models["fp32 + graph cleanups"] = save_model(ir.to_proto(cleaned), work / "fp32_cleaned.onnx")
        for label, cfg in (("ours W8A8 --cpu vnni", QuantConfig(cpu="vnni")),
                           ("ours W8A8 --cpu avx2", QuantConfig(cpu="avx2")),
                           ("ours W8A8 + SmoothQuant auto", QuantConfig(smoothquant="auto")),
                           ("ours W8A8 + SQ auto, float attention",
                            QuantConfig(smoothquant="auto", quantize_attention=False))):
            proto = _timed(label, lambda: quantize(inline, table, cfg, calib_data=calib))
            name = label.replace(" ", "_").replace("+", "").replace(",", "")
            models[label] = save_model(proto, work / f"{name}.onnx")
    # onnxruntime's histogram calibrators stack batches, so they get the same sentences padded to --seq
    if not args.skip_ort:
        padded = list(open_data("builtin:text", specs, batch_size=8, num_samples=args.calib_samples,
                                model_dir=model_dir, max_length=args.seq, pad_to_max_length=True))
        models.update(_ort_reference(inline, work, padded, args.skip_ort_static))
    if not args.skip_nncf:  # NNCF's ONNX backend in its own venv (tools/bench_cnn.py says how to make it)
        from bench_cnn import nncf

        padded = list(open_data("builtin:text", specs, batch_size=8, num_samples=args.calib_samples,
                                model_dir=model_dir, max_length=args.seq, pad_to_max_length=True))
        stacked = {k: np.concatenate([b[k] for b in padded]) for k in padded[0]}
        models.update({f"{k} (transformer preset)": v for k, v in nncf(inline, work, stacked, transformer=True).items()})

    so = _session_options(args.threads)
    engines = {k: Engine.load(v, session_options=so) for k, v in models.items()}
    ref = _mean_pooled(engines["fp32"], held)
    exact = _session_options(args.threads)
    exact.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rows = []
    for label, eng in engines.items():
        cos = _cosines(ref, _mean_pooled(eng, held))
        with Engine.load(models[label], session_options=exact) as plain:
            cos_exact = _cosines(ref, _mean_pooled(plain, held))
        rows.append({"model": label, "mean": float(cos.mean()), "min": float(cos.min()),
                     "exact": float(cos_exact.mean()), "size": models[label].stat().st_size / 1e6})
    for batch in (1, 8):
        feeds = _latency_feeds(batch, args.seq)
        times: dict[str, list[float]] = {k: [] for k in engines}
        for eng in engines.values():
            eng.run(feeds)
            eng.run(feeds)
        for _ in range(args.runs):
            for label, eng in engines.items():
                t = time.perf_counter()
                eng.run(feeds)
                times[label].append(time.perf_counter() - t)
        for row in rows:
            row[f"b{batch}"] = statistics.median(times[row["model"]]) * 1e3
    for eng in engines.values():
        eng.close()
    return rows


def bench_digits(args: argparse.Namespace, work: Path) -> list[tuple[str, float]]:
    from converter.calib.config import CalibConfig
    from converter.calibrate import calibrate
    from converter.export import export_module
    from converter.quant.config import QuantConfig
    from converter.quantize import quantize
    from converter.reference_models import digits_split, train_digits_cnn
    from runtime import Engine

    split = digits_split()
    net = train_digits_cnn(split)
    path = export_module(net, {"image": split.X_test[:4]}, work / "digits.onnx", output_names=["logits"]).path
    calib = [{"image": split.X_train[i : i + 32]} for i in range(0, 256, 32)]
    table = calibrate(path, calib, CalibConfig(symmetric=False), progress=False)
    rows = []
    for label, model in (("fp32", str(path)), ("ours W8A8", quantize(path, table, QuantConfig())),
                         ("ours W8A8 + SmoothQuant 0.5", quantize(path, table, QuantConfig(smoothquant=0.5)))):
        with Engine.load(model) as eng:
            logits = eng.run({"image": split.X_test})["logits"]
        rows.append((label, float((logits.argmax(-1) == split.y_test).mean())))
    return rows


def format_table(rows: list[dict[str, object]], threads: int, seq: int) -> str:
    base = next(r for r in rows if r["model"] == "fp32")
    dyn = next((r for r in rows if r["model"] == "ort dynamic per-channel"), None)
    head = ("| model | cos mean (fused) | cos min | cos mean (exact) | size MB | b1 ms | b1 x | b8 ms | b8 x "
            "| b8 vs ort dynamic |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        vs_dyn = f"{dyn['b8'] / r['b8']:.2f}x" if dyn else "-"
        lines.append(f"| {r['model']} | {r['mean']:.4f} | {r['min']:.4f} | {r['exact']:.4f} | {r['size']:.1f} | {r['b1']:.1f} | "
                     f"{base['b1'] / r['b1']:.2f}x | {r['b8']:.1f} | {base['b8'] / r['b8']:.2f}x | {vs_dyn} |")
    from runtime.cpu import cpu_int8

    return (f"all-MiniLM-L6-v2, seq {seq}, ORT CPU {threads} threads, median latency; CPU {cpu_int8().describe()}\n"
            + "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="FP32 MiniLM .onnx (default: export the built-in model)")
    parser.add_argument("--sentences", type=int, default=200, help="held-out sentences for accuracy")
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--runs", type=int, default=15, help="timed runs per model and batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--int8", action="append", help="also measure this INT8 model (repeatable)")
    parser.add_argument("--skip-ours", action="store_true", help="do not quantize here (use with --int8)")
    parser.add_argument("--skip-ort", action="store_true", help="leave out all onnxruntime quantizers")
    parser.add_argument("--skip-ort-static", action="store_true", help="leave out onnxruntime quantize_static")
    parser.add_argument("--skip-nncf", action="store_true", help="leave out NNCF (needs its own venv)")
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--work-dir", help="keep the models here (default: a temp folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch", "converter", "root"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = bench_minilm(args, work)
        print(format_table(rows, args.threads, args.seq))
        if not args.skip_digits:
            print("\ndigits CNN, top-1 accuracy on the test split")
            for label, acc in bench_digits(args, work):
                print(f"  {label:28s} {acc * 100:.2f}%")


if __name__ == "__main__":
    main()
