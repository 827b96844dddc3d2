"""`qdq build`: a QDQ model to a deployable artifact (ONNX Runtime, ORT format or TensorRT) + manifest."""
from __future__ import annotations

from pathlib import Path

import click

from runtime.manifest import TARGETS

from .target_options import cpu_option


@click.command("build")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", required=True, type=click.Choice(list(TARGETS)),
              help="ort-cpu/ort-cuda/ort-trt: ONNX Runtime-optimized .onnx for that provider; ort-edge: .ort for "
                   "ONNX Runtime Mobile; tensorrt: native TensorRT engine.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Artifact file (.onnx, .ort, .engine/.plan), or a folder. Default: beside MODEL.")
@click.option("--shapes", multiple=True, metavar="NAME:MIN,OPT,MAX",
              help="Optimization profile of a dynamic input, e.g. input_ids:1x1,8x128,32x512 (tensorrt, ort-trt). "
                   "Repeat, or separate with spaces.")
@click.option("--fp16", is_flag=True, help="Same as --precision fp16 (TensorRT 10, ort-trt, ort-cuda).")
@click.option("--precision", type=click.Choice(["fp16", "fp32"]),
              help="Float precision: ort-cuda converts the fused model to FP16 (default fp16); ort-trt / tensorrt "
                   "enable TensorRT's FP16 kernels (default fp16 for ort-trt, fp32 for tensorrt); ort-cpu/ort-edge: fp32.")
@click.option("--workspace-gb", type=float, help="TensorRT workspace memory limit in GB.")
@click.option("--timing-cache", type=click.Path(path_type=Path),
              help="TensorRT timing cache: read if present, updated after the build (ort-trt: its folder).")
@click.option("--opt-level", type=click.Choice(["basic", "extended", "all"]),
              help="ONNX Runtime optimization level (default: extended for ort-cpu, basic for ort-cuda/ort-trt).")
@click.option("--edge-platform", type=click.Choice(["arm", "amd64"]), help="ort-edge: tune for this CPU family.")
@cpu_option()
@click.option("--device-id", type=int, default=0, show_default=True, help="CUDA device (ort-cuda, ort-trt).")
def command(model: Path, target: str, output: Path | None, shapes: tuple[str, ...], fp16: bool,
            precision: str | None, workspace_gb: float | None, timing_cache: Path | None, opt_level: str | None,
            edge_platform: str | None, cpu: str, device_id: int) -> None:
    """Build MODEL (an FP32 or QDQ ONNX file) for --target and write a manifest that Engine.load reads."""
    from converter.build import BuildConfig, build, parse_shapes

    config = BuildConfig(opt_level=opt_level, shapes=parse_shapes(shapes), fp16=fp16, workspace_gb=workspace_gb,
                         timing_cache=timing_cache, device_id=device_id, edge_platform=edge_platform,
                         cpu=cpu, precision=precision)
    result = build(model, target, output, config)
    click.echo(result.describe())
