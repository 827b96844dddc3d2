"""ort-cuda: the fastest artifact ONNX Runtime's CUDA provider runs, FP16 after transformer fusions.

The CUDA provider has no INT8 kernels for QDQ models: it dequantizes and runs them slower than FP32
(measured on an H200: INT8 QDQ 11.5 ms vs FP32 6.9 ms at batch 32 on a BERT-base-shaped model), so a QDQ
model is refused with a pointer to ``ort-trt`` / ``tensorrt``. FP16 is only fast after fusion (unfused
FP16 was slower than FP32 there), so the FP32 model is built in four steps, all on the CPU:

1. ONNX Runtime's provider-independent ``basic`` optimizations (constant folding, redundant nodes);
2. onnxruntime.transformers' fusions for the GPU (``optimize_model(model_type="bert", use_gpu=True)``):
   SkipLayerNormalization, BiasGelu, ...;
3. every attention core (``softmax(c·Q·Kᵀ + bias)·V``: masks, relative-position bias, rotary and repeated
   KV heads included) into ``Attention`` / ``MultiHeadAttention`` (``converter.build.attention``), checked
   against the unfused model on the CPU provider (both have CPU kernels);
4. ``--precision fp16`` (the default): onnxruntime's float16 converter, inputs and outputs kept FP32
   (``keep_io_types``) and ``FP32_OPS`` left in FP32. The fused ops accumulate in FP32 internally on CUDA
   (LayerNorm statistics, softmax), which is why fusion comes first.

A CNN has no attention: steps 2-3 find nothing and the FP16 conversion still applies.
"""
from __future__ import annotations

import collections
import logging
from pathlib import Path

import numpy as np

from runtime.specs import TensorSpec

from .config import BuildConfig, BuildError
from .staging import StagedBuild

log = logging.getLogger(__name__)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat",
           "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger")
# left in FP32 beyond onnxruntime's DEFAULT_OP_BLOCK_LIST: unfused reductions and exponentials overflow
# or lose their accumulation in plain FP16 kernels (a LayerNorm or softmax the fusions did not catch)
FP32_OPS = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Pow", "Exp", "Sqrt",
            "Reciprocal", "Softmax", "LogSoftmax")
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization",
             "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "BiasGelu", "FastGelu", "Gelu",
             "EmbedLayerNormalization", "BiasAdd", "BiasSplitGelu")
VERIFY_TOLERANCE = 1e-3  # fused vs unfused FP32 on CPU, relative to each output's largest magnitude


def refuse_qdq(model: "onnx.ModelProto", source: Path) -> None:  # noqa: F821
    """A QDQ (or integer-op) model cannot be made fast by the CUDA provider: say where to go instead."""
    found = collections.Counter(n.op_type for n in model.graph.node if n.op_type in QDQ_OPS)
    if found:
        what = ", ".join(f"{n} {op}" for op, n in found.most_common(2))
        raise BuildError(f"{source} is an INT8 quantized model ({what}) and ONNX Runtime's CUDA provider has no INT8 "
                         "kernels for QDQ models (it runs them slower than FP32): build it with --target ort-trt or "
                         "--target tensorrt, or give ort-cuda the FP32 model (FP16 by default)")


def build_cuda(source: Path, staged: Path, config: BuildConfig, model: "onnx.ModelProto",  # noqa: F821
               inputs: list[TensorSpec], precision: str) -> StagedBuild:
    """Fuse, verify and (for fp16) convert ``source`` into ``staged``."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel
    from onnxruntime.transformers.optimizer import optimize_model

    from .attention import fuse_attention
    from ..targets.build import build_target
    from .ort import optimize, provider_options, uses_external_data

    refuse_qdq(model, source)  # build() refuses before staging; kept for direct callers
    level = config.opt_level or "basic"
    if level != "basic":
        log.warning("ort-cuda: optimization level %s applies CPU-provider rewrites; the model may not run fully "
                    "on the CUDA provider", level)
    external = uses_external_data(model)
    basic = staged.parent / f"{staged.stem}.basic.onnx"
    optimize(source, basic, level, f"{basic.name}.data" if external else None)
    fused = optimize_model(str(basic), model_type="bert", num_heads=0, hidden_size=0, opt_level=0, use_gpu=True)
    attention = fuse_attention(fused.model)
    fused.topological_sort()
    if external:  # past protobuf's 2 GB: the check session reads the fused model from a file
        check = staged.parent / f"{basic.name}.fused.onnx"
        fused.save_model_to_file(str(check), use_external_data_format=True, all_tensors_to_one_file=True)
        _verify(source, str(check), inputs, _token_limit(model))
        fused = OnnxModel(onnx.load(str(check)))  # saving moved the weights out of the in-memory model
    else:
        _verify(source, fused.model.SerializeToString(), inputs, _token_limit(model))
    if precision == "fp16":
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

        fused.convert_float_to_float16(keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP32_OPS])
    fused.save_model_to_file(str(staged), use_external_data_format=external, all_tensors_to_one_file=True)
    for leftover in staged.parent.glob(f"{basic.name}*"):
        leftover.unlink()
    histogram = collections.Counter(n.op_type for n in onnx.load(str(staged), load_external_data=False).graph.node)
    fusions = {op: histogram[op] for op in FUSED_OPS if histogram[op]}
    if not attention and any(n.op_type == "Softmax" for n in model.graph.node):
        log.warning("ort-cuda: %s has Softmax nodes but no attention block was fused; the GPU runs it unfused",
                    source)
    return StagedBuild(
        providers=list(build_target("ort-cuda").providers),
        provider_options=provider_options("ort-cuda", config, inputs, Path(staged.name).stem),
        side_files=_external_files(staged),
        build={"optimization_level": level, "optimized_with": "onnxruntime " + _ort_version(),
               "fusions": fusions, "fp32_ops": sorted(FP32_OPS) if precision == "fp16" else []},
    )


def _external_files(staged: Path) -> dict[str, str]:
    data = staged.parent / f"{staged.name}.data"
    return {data.name: "external-data"} if data.is_file() else {}


_ID_PRESERVING = frozenset({"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Cast", "Expand"})


def _token_limit(model: "onnx.ModelProto") -> int | None:  # noqa: F821
    """Rows of the smallest table a graph input indexes (Gather of an initializer by the input): token ids
    fed to the check must stay below it (a small-vocabulary model has fewer rows than synthetic ids reach)."""
    rows = {t.name: t.dims[0] for t in model.graph.initializer if len(t.dims) >= 1}
    ids = {i.name for i in model.graph.input}
    for n in model.graph.node:  # the ids keep their values through reshapes (GPT-2 gathers a view of them)
        if n.op_type in _ID_PRESERVING and n.input and n.input[0] in ids:
            ids.update(n.output)
    limits = [rows[n.input[0]] for n in model.graph.node
              if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] in ids and n.input[0] in rows]
    return min(limits) if limits else None


def _verify(source: Path, fused: str | bytes, inputs: list[TensorSpec], token_limit: int | None = None) -> None:
    """The fused FP32 graph gives the source's outputs on the CPU provider (a padded row included)."""
    import onnxruntime as ort

    from runtime.synthetic import synthetic_feeds

    feeds = synthetic_feeds(inputs, batch=2, sequence=16, seed=0)
    rng = np.random.default_rng(0)
    for spec in inputs:
        arr = feeds[spec.name]
        if token_limit is not None and np.issubdtype(arr.dtype, np.integer) and "mask" not in spec.name.lower():
            arr[...] = rng.integers(0, token_limit, size=arr.shape)
        if "mask" in spec.name.lower() and arr.ndim == 2 and arr.shape[1] > 4:
            arr[1, arr.shape[1] // 2:] = 0  # a padded sentence: the mask path is compared too
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        want = ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"]).run(None, feeds)
        got = ort.InferenceSession(fused, so, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as exc:  # ORT raises private exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(f"ort-cuda: the fused model of {source} does not run on the CPU provider: {first}") from exc
    for w, g in zip(want, got):
        scale = max(float(np.abs(w).max()), 1.0) if w.size else 1.0
        diff = float(np.abs(w.astype(np.float64) - g).max()) if w.size else 0.0
        if not np.isfinite(diff) or diff > VERIFY_TOLERANCE * scale:
            raise BuildError(f"ort-cuda: the fused model of {source} differs from it by {diff:.3g} "
                             f"(outputs up to {scale:.3g}); build with --target ort-trt, or report the model")
    log.info("fused graph verified against %s on the CPU provider", source)


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__
