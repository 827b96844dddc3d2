"""`qdq export-lm`, `qdq quantize-weights`, `qdq quantize-w8a8`, `qdq perplexity`: causal LMs with a KV cache,
weight-only INT4/INT8 and SmoothQuant static W8A8."""
from __future__ import annotations

import logging
from pathlib import Path

import click

from .outputs import check_outputs, force_option
from .smoothquant_option import parse_smoothquant
from .target_options import cpu_option

log = logging.getLogger(__name__)


def _read_text(data: str) -> str:
    """A text file path, or a shipped sample set as ``builtin:NAME``."""
    from converter.llm.calib_text import read_source
    from converter.llm.config import WeightQuantError

    try:
        return read_source(data)
    except WeightQuantError as exc:
        raise click.ClickException(str(exc)) from None


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
                     help="Round-to-nearest, or second-order GPTQ (calibrates on --data, default builtin:mix)."),
        click.option("--act-order/--no-act-order", default=None,
                     help="GPTQ: quantize columns by decreasing Hessian diagonal (default for --algo gptq)."),
        click.option("--asymmetric", is_flag=True, help="One zero point per group (default: symmetric)."),
        click.option("--hera", is_flag=True,
                     help="Refine the levels by heuristic element replacement against the calibration Hessian "
                          "(after RTN or GPTQ; calibrates on --data)."),
        click.option("--awq/--no-awq", default=False, show_default=True,
                     help="Activation-aware per-channel scales before rounding, folded into the preceding norm or "
                          "linear layer (calibrates on --data; measured worse than GPTQ + clip alone on SmolLM2)."),
        click.option("--clip/--no-clip", default=None,
                     help="Search each group's range for the least activation-weighted error "
                          "(calibrates on --data; default on for --algo gptq)."),
        click.option("--damp", type=float, default=0.01, show_default=True, help="GPTQ damping (fraction of mean diag H)."),
        click.option("--format", "fmt", type=click.Choice(["matmulnbits", "qdq"]), default="matmulnbits",
                     show_default=True, help="com.microsoft MatMulNBits, or opset-21 block-wise DequantizeLinear."),
        click.option("--dynamic-activations", is_flag=True,
                     help="ZeroQuant-style: int8 activations quantized per token and block at run time "
                          "(MatMulNBits accuracy_level=4)."),
        click.option("--exclude", multiple=True, help="MatMul node/output/weight name to keep in float (repeatable)."),
        click.option("--data", "-d", multiple=True,
                     help="Calibration text for GPTQ/AWQ/clip/HERA: a text file or builtin:NAME; repeatable, each "
                          "source an equal share of the windows (default: builtin:mix)."),
        click.option("--num-samples", type=int, default=64, show_default=True,
                     help="Calibration windows for GPTQ/AWQ/clip/HERA, from all --data sources together."),
        click.option("--max-length", type=int, default=128, show_default=True, help="Tokens per calibration window."),
        click.option("--tokenizer", default=None, help="Tokenizer folder (default: the folder the model was exported from)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def quantize_weights_api(model: Path, output: Path, *, bits: str, group_size: int, algo: str, act_order: bool | None,
                         asymmetric: bool, hera: bool = False, awq: bool = False, clip: bool | None = None,
                         damp: float, fmt: str, dynamic_activations: bool, exclude: tuple[str, ...],
                         data: tuple[str, ...] | str | None, num_samples: int, max_length: int, tokenizer: str | None):  # -> WeightOnlyResult
    """Run weight-only quantization from CLI option values (callable from `qdq quantize`).

    ``data``: calibration text sources, each an equal share of the windows (default ``builtin:mix`` when the
    recipe needs data); unused by plain RTN.
    """
    from converter.llm.calib_text import DEFAULT_SOURCE, text_calibration
    from converter.llm.config import WeightOnlyConfig, WeightQuantError
    from converter.llm.weight_only import needs_hessians, quantize_weights

    try:
        config = WeightOnlyConfig(
            bits=int(bits[3:]), group_size=group_size, algo=algo, symmetric=not asymmetric,
            act_order=act_order if act_order is not None else algo == "gptq",
            damp=damp, format=fmt, accuracy_level=4 if dynamic_activations else 0, exclude=tuple(exclude), hera=hera,
            awq=awq, clip=clip if clip is not None else algo == "gptq",
        )
    except WeightQuantError as exc:
        raise click.ClickException(str(exc)) from None
    if dynamic_activations and fmt != "matmulnbits":
        raise click.ClickException("--dynamic-activations needs --format matmulnbits")
    if act_order is not None and algo != "gptq":
        raise click.ClickException("--act-order applies to --algo gptq only")
    calibration = None
    data = (data,) if isinstance(data, str) else tuple(data or ())
    if needs_hessians(config) and not data:
        log.info("no --data: calibrating on %s (prose, dialogue, code and structured text)", DEFAULT_SOURCE)
        data = (DEFAULT_SOURCE,)
    if data:  # read (and so checked) now, tokenized only when a recipe iterates it
        try:
            calibration = text_calibration(model, data, tokenizer=tokenizer, seq_len=max_length, max_windows=num_samples)
        except WeightQuantError as exc:
            raise click.ClickException(str(exc)) from None
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
    check_outputs([(output, "onnx")], [model, *options.get("data", ())], force)
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


@click.command("quantize-w8a8")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .onnx file.")
@click.option("--data", "-d", required=True, help="Calibration text (.txt or builtin:corpus); never the evaluation text.")
@click.option("--smoothquant", "alpha", default="auto", show_default=True,
              help="SmoothQuant alpha: auto (searched), off, or a number in [0, 1].")
@click.option("--alpha-search", type=click.Choice(["layer", "model"]), default="layer", show_default=True,
              help="auto: one alpha per layer, or one for the whole model, chosen by the measured INT8 output error.")
@click.option("--method", type=click.Choice(["minmax", "percentile", "mse"]), default="percentile",
              show_default=True, help="Activation range from the calibration histograms.")
@click.option("--percentile", type=float, default=99.99, show_default=True, help="For --method percentile.")
@click.option("--lm-head", type=click.Choice(["float", "int8"]), default="float", show_default=True,
              help="The vocabulary projection in float or INT8.")
@click.option("--attention", type=click.Choice(["float", "int8"]), default="float", show_default=True,
              help="Attention's activation x activation MatMuls (Q.K^T, P.V) in float or INT8.")
@click.option("--fallback-error", type=float, default=5e-4, show_default=True,
              help="A layer whose simulated static INT8 relative output error stays above this falls back.")
@click.option("--fallback", type=click.Choice(["float", "dynamic"]), default="float", show_default=True,
              help="What such a layer becomes: INT8 with per-token dynamic activations, or float.")
@click.option("--num-samples", type=int, default=32, show_default=True, help="Calibration windows.")
@click.option("--max-length", type=int, default=256, show_default=True, help="Tokens per calibration window.")
@click.option("--tokenizer", default=None, help="Tokenizer folder (default: the folder the model was exported from).")
@click.option("--exclude", multiple=True, help="MatMul node name to keep in float (repeatable).")
@cpu_option()
@force_option
def quantize_w8a8_cmd(model: Path, output: Path, data: str, alpha: str, alpha_search: str, method: str,
                      percentile: float, lm_head: str, attention: str, fallback_error: float,
                      fallback: str, num_samples: int, max_length: int,
                      tokenizer: str | None, exclude: tuple[str, ...], cpu: str, force: bool) -> None:
    """SmoothQuant static W8A8 of an exported causal LM: INT8 activations and weights in every linear layer."""
    import sys

    from converter.llm.config import WeightQuantError
    from converter.llm.w8a8 import W8A8Config, quantize_w8a8

    check_outputs([(output, "onnx")], [model, data], force)
    try:
        config = W8A8Config(alpha=parse_smoothquant(alpha), alpha_search=alpha_search, method=method, percentile=percentile,
                            lm_head=lm_head == "int8", attention=attention == "int8", num_samples=num_samples,
                            seq_len=max_length, cpu=cpu, exclude=exclude, fallback=fallback,
                            fallback_error=fallback_error)
        result = quantize_w8a8(model, output, config, text=_read_text(data), tokenizer=tokenizer,
                               progress=sys.stderr.isatty())
    except WeightQuantError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {result.path}: {result.quantized_matmuls} MatMuls with static INT8 activations and weights, "
               f"{result.dynamic_matmuls} with dynamic INT8 activations, {result.float_matmuls} float "
               f"({config.label}) in {result.seconds:.1f}s")


command = export_lm
commands = [export_lm, quantize_weights_cmd, perplexity_cmd, quantize_w8a8_cmd]
