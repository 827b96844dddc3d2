"""Helpers for tools/gpu_check.sh: make the BERT-base-shaped model, then load, compare and time each artifact.

    python tools/gpu_check.py model --work DIR [--layers 12 --hidden 768 --heads 12]
    python tools/gpu_check.py run --work DIR --batches 1 8 32 --sequence 128 --runs 50 [--gpu]

``run`` loads every artifact the script built, prints the execution provider that really runs it (a row that
fell back to the CPU says CPU-FALLBACK), compares its outputs with the FP32 model on ONNX Runtime's CPU
provider (padded sentences included) and prints median latency per batch with the speed-up over the FP32
model on the same provider.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def make_model(work: Path, layers: int, hidden: int, heads: int) -> Path:
    """A random-weight BERT of the given shape, with the built-in MiniLM's (bert-base-uncased) tokenizer."""
    import torch
    import transformers

    from converter.models import resolve_model

    folder = work / f"bert-l{layers}-h{hidden}"
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                     intermediate_size=4 * hidden)
    transformers.BertModel(config).eval().save_pretrained(folder)
    tokenizer = resolve_model("minilm")
    for name in _TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copy(tokenizer / name, folder / name)
    return folder


def _feeds(specs, batch: int, sequence: int) -> dict[str, np.ndarray]:
    from runtime.synthetic import synthetic_feeds

    feeds = synthetic_feeds(specs, batch=batch, sequence=sequence, seed=1)
    for name, arr in feeds.items():
        if "mask" in name and arr.ndim == 2 and batch > 1:
            arr[1, sequence // 2:] = 0  # a padded sentence
    return feeds


def _running(eng) -> str:  # noqa: ANN001
    session = getattr(eng, "session", None)
    return session.get_providers()[0] if session is not None else "TensorRT"


def _built(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(p.name.endswith(".manifest.json") for p in path.iterdir()))


def run(work: Path, batches: list[int], sequence: int, runs: int, gpu: bool) -> int:
    from runtime import Engine
    from runtime.bench import benchmark

    source = work / "bert.onnx"
    cuda = "CUDAExecutionProvider"
    # (label, artifact, providers, allow CPU fallback, the provider the row is for)
    rows = [("FP32 export (no fusions)", source, ["cuda"] if gpu else ["cpu"], False, cuda),
            ("ort-cuda --precision fp32", work / "fp32", None, not gpu, cuda),
            ("ort-cuda (fp16)", work / "fp16", None, not gpu, cuda),
            ("ort-trt INT8 (+fp16)", work / "trt", None, False, "TensorrtExecutionProvider"),
            ("tensorrt INT8 engine", work / "engine", None, False, "TensorRT")]
    with Engine.load(source, providers=["cpu"]) as ref:
        check = _feeds(ref.input_specs, 4, sequence)
        want = ref.run(check)
    print(f"reference: {source.name} on CPUExecutionProvider, FP32, 4 sentences of {sequence} tokens (one padded)")
    if not gpu:
        print("CPU-FALLBACK = the row is for a GPU provider but runs on the CPU provider (--allow-fallback)")
    header = f"{'artifact':27} {'runs on':34} {'max|diff|':>9} {'cosine':>9} " + " ".join(
        f"{'b' + str(b) + ' ms':>9}" for b in batches) + "  speed-up vs FP32 export (same provider)"
    print(header)
    print("-" * len(header))
    base: dict[int, float] = {}
    for label, path, providers, fallback, expected in rows:
        if not _built(path):
            print(f"{label:27} not built")
            continue
        try:
            eng = Engine.load(path, providers=providers, allow_fallback=fallback)
        except Exception as exc:  # the one-line error Engine.load raises is the row's result
            print(f"{label:27} NOT LOADED: {exc}")
            continue
        with eng:
            running = _running(eng)
            tag = running if running == expected else f"{running} CPU-FALLBACK"
            got = eng.run(check)
            name = next(iter(want))
            w, g = want[name].reshape(len(want[name]), -1), got[name].reshape(len(got[name]), -1).astype(np.float64)
            diff = float(np.abs(w - g).max())
            cos = float(np.mean(np.sum(w * g, 1) / (np.linalg.norm(w, axis=1) * np.linalg.norm(g, axis=1))))
            times = {b: benchmark(eng, batch=b, sequence=sequence, runs=runs, warmup=min(5, max(1, runs // 2))).p50
                     for b in batches}
        if label.startswith("FP32 export"):
            base = times
        ratio = " ".join(f"{base[b] / t:.2f}x" for b, t in times.items() if b in base)
        print(f"{label:27} {tag:34} {diff:9.2e} {cos:9.6f} " + " ".join(f"{times[b]:9.2f}" for b in batches)
              + f"  {ratio}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model")
    m.add_argument("--work", type=Path, required=True)
    m.add_argument("--layers", type=int, default=12)
    m.add_argument("--hidden", type=int, default=768)
    m.add_argument("--heads", type=int, default=12)
    r = sub.add_parser("run")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    r.add_argument("--sequence", type=int, default=128)
    r.add_argument("--runs", type=int, default=50)
    r.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    logging.getLogger("runtime.ort").setLevel(logging.ERROR)  # the table labels every fallback
    if args.cmd == "model":
        print(make_model(args.work, args.layers, args.hidden, args.heads))
        return 0
    return run(args.work, args.batches, args.sequence, args.runs, args.gpu)


if __name__ == "__main__":
    sys.exit(main())
