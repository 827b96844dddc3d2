"""`qdq quantize`: static INT8 (QDQ) quantization with optional SmoothQuant."""
from __future__ import annotations

from pathlib import Path

import click

from .data_options import data_options, open_model_data, single_source
from .errors import one_line_errors
from .image_options import image_options
from .executor_options import executor_options, open_executor
from .outputs import check_outputs, force_option
from .smoothquant_option import parse_smoothquant
from .target_options import cpu_option, target_option


def _split_excludes(values: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    names, ops, patterns = [], [], []
    for v in values:
        for item in (p.strip() for p in v.split(",")):
            if not item:
                continue
            if item.startswith("op:"):
                ops.append(item[3:])
            elif item.startswith("re:"):
                patterns.append(item[3:])
            else:
                names.append(item)
    return {"exclude_nodes": tuple(names), "exclude_op_types": tuple(ops), "exclude_patterns": tuple(patterns)}


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--calib", "calib", type=click.Path(dir_okay=False, path_type=Path),
              help="Calibration table (JSON) from `qdq calibrate` for this model.")
@data_options(default_samples=128, required=False, multiple=True)
@image_options
@click.option("--method", type=click.Choice(["minmax", "percentile", "mse", "entropy"]), default=None,
              help="Calibration method with --data (default minmax).")
@click.option("--smoothquant", "smoothquant", default=None, metavar="ALPHA|auto",
              help="SmoothQuant migration strength in [0, 1], or 'auto' (per layer, needs --data).")
@click.option("--exclude", multiple=True, metavar="NAME|op:TYPE|re:REGEX",
              help="Keep in float: a node name, an op type (op:Gemm) or a node-name regex (re:^/pooler). Repeatable.")
@target_option("Backend whose INT8 kernels the Q/DQ placement is made for.", default="ort-cpu", show_default=True)
@cpu_option()
@click.option("--quantize-attention/--no-quantize-attention", default=None,
              help="Quantize the activation x activation MatMuls of attention (default: yes for ort-cpu).")
@click.option("--per-tensor", is_flag=True, help="Per-tensor instead of per-channel weight scales.")
@click.option("--weight-rounding", type=click.Choice(["gptq", "nearest"]), default="gptq", show_default=True,
              help="Conv/Gemm weights: rounded so each layer's output error is small, from its input statistics "
                   "on --data (GPTQ), or to nearest. Without --data: nearest.")
@click.option("--range-search", type=click.Choice(["output", "none"]), default="output", show_default=True,
              help="Activation ranges: narrowed where that lowers the consuming layer's output error on --data "
                   "(output), or the calibrated ranges as they are (none). Without --data: none.")
@click.option("--target-accuracy", metavar="METRIC=VALUE",
              help="Keep the most sensitive layers in float until METRIC (cosine, min_cosine, snr, top1 vs FP32) "
                   "reaches VALUE on held-out data, e.g. cosine=0.999. Needs --data.")
@click.option("--weights", type=click.Choice(["int4", "int8"]), default=None,
              help="Weight-only quantization of MatMul weights for LLMs (MatMulNBits) instead of static W8A8.")
@click.option("--group-size", type=int, default=128, show_default=True, help="--weights: weights per scale (32/64/128).")
@click.option("--algo", type=click.Choice(["rtn", "gptq"]), default="rtn", show_default=True,
              help="--weights: round-to-nearest, or GPTQ-style second-order error compensation (calibrates on --data text, default builtin:mix).")
@click.option("--act-order/--no-act-order", default=None,
              help="--weights gptq: quantize columns by decreasing Hessian diagonal (default for gptq).")
@click.option("--asymmetric", is_flag=True, help="--weights: one zero point per group (default symmetric).")
@click.option("--hera", is_flag=True, help="--weights: refine the levels by heuristic element replacement (calibrates on --data, default builtin:mix).")
@click.option("--awq/--no-awq", default=False, show_default=True,
              help="--weights: activation-aware per-channel scales before rounding (calibrates on --data).")
@click.option("--clip/--no-clip", default=None,
              help="--weights: search each group's range for the least activation-weighted error (default on for gptq).")
@click.option("--damp", type=float, default=0.01, show_default=True, help="--weights gptq: damping, fraction of mean diag(H).")
@click.option("--weight-format", "weight_format", type=click.Choice(["matmulnbits", "qdq"]), default="matmulnbits",
              show_default=True, help="--weights: com.microsoft MatMulNBits, or opset-21 block-wise DequantizeLinear.")
@click.option("--dynamic-activations", is_flag=True,
              help="--weights: ZeroQuant-style per-token dynamic int8 activations (MatMulNBits accuracy_level 4).")
@click.option("--eval-data", metavar="SOURCE",
              help="Held-out data for --target-accuracy (default: the last quarter of --data).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output .onnx file.")
@click.option("--speed-check/--no-speed-check", "speed_check", default=None,
              help="Time the INT8 model against FP32 at batch 1 and 8 and say in one line if it is slower "
                   "(default: on when one FP32 run takes under 0.5 s).")
@executor_options("the --target-accuracy sensitivity variants (and its calibration)")
@force_option
def command(model: Path, calib: Path | None, data: tuple[str, ...], num_samples: int | None, batch_size: int,
            max_length: int, tokenizer: str | None, image, method: str | None, smoothquant: str | None,
            exclude: tuple[str, ...], target: str, cpu: str, quantize_attention: bool | None, per_tensor: bool,
            weight_rounding: str, range_search: str, target_accuracy: str | None, weights: str | None, group_size: int, algo: str,
            act_order: bool | None, asymmetric: bool, hera: bool, awq: bool, clip: bool | None, damp: float, weight_format: str,
            dynamic_activations: bool, eval_data: str | None,
            output: Path, speed_check: bool | None, executor: str, ray_address: str | None, force: bool) -> None:
    """Quantize MODEL.onnx to static INT8 (QDQ) with ranges from --calib or from --data.

    --data also drives --smoothquant auto (alpha chosen per layer) and re-measures the ranges of
    smoothed tensors; without it a fixed alpha derives them from the table's channel maxima.
    """
    from converter.quant.config import QuantConfig
    from converter.quantize import quantize_file

    from .progress import on_terminal

    check_outputs([(output, "onnx")], [model, calib, *data, eval_data], force)
    if weights is not None:
        if calib is not None or smoothquant is not None or target_accuracy is not None:
            raise click.UsageError("--weights (weight-only) does not combine with --calib, --smoothquant or --target-accuracy")
        from .llm import quantize_weights_api

        result = quantize_weights_api(
            model, output, bits=weights, group_size=group_size, algo=algo, act_order=act_order, asymmetric=asymmetric,
            hera=hera, awq=awq, clip=clip, damp=damp, fmt=weight_format, dynamic_activations=dynamic_activations, exclude=exclude, data=data,
            num_samples=num_samples or 64, max_length=max_length, tokenizer=tokenizer)
        click.echo(f"wrote {result.path}: {len(result.quantized)} MatMuls as {result.config.label}, "
                   f"weights {result.float_bytes / 1e6:.2f} MB -> {result.quantized_bytes / 1e6:.2f} MB "
                   f"in {result.seconds:.1f}s")
        return
    data = single_source(data, "without --weights (static INT8 calibration)")
    with one_line_errors():
        sq = parse_smoothquant(smoothquant)
        if calib is None and data is None:
            raise click.UsageError("give --calib TABLE.json or --data SOURCE")
        config = QuantConfig(smoothquant=sq, target=target, cpu=cpu, quantize_attention=quantize_attention,
                             per_channel=not per_tensor, weight_rounding=weight_rounding, range_search=range_search, **_split_excludes(exclude))
        if not model.is_file():
            raise click.ClickException(f"model file not found: {model}")
        table = _load_table(calib) if calib is not None else None
        feeds = _open_data(model, data, num_samples, batch_size, max_length, tokenizer, image) if data else None
        calib_config = None
        if method is not None:
            from converter.calib.config import CalibConfig

            calib_config = CalibConfig(method=method)
        if target_accuracy:
            if feeds is None:
                raise click.UsageError("--target-accuracy needs --data (to measure sensitivity and the held-out score)")
            held = _open_data(model, eval_data, num_samples, batch_size, max_length, tokenizer, image) if eval_data else None
            with open_executor(executor, ray_address) as ex:
                out = _quantize_to_target(model, output, table, config, feeds, held, calib_config, target_accuracy, ex)
        else:
            out = quantize_file(model, output, table, config, calib_data=feeds, calib_config=calib_config,
                                progress=on_terminal())
    size = out.stat().st_size / 1e6
    click.echo(f"wrote {out} ({size:.1f} MB, target {config.profile.key}, smoothquant {sq if sq is not None else 'off'})")
    if speed_check is not False and config.profile.name == "ort-cpu":  # timings on this CPU say nothing of a GPU
        from converter.speed_check import MAX_SINGLE_RUN_S, check_speed

        try:
            result = check_speed(model, out, feeds[0] if feeds else None,
                                 max_single_run_s=None if speed_check else MAX_SINGLE_RUN_S)
        except Exception as exc:  # noqa: BLE001 - the model is written and loads; only its timing failed
            click.echo(f"speed check skipped: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        else:
            click.echo(result.line())


def _quantize_to_target(model: Path, output: Path, table, config, feeds: list, held: list | None,  # noqa: ANN001
                        calib_config, target_text: str, executor=None) -> Path:  # noqa: ANN001
    """Mixed precision: full INT8, then the most sensitive layers back to float until the target holds."""
    from converter.accuracy import Evaluator, Target, reach_target, table_quantizer
    from converter.calibrate import calibrate
    from converter.quantize import save_model

    from .accuracy import echo_mixed_precision, latency_probe, split_data

    target = Target.parse(target_text)
    calib_part, held_part = split_data(feeds, held)
    if table is None:
        table = calibrate(model, calib_part, calib_config, progress=False, executor=executor)

    # one quantizer for every variant: it keeps SmoothQuant auto's captures and searches
    quantize_fn = table_quantizer(model, table, calib_part if config.smoothquant == "auto" else None)

    probe = latency_probe()
    click.echo(f"FP32: {probe(str(model)):.2f} ms (batch 8)")
    result = reach_target(quantize_fn, Evaluator(model, calib_part), Evaluator(model, held_part), config, target,
                          latency_fn=probe, executor=executor)
    echo_mixed_precision(result)
    if not result.reached:
        raise click.ClickException(f"accuracy target {target_text} not reached (best {result.final_score:.5f}); "
                                   f"nothing written")
    return save_model(result.model, output)


def _load_table(path: Path):
    from converter.calib.table import CalibrationError, CalibrationTable

    try:
        return CalibrationTable.load(path)
    except CalibrationError as exc:
        msg = str(exc)
        raise CalibrationError(msg if str(path) in msg else f"{path}: {msg}") from None


def _open_data(model: Path, source: str, num_samples: int | None, batch_size: int, max_length: int,
               tokenizer: str | None, image=None) -> list:  # noqa: ANN001
    from .calibrate import _input_specs

    specs = _input_specs(model)  # from the graph: initializers listed as inputs are not feeds
    return list(open_model_data(model, specs, source, num_samples, batch_size, max_length, tokenizer, image))
