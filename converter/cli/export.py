"""`qdq export`: a Hugging Face folder (or built-in model name) to ONNX."""
from __future__ import annotations

from pathlib import Path

import click

from converter.models import DEFAULT_MODEL


@click.command("export")
@click.option("--model", "-m", "model", default=DEFAULT_MODEL, show_default=True,
              help="Built-in model name (minilm) or a local Hugging Face model folder.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .onnx file.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 20).")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "legacy"]), default="auto", show_default=True,
              help="auto: torch.export-based (dynamo), falling back to the legacy TorchScript exporter if it fails.")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="Max abs difference allowed vs the framework, relative to each output's largest magnitude (if > 1).")
@click.option("--no-check", is_flag=True, help="Skip comparing ONNX Runtime's outputs with the framework's.")
def command(model: str, output: Path, opset: int | None, exporter: str, atol: float, no_check: bool) -> None:
    """Export a model to ONNX with dynamic batch and sequence axes, checked against PyTorch."""
    from converter.export import export_hf
    from converter.inspect import summarize

    from .progress import stage

    with stage(f"exporting {model}"):
        result = export_hf(model, output, opset=opset, exporter=exporter, check=not no_check, atol=atol)
    click.echo(f"wrote {result.path} in {result.seconds:.1f}s (opset {result.opset})")
    for name, diff in result.max_abs_diff.items():
        click.echo(f"  max abs diff vs torch  {name}: {diff:.3g}")
    from .inspect import print_summary

    print_summary(summarize(result.path))
