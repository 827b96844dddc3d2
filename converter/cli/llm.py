"""`qdq export-lm`, `qdq quantize-weights`, `qdq perplexity`: causal LMs with a KV cache, weight-only INT4/INT8."""
from __future__ import annotations

from pathlib import Path

import click

from .outputs import check_outputs, force_option


def _read_text(data: str) -> str:
    """A text file path, or a shipped sample set as ``builtin:NAME``."""
    if data.startswith("builtin:"):
        from calibration_data.builtin import builtin_path

        path = builtin_path(data)
    else:
        path = Path(data)
    if not path.is_file():
        raise click.ClickException(f"text file not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise click.ClickException(f"{path} is not a UTF-8 text file") from None


@click.command("export-lm")
@click.option("--model", "-m", required=True,
              help="Local Hugging Face causal-LM folder (Llama, GPT-2, Qwen, ...) or the built-in smollm2.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .onnx file.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 20).")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="Max abs difference allowed vs torch, relative to each output's largest magnitude (if > 1).")
@click.option("--no-check", is_flag=True, help="Skip comparing ONNX Runtime with torch.")
def export_lm(model: str, output: Path, opset: int | None, atol: float, no_check: bool) -> None:
    """Export a causal LM with past key/values as inputs and outputs (dynamic batch, sequence, past)."""
    from converter.llm.export import export_causal_lm

    check_outputs([(output, None)], [model])
    result = export_causal_lm(model, output, opset=opset, check=not no_check, atol=atol)
    click.echo(f"wrote {result.path} in {result.seconds:.1f}s (opset {result.opset}, max abs diff vs torch "
               f"{result.worst_diff:.3g}, {result.worst_relative_diff:.2g} of the output's scale)")


def weight_options(fn):  # noqa: ANN001, ANN201 - click decorator
    """The weight-only options, for `qdq quantize-weights` and for merging into `qdq quantize`."""
    opts = [
        click.option("--weights", "bits", type=click.Choice(["int4", "int8"]), default="int4", show_default=True,
                     help="Weight type."),
        click.option("--group-size", type=int, default=128, show_default=True,
                     help="Weights per scale along K (power of two >= 16; a last partial group is padded)."),
        click.option("--algo", type=click.Choice(["rtn", "gptq"]), default="rtn", show_default=True,
                     help="Round-to-nearest, or second-order GPTQ (needs --data)."),
        click.option("--act-order/--no-act-order", default=None,
                     help="GPTQ: quantize columns by decreasing Hessian diagonal (default for --algo gptq)."),
        click.option("--asymmetric", is_flag=True, help="One zero point per group (default: symmetric)."),
        click.option("--hera", is_flag=True,
                     help="Refine the levels by heuristic element replacement against the calibration Hessian "
                          "(after RTN or GPTQ; needs --data)."),
        click.option("--damp", type=float, default=0.01, show_default=True, help="GPTQ damping (fraction of mean diag H)."),
        click.option("--format", "fmt", type=click.Choice(["matmulnbits", "qdq"]), default="matmulnbits",
                     show_default=True, help="com.microsoft MatMulNBits, or opset-21 block-wise DequantizeLinear."),
        click.option("--dynamic-activations", is_flag=True,
                     help="ZeroQuant-style: int8 activations quantized per token and block at run time "
                          "(MatMulNBits accuracy_level=4)."),
        click.option("--exclude", multiple=True, help="MatMul node/output/weight name to keep in float (repeatable)."),
        click.option("--data", "-d", default=None, help="Calibration text (.txt or builtin:corpus) for GPTQ."),
        click.option("--num-samples", type=int, default=64, show_default=True, help="Calibration windows for GPTQ."),
        click.option("--max-length", type=int, default=128, show_default=True, help="Tokens per calibration window."),
        click.option("--tokenizer", default=None, help="Tokenizer folder (default: the folder the model was exported from)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def quantize_weights_api(model: Path, output: Path, *, bits: str, group_size: int, algo: str, act_order: bool | None,
                         asymmetric: bool, hera: bool = False, damp: float, fmt: str, dynamic_activations: bool, exclude: tuple[str, ...],
                         data: str | None, num_samples: int, max_length: int, tokenizer: str | None):  # -> WeightOnlyResult
    """Run weight-only quantization from CLI option values (callable from `qdq quantize`)."""
    from converter.llm.config import WeightOnlyConfig, WeightQuantError
    from converter.llm.weight_only import lm_calibration, quantize_weights

    try:
        config = WeightOnlyConfig(
            bits=int(bits[3:]), group_size=group_size, algo=algo, symmetric=not asymmetric,
            act_order=act_order if act_order is not None else algo == "gptq",
            damp=damp, format=fmt, accuracy_level=4 if dynamic_activations else 0, exclude=tuple(exclude), hera=hera,
        )
    except WeightQuantError as exc:
        raise click.ClickException(str(exc)) from None
    if dynamic_activations and fmt != "matmulnbits":
        raise click.ClickException("--dynamic-activations needs --format matmulnbits")
    if algo == "gptq" and not data:
        raise click.ClickException("--algo gptq needs calibration text: --data FILE.txt (or builtin:corpus)")
    if hera and not data:
        raise click.ClickException("--hera needs calibration text: --data FILE.txt (or builtin:corpus)")
    if act_order is not None and algo != "gptq":
        raise click.ClickException("--act-order applies to --algo gptq only")
    calibration = None
    if data:
        calibration = lm_calibration(model, _read_text(data), tokenizer=tokenizer, seq_len=max_length,
                                     max_windows=num_samples)
    try:
        from .progress import on_terminal

        return quantize_weights(model, output, config, calibration, progress=on_terminal())
    except WeightQuantError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("quantize-weights")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .onnx file.")
@weight_options
@force_option
def quantize_weights_cmd(model: Path, output: Path, force: bool, **options) -> None:  # noqa: ANN003
    """Weight-only INT4/INT8 quantization of MatMul weights (RTN or GPTQ) for ONNX Runtime."""
    check_outputs([(output, "onnx")], [model, options.get("data")], force)
    result = quantize_weights_api(model, output, **options)
    click.echo(f"wrote {result.path}: {len(result.quantized)} MatMuls as {result.config.label}, "
               f"weights {result.float_bytes / 1e6:.2f} MB -> {result.quantized_bytes / 1e6:.2f} MB "
               f"in {result.seconds:.1f}s")


@click.command("perplexity")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "-d", required=True, help="Text file (.txt or builtin:text-heldout).")
@click.option("--context", type=int, default=128, show_default=True, help="Tokens of history per window.")
@click.option("--tokenizer", default=None, help="Tokenizer folder (default: the folder the model was exported from).")
def perplexity_cmd(model: Path, data: str, context: int, tokenizer: str | None) -> None:
    """Perplexity of an exported causal LM on a text, run by ONNX Runtime."""
    from converter.llm.config import WeightQuantError
    from converter.llm.perplexity import perplexity

    try:
        result = perplexity(model, _read_text(data), tokenizer=tokenizer, context=context)
    except WeightQuantError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"perplexity {result.perplexity:.3f} over {result.tokens} tokens ({result.seconds:.1f}s)")


command = export_lm
commands = [export_lm, quantize_weights_cmd, perplexity_cmd]
