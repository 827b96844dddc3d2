"""`qdq calibrate`: stream calibration data through an FP32 model and save per-tensor ranges."""
from __future__ import annotations

import functools
import time
from pathlib import Path

import click

from .errors import one_line_errors
from .executor_options import executor_options, open_executor
from .image_options import image_options
from .outputs import check_outputs, force_option
from .progress import on_terminal


def _tokenizer_dir(model: Path, tokenizer: str | None) -> Path | None:
    """``--tokenizer``, else the folder recorded at export, else a tokenizer beside the model."""
    from .data_options import tokenizer_dir

    return tokenizer_dir(model, tokenizer)


def _input_specs(model: Path) -> list:
    """The model's inputs read from the graph (no session: weights are not loaded twice)."""
    import onnx

    from converter.calib.table import CalibrationError
    from runtime.specs import TensorSpec

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as exc:
        raise CalibrationError(f"{model} is not a readable ONNX model: {exc}") from None
    inits = {i.name for i in proto.graph.initializer}
    specs = []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
        specs.append(TensorSpec(vi.name, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type), shape))
    return specs


@click.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "-d", "data", required=True,
              help="Calibration data: a .txt/.jsonl file, image folder, .npz file/folder, or builtin:text / builtin:digits.")
@click.option("--method", "-m", type=click.Choice(["minmax", "percentile", "mse", "entropy"]), default="minmax",
              show_default=True, help="How ranges are chosen.")
@click.option("--num-samples", "-n", type=click.IntRange(min=1), default=None, help="Samples to use (default: all).")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--percentile", type=click.FloatRange(50, 100, min_open=True), default=99.99, show_default=True,
              help="For --method percentile: share of values (%) kept inside the range.")
@click.option("--asymmetric", is_flag=True, help="uint8 ranges with a zero point instead of symmetric int8.")
@click.option("--max-length", type=click.IntRange(min=1), default=128, show_default=True,
              help="Text: truncate to this many tokens.")
@click.option("--tokenizer", "--model-dir", "tokenizer", default=None,
              help="Text: folder with the tokenizer, or a built-in model name (minilm). "
                   "Default: the model's folder if it holds one.")
@image_options
@click.option("--num-bins", type=click.IntRange(min=64), default=8192, show_default=True, help="Histogram bins per tensor.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Calibration table (.json).")
@click.option("--trt-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a TensorRT calibration cache here (implies --all-tensors: TensorRT's implicit "
                   "quantization wants a scale for every tensor).")
@click.option("--all-tensors", is_flag=True,
              help="Calibrate every float activation (inputs and outputs of MatMul, Add, Softmax, LayerNorm, ...), "
                   "as onnxruntime's calibrators do, not only the tensors `qdq quantize` can quantize.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@executor_options("the shards of --data (each worker reads its share; merged exactly: the same table as one process)")
@force_option
def command(model: Path, data: str, method: str, num_samples: int | None, batch_size: int, percentile: float,
            asymmetric: bool, max_length: int, tokenizer: str | None, image, num_bins: int, output: Path,
            trt_cache: Path | None, all_tensors: bool, no_progress: bool, executor: str, ray_address: str | None,
            force: bool) -> None:
    """Calibrate MODEL (FP32 ONNX) on --data and write per-tensor ranges to -o."""
    from calibration_data import DataError, open_data

    from converter.calib.config import CalibConfig
    from converter.calib.table import CalibrationError
    from converter.calibrate import calibrate
    from converter.distributed.calibrate import DataSource

    check_outputs([(output, "json"), (trt_cache, "text")], [model, data], force)
    started = time.perf_counter()
    with one_line_errors():
        try:
            if not model.is_file():
                raise CalibrationError(f"model file not found: {model}")
            config = CalibConfig(method=method, percentile=percentile, symmetric=not asymmetric, batch_size=batch_size,
                                 num_samples=num_samples, num_bins=num_bins,
                                 scope="all" if all_tensors or trt_cache is not None else "quantizable")
            specs = _input_specs(model)
            source = functools.partial(open_data, data, specs, batch_size=batch_size,
                                       num_samples=num_samples, model_dir=_tokenizer_dir(model, tokenizer),
                                       max_length=max_length, **image.reader_options(data, specs))
            # on Ray every worker opens --data itself and streams its share of the batches
            batches = DataSource(source) if executor != "local" else source()
            with open_executor(executor, ray_address) as ex:
                table = calibrate(model, batches, config, progress=not no_progress and on_terminal(), executor=ex)
            table.save(output)
            if trt_cache is not None:
                table.save_tensorrt_cache(trt_cache)
        except DataError as exc:
            message = str(exc)
            if "tokenizer" in message and "--tokenizer" not in message and tokenizer is None:
                message += " (pass --tokenizer FOLDER, or --tokenizer minilm for the built-in model)"
            raise click.ClickException(message) from None
    seconds = time.perf_counter() - started
    masked = sum(1 for r in table.tensors.values() if r.nonfinite)
    click.echo(f"calibrated {len(table.tensors)} tensors ({method}, {'symmetric int8' if not asymmetric else 'asymmetric uint8'}) "
               f"on {table.meta['num_samples']} samples in {seconds:.1f}s")
    if table.channel_absmax:
        click.echo(f"  channel abs-max for {len(table.channel_absmax)} MatMul/Gemm/Conv inputs")
    if masked:
        click.echo(f"  {masked} tensors had non-finite or mask values, excluded from their ranges")
    click.echo(f"wrote {output}" + (f" and {trt_cache}" if trt_cache else ""))
