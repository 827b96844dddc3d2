"""`qdq run` and `qdq bench`: execute any model or engine the runtime can load."""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from .outputs import check_outputs, force_option

_PROVIDERS = click.option("--provider", "providers", multiple=True,
                          help="Execution provider: cpu (default), cuda, tensorrt. Repeat to give ONNX Runtime "
                               "further providers for the ops the first cannot run.")
_FALLBACK = click.option("--allow-fallback", is_flag=True,
                         help="Run even when ONNX Runtime could not start the first provider and fell back to "
                              "another (default: a one-line error naming what to install).")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise click.ClickException(f"input file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if isinstance(data, np.ndarray):
                raise click.ClickException(f"{path} holds a single array; save feeds as .npz keyed by input name")
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"{path} is not a .npz file: {exc}") from None


@click.command("run")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--input", "-i", "input_path", type=click.Path(path_type=Path), help=".npz file keyed by input name.")
@click.option("--synthetic", is_flag=True, help="Run on synthetic inputs built from the input specs.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch for --synthetic.")
@click.option("--sequence", type=click.IntRange(min=1), default=128, show_default=True,
              help="Sequence length for --synthetic.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Save outputs as .npz.")
@_PROVIDERS
@_FALLBACK
@force_option
def run_command(model: Path, input_path: Path | None, synthetic: bool, batch: int, sequence: int,
                output: Path | None, providers: tuple[str, ...], allow_fallback: bool, force: bool) -> None:
    """Run MODEL once on --input feeds (or --synthetic ones) and print the outputs."""
    from runtime import Engine, synthetic_feeds
    from runtime.atomic import atomic_save_npz

    if input_path is None and not synthetic:
        raise click.ClickException("give --input FEEDS.npz or --synthetic")
    check_outputs([(output, "npz")], [model, input_path], force)
    with Engine.load(model, providers=providers or None, allow_fallback=allow_fallback) as eng:
        feeds = _load_npz(input_path) if input_path else synthetic_feeds(eng.input_specs, batch, sequence)
        outputs = eng.run(feeds)
    for name, arr in outputs.items():
        stats = f"min {arr.min():.4g} max {arr.max():.4g} mean {arr.mean():.4g}" if arr.size and arr.dtype.kind == "f" else ""
        click.echo(f"{name}: {arr.dtype.name}{list(arr.shape)} {stats}")
    if output:
        atomic_save_npz(output, outputs)
        click.echo(f"wrote {output}")


@click.command("bench")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True,
              help="Batch size; repeat for several (default 1). A model with a fixed batch runs only that one.")
@click.option("--sequence", type=click.IntRange(min=1), default=128, show_default=True,
              help="Length of dynamic non-batch axes.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, help="ONNX Runtime intra-op threads (0 = all cores).")
@click.option("--baseline", type=click.Path(path_type=Path),
              help="Also time this model (e.g. the FP32 original), alternating runs on the same inputs, and print the speed-up.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@_PROVIDERS
@_FALLBACK
def bench_command(model: Path, batches: tuple[int, ...], sequence: int, runs: int, warmup: int, threads: int,
                  baseline: Path | None, as_json: bool, providers: tuple[str, ...], allow_fallback: bool) -> None:
    """Measure latency (p50/p90) and throughput on synthetic inputs.

    MODEL is a model file, a build manifest, or a `qdq build` output folder holding one artifact.
    """
    import onnxruntime as ort

    from runtime import Engine
    from runtime.bench import benchmark, benchmark_interleaved, check_batch

    from .progress import bar

    def load(path: Path) -> Engine:
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if baseline is not None:  # alternating sessions: idle spinning threads would steal the timed one's cores
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return Engine.load(path, providers=providers or None, session_options=opts, allow_fallback=allow_fallback)

    results, base = [], []
    with load(model) as eng:
        for b in batches or (1,):  # refuse a batch the model cannot take before timing anything
            check_batch(eng.input_specs, b)
        if baseline is None:
            for b in batches or (1,):
                with bar(runs, f"batch {b}", unit="run") as progress:
                    results.append(benchmark(eng, batch=b, sequence=sequence, runs=runs, warmup=warmup,
                                             on_run=progress.update))
                if not as_json:
                    click.echo(results[-1].line())
        else:
            with load(baseline) as base_eng:
                for b in batches or (1,):
                    with bar(runs, f"batch {b} (model and baseline)", unit="run") as progress:
                        r_base, r = benchmark_interleaved([base_eng, eng], batch=b, sequence=sequence, runs=runs,
                                                          warmup=warmup, on_run=progress.update)
                    base.append(r_base)
                    results.append(r)
                    if not as_json:
                        click.echo(f"baseline  {r_base.line()}")
                        click.echo(f"model     {r.line()}")
    if as_json:
        rows = [r.to_dict() for r in results]
        if base:
            for row, b in zip(rows, base):
                row["baseline_p50_ms"], row["speedup"] = b.p50, b.p50 / row["p50_ms"]
        click.echo(json.dumps(rows, indent=1))
    elif base:
        for r, b in zip(results, base):
            click.echo(f"speed-up batch {r.batch}: {b.p50 / r.p50:.2f}x ({b.p50:.2f} ms -> {r.p50:.2f} ms)")


commands = [run_command, bench_command]
