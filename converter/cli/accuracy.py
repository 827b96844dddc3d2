"""`qdq sensitivity` and the `--target-accuracy` step of `qdq quantize`: which layers cost accuracy."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .data_options import data_options, open_model_data
from .image_options import image_options
from .executor_options import executor_options, open_executor
from .outputs import check_outputs


def latency_probe(batch: int = 8, sequence: int = 128, runs: int = 10):  # noqa: ANN201
    """A function timing a model (p50 ms, synthetic batch) so each float decision shows its speed cost."""
    from runtime import Engine
    from runtime.bench import benchmark

    def probe(model) -> float:  # noqa: ANN001
        with Engine.load(model) as eng:
            return benchmark(eng, batch=batch, sequence=sequence, runs=runs, warmup=2).p50

    return probe


def split_data(batches: list[dict], eval_batches: list[dict] | None) -> tuple[list[dict], list[dict]]:
    """Calibration/sensitivity batches and held-out batches: --eval-data, else the last quarter of --data."""
    if eval_batches:
        return batches, eval_batches
    if len(batches) < 2:
        raise click.ClickException("need at least 2 batches of --data to hold some out (or give --eval-data)")
    cut = max(1, len(batches) * 3 // 4)
    return batches[:cut], batches[cut:]


def echo_mixed_precision(result) -> None:  # noqa: ANN001
    t = result.target
    lat = f", {result.start_latency_ms:.2f} ms" if result.start_latency_ms else ""
    click.echo(f"all layers INT8: {t.metric} {result.start_score:.5f}{lat}")
    for i, d in enumerate(result.decisions, 1):
        lat = f"  {d.latency_ms:8.2f} ms" if d.latency_ms else ""
        click.echo(f"  {i:>2}. float {d.node:<40} {t.metric} {d.score:.5f}{lat}")
    state = "reached" if result.reached else "NOT reached"
    click.echo(f"target {t.metric}={t.value} {state} with {len(result.excluded)} layer(s) in float "
               f"({result.seconds:.0f}s)")


@click.command("sensitivity")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--calib", type=click.Path(dir_okay=False, path_type=Path), help="Calibration table for MODEL.")
@data_options(default_samples=64)
@image_options
@click.option("--metric", type=click.Choice(["cosine", "min_cosine", "snr", "top1"]), default="cosine", show_default=True)
@click.option("--mode", "modes", type=click.Choice(["without", "alone"]), multiple=True,
              help="without: un-quantize each layer alone; alone: quantize only it. Default: both.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON.")
@executor_options("the per-layer variants (and the calibration without --calib)")
def command(model: Path, calib: Path | None, data: str, num_samples: int | None, batch_size: int, max_length: int,
            tokenizer: str | None, image, metric: str, modes: tuple[str, ...], json_path: Path | None, executor: str,
            ray_address: str | None) -> None:
    """Output error caused by each quantized layer of MODEL (FP32), from one calibration pass."""
    from converter.accuracy import Evaluator, analyze, table_quantizer
    from converter.calib.table import CalibrationTable
    from converter.calibrate import calibrate
    from converter.quant.config import QuantConfig
    from runtime import Engine
    from runtime.atomic import atomic_write

    from .progress import bar, on_terminal

    check_outputs([(json_path, None)], [model, calib, data])  # before the long analysis
    with Engine.load(model) as eng:
        specs = eng.input_specs
    batches = list(open_model_data(model, specs, data, num_samples, batch_size, max_length, tokenizer, image))
    with open_executor(executor, ray_address) as ex:
        table = (CalibrationTable.load(calib) if calib
                 else calibrate(model, batches, progress=on_terminal(), executor=ex))
        with bar(None, "sensitivity", unit="variant") as shown:
            def step(done: int, total: int) -> None:  # few, slow steps: draw each (tqdm skips updates within 0.1 s)
                shown.total = total
                shown.update(done - shown.n)
                shown.refresh()

            report = analyze(table_quantizer(model, table), Evaluator(model, batches), QuantConfig(), metric,
                             modes=modes or ("without", "alone"), progress=step, executor=ex)
    click.echo(f"all layers INT8: {metric} {report.full:.5f}   ({len(report.layers)} layers, {report.seconds:.0f}s)")
    click.echo(f"{'layer':<44} {'op':<8} {'without it':>11} {'it alone':>10}")
    for layer in report.ranked():
        w = f"{layer.without:.5f}" if layer.without is not None else "-"
        a = f"{layer.alone:.5f}" if layer.alone is not None else "-"
        click.echo(f"{layer.node[:44]:<44} {layer.op_type:<8} {w:>11} {a:>10}")
    if json_path:
        text = json.dumps(report.to_dict(), indent=1)
        atomic_write(json_path, lambda tmp: tmp.write_text(text))
        click.echo(f"wrote {json_path}")
