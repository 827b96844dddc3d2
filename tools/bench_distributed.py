"""Benchmark: the per-layer sensitivity search on MiniLM, in this process vs on 1 and 2 local Ray workers.

One run, side by side: MiniLM (``qdq export --model minilm``, or ``--model FILE``) calibrated once, then the
``without`` variant (every layer quantized but one) of the first ``--layers`` quantized layers, scored on
``--samples`` built-in sentences, by

- ``local``: this process, ONNX Runtime's default threads (today's ``qdq sensitivity``);
- ``local 1 thread``: this process, 1 ONNX Runtime thread;
- ``ray x1`` and ``ray x2``: a local Ray (``ray.init(num_cpus=2)``), 1 or 2 tasks in flight, 1 ORT thread each.

Every configuration must give the same scores as ``local`` (checked: the run fails otherwise). Prints a
markdown table with seconds and speed-ups; the machine's load average is printed with it.

    python tools/bench_distributed.py                       # ~2 min on 2 cores
    python tools/bench_distributed.py --layers 49 --samples 32
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _one_thread():  # noqa: ANN202
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return so


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="FP32 MiniLM ONNX (default: exported into a temp folder)")
    p.add_argument("--layers", type=int, default=12, help="quantized layers whose variant is scored")
    p.add_argument("--samples", type=int, default=16, help="built-in sentences scored per variant (batch 8)")
    args = p.parse_args(argv)

    import ray

    from calibration_data import open_data
    from converter.accuracy import Evaluator, quantized_layers, table_quantizer
    from converter.accuracy.sensitivity import score_variant
    from converter.calibrate import calibrate
    from converter.distributed import LocalExecutor, RayExecutor
    from converter.models import resolve_model
    from converter.quant.config import QuantConfig
    from runtime import Engine
    from runtime.cpu import cpu_int8

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from converter.export import export_hf

            model = export_hf(resolve_model("minilm"), Path(tmp) / "minilm.onnx").path
        with Engine.load(model) as eng:
            specs = eng.input_specs
        batches = list(open_data("builtin:text", specs, batch_size=8, num_samples=args.samples,
                                 model_dir=resolve_model("minilm")))
        table = calibrate(model, batches, progress=False)
        quantize_fn = table_quantizer(str(model), table)
        config = QuantConfig()
        names = tuple(n for n, _ in quantized_layers(quantize_fn(config), config.op_types))
        variants = [(n, "without") for n in names[:args.layers]]

        def context(session_options):  # noqa: ANN001, ANN202
            return quantize_fn, Evaluator(model, batches, session_options=session_options), config, names, "cosine"

        runs = []

        def timed(label: str, executor, ctx) -> None:  # noqa: ANN001
            t0 = time.perf_counter()
            scores = executor.map(score_variant, variants, context=ctx, label=lambda v: f"layer '{v[0]}'")
            runs.append((label, time.perf_counter() - t0, scores))
            print(f"{label}: {runs[-1][1]:.1f}s", file=sys.stderr)

        timed("local", LocalExecutor(), context(None))
        timed("local, 1 ORT thread", LocalExecutor(), context(_one_thread()))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            ctx = context(_one_thread())
            warm = RayExecutor(max_parallel=2)
            warm.map(score_variant, variants[:2], context=ctx)  # worker start-up and first fetch, not timed
            timed("ray x1 (1 task in flight, 1 ORT thread)", RayExecutor(max_parallel=1), ctx)
            timed("ray x2 (2 tasks in flight, 1 ORT thread each)", RayExecutor(max_parallel=2), ctx)
        finally:
            ray.shutdown()

    reference = runs[0][2]
    for label, _, scores in runs:
        if scores != reference:
            raise SystemExit(f"Error: {label} scores differ from the local executor's")
    base = runs[0][1]
    load = os.getloadavg()
    print(f"sensitivity search, MiniLM, {len(variants)} layer variants (without), {args.samples} sentences each; "
          f"CPU {cpu_int8().describe()}, {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"scores identical in every configuration")
    print("| executor | seconds | speed-up vs local |\n| --- | --- | --- |")
    for label, seconds, _ in runs:
        print(f"| {label} | {seconds:.1f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
