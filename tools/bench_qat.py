"""QAT benchmark: does training with quantization in the loop recover what PTQ loses?

    nice python tools/bench_qat.py                      # digits CNN W4A8, then the reference LM at INT4
    nice python tools/bench_qat.py --no-lm --steps 300

Digits CNN (sklearn digits, 449 held-out images), all rows from one run and one FP32 model:
FP32; PTQ W4A8 = our fake-quant with scales initialised from the calibration table of the FP32
ONNX (per-channel abs-max weights, table ranges for activations) and no training; QAT (LSQ: weights
and scales trained) and PEQA (integer weights frozen, scales trained), both distilled from the FP32
model's logits on the training images (labels unused). Every quantized row is exported to QDQ ONNX
and its accuracy measured by ONNX Runtime; the torch fake-quant accuracy is shown beside it. The
PTQ pipeline's own W8A8 ONNX (converter.quantize, 8-bit weights only) is a reference row.

Reference LM (tools/reference_lm, if present): held-out perplexity (converter.llm.data, 128-token
windows, the protocol of converter.llm.perplexity) of FP32, INT4 RTN per output channel (= PEQA's
starting point), and PEQA INT4 after distillation on training-text windows; the PEQA model is
exported (weight-only QDQ) and its perplexity re-measured by ONNX Runtime. ``--lm-g128`` adds the
INT4 g128 RTN of converter.llm (a finer grid: one scale per 128 weights) for reference.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from converter.qat import (  # noqa: E402
    QATConfig, TrainConfig, distillation_loss, export_qat, init_weight_scales, initialize, quantize_model, to_peqa,
    train,
)
from converter.qat.pipeline import epochs  # noqa: E402
from runtime import Engine  # noqa: E402

log = logging.getLogger("bench_qat")
REFERENCE_LM = Path(__file__).resolve().parent / "reference_lm"


def _digits_forward(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return model(torch.from_numpy(batch["image"]))


def _torch_acc(model: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(X)).numpy().argmax(-1) == y).mean())


def _onnx_acc(path: Path, X: np.ndarray, y: np.ndarray) -> float:
    with Engine.load(path) as eng:
        return float((eng.run({"image": X})["logits"].argmax(-1) == y).mean())


def bench_digits(args: argparse.Namespace, tmp: Path) -> list[dict]:
    from converter.calibrate import calibrate
    from converter.export import export_module
    from converter.quantize import quantize_file
    from converter.reference_models import digits_split, train_digits_cnn

    split = digits_split()
    X, y = split.X_test, split.y_test
    fp32 = train_digits_cnn(split, epochs=15, seed=args.seed)
    fp32_onnx = export_module(fp32, {"image": X[:4]}, tmp / "digits.onnx", output_names=["logits"]).path
    train_batches = [{"image": split.X_train[i:i + 64]} for i in range(0, len(split.X_train) - 63, 64)]
    table = calibrate(fp32_onnx, train_batches[:8], progress=False)
    rows = [{"model": "FP32", "torch": _torch_acc(fp32, X, y), "onnx": _onnx_acc(fp32_onnx, X, y), "images": len(y)}]

    w8a8 = quantize_file(fp32_onnx, tmp / "digits.ptq-w8a8.onnx", table)
    rows.append({"model": "PTQ W8A8 (converter.quantize)", "torch": None, "onnx": _onnx_acc(w8a8, X, y)})

    config = QATConfig(weight_bits=args.weight_bits, act_bits=8)
    tag = f"W{args.weight_bits}A8"
    ptq = quantize_model(fp32, config)
    initialize(ptq, table=table, onnx_path=fp32_onnx)
    loss = distillation_loss(fp32, _digits_forward, temperature=args.temperature)
    variants = [(f"PTQ {tag} (init scales, no training)", ptq, None)]
    for name, peqa in ((f"QAT {tag} (LSQ)", False), (f"PEQA {tag} (scales only)", True)):
        model = copy.deepcopy(ptq)
        if peqa:
            to_peqa(model)
        t0 = time.perf_counter()
        train(model, loss, epochs(train_batches, args.seed),
              TrainConfig(steps=args.steps, lr=args.peqa_lr if peqa else args.lr, seed=args.seed, progress=args.progress))
        variants.append((name, model, time.perf_counter() - t0))
    for name, model, seconds in variants:
        path = tmp / f"digits.{len(rows)}.onnx"
        res = export_qat(model, {"image": X[:4]}, path, output_names=["logits"], check_inputs={"image": X})
        rows.append({"model": name, "torch": _torch_acc(model, X, y), "onnx": _onnx_acc(path, X, y),
                     "train_s": seconds, "export_max_abs_diff": res.max_abs_diff["logits"]})
    return rows


def _perplexity(model: torch.nn.Module, stream: np.ndarray, context: int = 128, batch: int = 8) -> float:
    """converter.llm.perplexity's protocol in torch: windows of context+1 tokens every context tokens."""
    rows = [stream[s:s + context + 1] for s in range(0, len(stream) - 1, context)]
    full = [r for r in rows if len(r) == context + 1]
    groups = [full[i:i + batch] for i in range(0, len(full), batch)] + [[r] for r in rows if len(r) != context + 1]
    total, count = 0.0, 0
    with torch.no_grad():
        for group in groups:
            ids = torch.from_numpy(np.stack(group))
            logits = model(ids[:, :-1], torch.ones_like(ids[:, :-1])).double()
            total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
            count += ids[:, 1:].numel()
    return math.exp(total / count)


def bench_lm(args: argparse.Namespace, tmp: Path) -> list[dict]:
    from converter.llm.data import heldout_text, training_text
    from converter.llm.feeds import encode_text, load_tokenizer
    from converter.llm.perplexity import stream_perplexity
    from converter.qat.sources import load_source

    source = load_source(REFERENCE_LM)
    tok = load_tokenizer(str(REFERENCE_LM))
    held, trn = encode_text(tok, heldout_text()), encode_text(tok, training_text())
    rows = [{"model": "FP32", "ppl": _perplexity(source.module, held)}]

    rtn = quantize_model(source.module, QATConfig(weight_bits=4, act_bits=None))
    init_weight_scales(rtn)
    rows.append({"model": "INT4 RTN per-channel (PTQ, no training)", "ppl": _perplexity(rtn, held)})

    peqa = to_peqa(copy.deepcopy(rtn))

    def windows(epoch: int) -> list[dict]:
        rng = np.random.default_rng([args.seed, epoch])
        out = []
        for _ in range(64):
            ids = np.stack([trn[s:s + 128] for s in rng.integers(0, len(trn) - 129, args.lm_batch)])
            out.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
        return out

    t0 = time.perf_counter()
    train(peqa, distillation_loss(source.module, source.forward), windows,
          TrainConfig(steps=args.lm_steps, lr=args.peqa_lr, seed=args.seed, progress=args.progress))
    seconds = time.perf_counter() - t0
    path = tmp / "lm.peqa.onnx"
    ids = held[None, :64]
    export_qat(peqa, {"input_ids": ids, "attention_mask": np.ones_like(ids)}, path, output_names=["logits"],
               dynamic_axes=source.dynamic_axes, metadata=source.metadata)
    with Engine.load(path) as eng:
        ort_ppl = stream_perplexity(eng, held, 128).perplexity
    rows.append({"model": "INT4 PEQA per-channel (scales trained)", "ppl": _perplexity(peqa, held),
                 "onnx_ppl": ort_ppl, "train_s": seconds})
    if args.lm_g128:
        from converter.llm.config import WeightOnlyConfig
        from converter.llm.export import export_causal_lm
        from converter.llm.weight_only import quantize_weights

        fp32_onnx = export_causal_lm(REFERENCE_LM, tmp / "lm.onnx").path
        q = quantize_weights(fp32_onnx, tmp / "lm.rtn-g128.onnx", WeightOnlyConfig(bits=4, group_size=128)).path
        with Engine.load(q) as eng:
            rows.append({"model": "INT4 RTN g128 (converter.llm, reference)", "ppl": None,
                         "onnx_ppl": stream_perplexity(eng, held, 128).perplexity})
    return rows


def _fmt(v: float | None, spec: str) -> str:
    width = int("".join(c for c in spec.split(".")[0] if c.isdigit()) or 0)
    return f"{'-':>{width}}" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weight-bits", type=int, default=4)
    p.add_argument("--steps", type=int, default=300, help="digits QAT/PEQA steps (batch 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="LSQ learning rate")
    p.add_argument("--peqa-lr", type=float, default=1e-2, help="PEQA learning rate (relative step of the scales)")
    p.add_argument("--temperature", type=float, default=2.0, help="digits distillation temperature")
    p.add_argument("--lm-steps", type=int, default=100)
    p.add_argument("--lm-batch", type=int, default=8, help="128-token windows per LM step")
    p.add_argument("--lm-g128", action="store_true", help="also converter.llm's INT4 g128 RTN (ONNX export)")
    p.add_argument("--no-lm", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine may be shared)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="training progress bars")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results["digits"] = bench_digits(args, tmp)
        print(f"\ndigits CNN, top-1 on {results['digits'][0]['images']} held-out images (W{args.weight_bits}A8, {args.steps} steps)")
        print(f"{'model':42} {'torch':>7} {'onnx':>7} {'train s':>8}")
        for r in results["digits"]:
            print(f"{r['model']:42} {_fmt(r['torch'], '7.2%')} {_fmt(r['onnx'], '7.2%')} "
                  f"{_fmt(r.get('train_s'), '8.1f')}")
        if not args.no_lm and (REFERENCE_LM / "config.json").is_file():
            results["lm"] = bench_lm(args, tmp)
            print(f"\nreference LM, held-out perplexity (INT4 weights, {args.lm_steps} PEQA steps)")
            print(f"{'model':42} {'torch':>8} {'onnx':>8} {'train s':>8}")
            for r in results["lm"]:
                print(f"{r['model']:42} {_fmt(r['ppl'], '8.2f')} {_fmt(r.get('onnx_ppl'), '8.2f')} "
                      f"{_fmt(r.get('train_s'), '8.1f')}")
    if args.json:
        from runtime.atomic import atomic_write

        atomic_write(args.json, lambda t: t.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                                                   **results}, indent=1)))


if __name__ == "__main__":
    main()
