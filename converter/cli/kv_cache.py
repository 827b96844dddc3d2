"""`qdq quantize-kv`: an exported LM's KV cache stored in int8 (converter.llm.kv_int8)."""
from __future__ import annotations

from pathlib import Path

import click

from .outputs import check_outputs, force_option


@click.command("quantize-kv")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .onnx file.")
@force_option
def quantize_kv_cmd(model: Path, output: Path, force: bool) -> None:
    """INT8 KV cache: past/present keys and values in int8 with per-token, per-head scales (3.8x smaller cache)."""
    from converter.llm.kv_int8 import quantize_kv_cache

    check_outputs([(output, "onnx")], [model], force)
    result = quantize_kv_cache(model, output)
    click.echo(f"wrote {result.path}: {result.pasts} past inputs and {result.presents} present outputs in int8 "
               "(+ per-token scales)")


command = quantize_kv_cmd
