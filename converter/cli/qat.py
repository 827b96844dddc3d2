"""`qdq qat`: quantization-aware training (LSQ or PEQA) of a torch model, exported as QDQ ONNX."""
from __future__ import annotations

from pathlib import Path

import click

from .data_options import data_options
from .errors import one_line_errors


@click.command("qat")
@click.option("--model", "-m", "model", required=True,
              help="digits-cnn (built-in, trained on the fly), a Hugging Face causal-LM folder, or a .pt file "
                   "holding a torch module (with --onnx).")
@data_options(default_samples=None, required=False)
@click.option("--generate", type=click.IntRange(min=1), default=None,
              help="Data-free (LLM-QAT): train on this many sequences of --max-length tokens sampled from the "
                   "FP32 causal LM instead of --data.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Optimizer steps in total.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate, cosine decay. Quantizer scales step by this fraction of their value "
                   "(PEQA, which trains only scales, likes ~1e-2).")
@click.option("--weight-bits", type=click.IntRange(2, 8), default=4, show_default=True)
@click.option("--act-bits", type=click.Choice(["8", "0"]), default="8", show_default=True,
              help="Activation bits; 0 for weight-only quantization.")
@click.option("--peqa", is_flag=True, help="Freeze the integer weights; train only the scales (PEQA).")
@click.option("--train-bias", is_flag=True, help="With --peqa, also train the biases.")
@click.option("--distill", is_flag=True, help="Loss: KL to the FP32 model's logits (default: next-token loss for a "
              "causal LM; models whose data has no labels, like digits-cnn, always distil).")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Distillation temperature.")
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration table of the FP32 ONNX (qdq calibrate) "
              "to start activation scales from; default: min/max observed on --data.")
@click.option("--onnx", "fp32_onnx", type=click.Path(path_type=Path),
              help="The FP32 ONNX export of the model (the one --calib was made from).")
@click.option("--skip", multiple=True, help="Regex of layer names to keep in float; repeatable.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint file (.pt).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from --checkpoint.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output QDQ .onnx file.")
def command(model: str, data: str | None, num_samples: int | None, batch_size: int, max_length: int,
            tokenizer: str | None, generate: int | None, steps: int, lr: float, weight_bits: int, act_bits: str, peqa: bool, train_bias: bool, distill: bool,
            temperature: float, calib: Path | None, fp32_onnx: Path | None, skip: tuple[str, ...],
            checkpoint: Path | None, checkpoint_every: int, resume: bool, seed: int, output: Path) -> None:
    """Fine-tune MODEL with fake quantization in the loop and export it as QDQ ONNX."""
    with one_line_errors():
        _run(model, data, num_samples, batch_size, max_length, tokenizer, generate, steps, lr, weight_bits, int(act_bits),
             peqa, train_bias, distill, temperature, calib, fp32_onnx, skip, checkpoint, checkpoint_every, resume,
             seed, output)


def _run(model: str, data: str | None, num_samples: int | None, batch_size: int, max_length: int,
         tokenizer: str | None, generate: int | None, steps: int, lr: float, weight_bits: int, act_bits: int, peqa: bool, train_bias: bool, distill: bool,
         temperature: float, calib: Path | None, fp32_onnx: Path | None, skip: tuple[str, ...],
         checkpoint: Path | None, checkpoint_every: int, resume: bool, seed: int, output: Path) -> None:
    import torch

    from calibration_data import open_data
    from converter.calib.table import CalibrationTable
    from converter.models import resolve_model
    from converter.qat import QATConfig, TrainConfig, export_qat, train
    from converter.qat.pipeline import epochs, make_loss, prepare
    from converter.qat.sources import DIGITS_CNN, DIGITS_CNN_EPOCHS, load_source

    from .progress import bar, on_terminal, stage

    if (data is None) == (generate is None):
        raise click.ClickException("give --data (training data) or --generate N (data-free), not both")
    if resume and checkpoint is None:
        raise click.ClickException("--resume needs --checkpoint FILE")
    if train_bias and not peqa:
        raise click.ClickException("--train-bias applies to --peqa only (LSQ trains every parameter)")
    if calib is not None and fp32_onnx is None:
        raise click.ClickException("--calib needs --onnx, the FP32 ONNX model the table was calibrated on")
    table = CalibrationTable.load(calib) if calib is not None else None
    config = QATConfig(weight_bits=weight_bits, act_bits=act_bits or None, skip=skip)
    train_config = TrainConfig(steps=steps, lr=lr, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                               resume=resume, seed=seed, progress=on_terminal())
    torch.manual_seed(seed)

    if str(model) == DIGITS_CNN:
        with bar(DIGITS_CNN_EPOCHS, f"training the FP32 {model}", unit="epoch") as progress:
            source = load_source(model, fp32_onnx, on_epoch=lambda _: progress.update(1))
    else:
        with stage(f"loading {model}"):
            source = load_source(model, fp32_onnx)
    if not distill and not source.is_lm and data is not None:  # only an LM's text labels itself (next token)
        distill = True
        click.echo(f"--data has no labels for {model}: training against the FP32 model (distillation, as --distill)")
    if generate is not None:
        batches = _generated(source, generate, max_length, batch_size, seed)
    else:
        model_dir = resolve_model(tokenizer) if tokenizer else source.model_dir
        batches = list(open_data(data, source.specs, batch_size=batch_size, num_samples=num_samples,
                                 model_dir=model_dir, max_length=max_length))
    if not batches:
        raise click.ClickException(f"--data {data} gave no samples")
    loss = make_loss(source, distill, temperature)
    qmodel = prepare(source, batches, config, table=table, onnx_path=fp32_onnx, peqa=peqa, train_bias=train_bias)
    meta = {**config.to_dict(), "model": str(model), "peqa": peqa, "train_bias": train_bias, "distill": distill}
    result = train(qmodel, loss, epochs(batches, seed), train_config, meta=meta)
    if result.step > result.start_step:
        click.echo(f"trained steps {result.start_step}..{result.step}: loss "
                   f"{result.losses[result.start_step]:.4g} -> {result.losses[-1]:.4g} in {result.seconds:.1f}s")
    example = {s.name: batches[0][s.name] for s in source.specs}
    with stage(f"exporting to {output}"):
        exported = export_qat(qmodel, example, output, output_names=source.output_names,
                              dynamic_axes=source.dynamic_axes, metadata=source.metadata)
    click.echo(f"wrote {exported.path}: {exported.num_quantize} QuantizeLinear, {exported.num_dequantize} "
               f"DequantizeLinear (opset {exported.opset})")
    for name, diff in exported.max_abs_diff.items():
        click.echo(f"  max abs diff vs fake-quant torch  {name}: {diff:.3g} "
                   f"({exported.mismatch[name]:.2%} of values past tolerance: rounding ties)")


def _generated(source, count: int, length: int, batch_size: int, seed: int) -> list[dict]:
    """Batches of sequences sampled from the FP32 causal LM (LLM-QAT's data-free training text)."""
    import numpy as np

    from converter.qat import sample_from_teacher

    from .progress import stage

    if not source.is_lm:
        raise click.ClickException("--generate needs a causal LM (a Hugging Face folder)")
    vocab = int(source.module.model.config.vocab_size)
    with stage(f"sampling {count} sequences of {length} tokens from the FP32 model"):
        ids = sample_from_teacher(source.module, count, length, vocab, seed=seed)
    return [{"input_ids": ids[i:i + batch_size], "attention_mask": np.ones_like(ids[i:i + batch_size])}
            for i in range(0, count, batch_size)]
