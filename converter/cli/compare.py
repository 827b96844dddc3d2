"""`qdq compare`: how far a quantized model is from its FP32 reference, overall and per layer."""
from __future__ import annotations

import json
import math
from pathlib import Path

import click

from .data_options import data_options, open_model_data
from .image_options import image_options
from .outputs import check_outputs, force_option


def _fmt(v: float | None, spec: str = ".4f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


@click.command("compare")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@data_options(default_samples=64)
@image_options
@click.option("--per-layer", is_flag=True, help="Also compare every quantized tensor with its FP32 twin.")
@click.option("--top", type=int, default=15, show_default=True, help="Rows of the per-layer table.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write an HTML page with plots (implies --per-layer).")
@force_option
def command(reference: Path, candidate: Path, data: str, num_samples: int | None, batch_size: int, max_length: int,
            tokenizer: str | None, image, per_layer: bool, top: int, json_path: Path | None, html_path: Path | None, force: bool) -> None:
    """Compare CANDIDATE (quantized) with REFERENCE (FP32) on --data: cosine, SNR, errors, top-1."""
    from converter.compare import compare_models
    from runtime import Engine
    from runtime.atomic import atomic_write

    check_outputs([(json_path, "json"), (html_path, "html")], [reference, candidate, data], force)
    with Engine.load(reference) as eng:
        specs = eng.input_specs
    feeds = open_model_data(reference, specs, data, num_samples, batch_size, max_length, tokenizer, image)
    per_layer = per_layer or html_path is not None
    report = compare_models(reference, candidate, feeds, per_layer=per_layer)
    click.echo(f"{report.samples} samples, {report.seconds:.1f}s")
    click.echo(f"{'output':<28} {'mean cos':>9} {'min cos':>9} {'SNR dB':>8} {'max abs':>9} {'mean abs':>9} {'top-1':>7}")
    for name, s in report.outputs.items():
        click.echo(f"{name[:28]:<28} {_fmt(s.mean_cosine):>9} {_fmt(s.min_cosine):>9} {_fmt(s.snr_db, '.1f'):>8} "
                   f"{_fmt(s.max_abs_err, '.4g'):>9} {_fmt(s.mean_abs_err, '.4g'):>9} {_fmt(s.top1_agreement, '.3f'):>7}")
    if per_layer:
        click.echo(f"\nper layer, worst first ({len(report.layers)} quantized tensors):")
        click.echo(f"{'tensor':<40} {'consumers':<16} {'SNR dB':>8} {'local dB':>9} {'mean cos':>9}")
        for layer in report.worst_layers()[:top]:
            click.echo(f"{layer.pair.float_name[:40]:<40} {','.join(layer.pair.consumer_ops)[:16]:<16} "
                       f"{_fmt(layer.stats.snr_db, '.1f'):>8} {_fmt(layer.local.snr_db, '.1f'):>9} {_fmt(layer.stats.mean_cosine):>9}")
    if json_path:
        text = json.dumps(report.to_dict(), indent=1, default=lambda o: None)
        atomic_write(json_path, lambda tmp: tmp.write_text(text))
        click.echo(f"wrote {json_path}")
    if html_path:
        from converter.compare.html import write_html

        write_html(report, html_path)
        click.echo(f"wrote {html_path}")
