"""SmoothQuant static W8A8 for an exported causal LM: both operands of every linear layer in INT8.

    from converter.llm.w8a8 import W8A8Config, quantize_w8a8
    quantize_w8a8("lm.onnx", "lm.w8a8.onnx", W8A8Config(), text=calibration_text)

Activation outliers are moved into the weights (SmoothQuant, alpha searched per layer or per model by
the measured INT8 output error of the linear layers on calibration activations), then every MatMul with
a constant weight gets a per-tensor uint8 activation (static range, calibrated on prefill windows of the
calibration text) and per-channel int8 weights. ONNX Runtime fuses each ``DQ(x), DQ(W) -> MatMul`` into
``MatMulIntegerToFloat`` (MLAS u8s8). RMSNorm, rotary embeddings, Softmax, residual adds and the KV
cache stay float; attention's activation x activation MatMuls (Q.K^T, P.V) stay float unless
``attention=True``; ``lm_head=False`` (default) keeps the vocabulary projection float: a tied lm_head
reads the embedding table through a Transpose, so INT8 there stores a second (int8) copy of the table.

Static per-tensor ranges cannot hold an LM's massive activations (SmolLM2-135M's down-projection
inputs reach 3099 on the first token of a window where the 99.99th percentile is 3.1), so a layer whose
simulated INT8 error stays above ``fallback_error`` at its best alpha falls back to float (or to dynamic
per-token INT8). SmolLM2-135M at the default 5e-4: 29 of the 30 down projections, 6 attention output
projections and one gate/up pair (README for the numbers).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from ..calib.config import CalibConfig
from ..quant.config import AUTO_ALPHAS, QuantConfig
from .config import WeightQuantError
from .memory_budget import check_memory, onnx_weight_bytes

log = logging.getLogger(__name__)

ALPHA_SEARCHES = ("layer", "model")
CALIB_METHODS = ("minmax", "percentile", "mse")
FALLBACKS = ("dynamic", "float")


@dataclass(frozen=True)
class W8A8Config:
    """How to quantize an LM to static W8A8.

    alpha: SmoothQuant migration strength in [0, 1], ``"auto"`` (searched; see ``alpha_search``) or None
    (no smoothing). alpha_search: ``layer`` (one alpha per activation) or ``model`` (one alpha for all),
    each chosen from ``alphas`` by the simulated INT8 output error of the linear layers on captured
    calibration activations. method/percentile: how activation ranges are derived from the calibration
    histograms. lm_head: quantize the vocabulary projection too. attention: quantize Q.K^T and P.V.
    embeddings: store the token embedding table as int8. num_samples/seq_len/batch: calibration windows.
    search_batches: calibration batches whose activations the alpha search captures; outlier_rows: tokens
    with the largest |x| always in the search's sample. fallback_error: a linear layer whose simulated
    static INT8 relative output error stays above this at its best alpha falls back (None: never) to
    ``fallback``: ``dynamic`` (INT8 weights, activations quantized per token and block at run time:
    MatMulNBits accuracy_level 4, still an integer kernel) or ``float``.
    cpu: the ``--cpu`` profile (``auto``: this machine's). exclude: MatMul node names kept float.
    """

    alpha: float | str | None = "auto"
    alpha_search: str = "layer"
    alphas: tuple[float, ...] = AUTO_ALPHAS
    method: str = "percentile"
    percentile: float = 99.99
    lm_head: bool = False
    attention: bool = False
    embeddings: bool = True
    num_samples: int = 32
    seq_len: int = 256
    batch: int = 4
    search_batches: int = 2
    outlier_rows: int = 64
    fallback_error: float | None = 5e-4
    fallback: str = "float"
    cpu: str = "auto"
    exclude: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        a = self.alpha
        if a is not None and a != "auto" and (isinstance(a, bool) or not isinstance(a, (int, float))
                                              or not 0.0 <= float(a) <= 1.0):
            raise WeightQuantError(f"alpha must be 'auto' or a number in [0, 1], got {a!r}")
        if self.alpha_search not in ALPHA_SEARCHES:
            raise WeightQuantError(f"alpha search must be one of {', '.join(ALPHA_SEARCHES)}, got {self.alpha_search!r}")
        if self.method not in CALIB_METHODS:
            raise WeightQuantError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {self.method!r}")
        for name in ("num_samples", "batch", "search_batches"):
            if getattr(self, name) < 1:
                raise WeightQuantError(f"{name.replace('_', ' ')} must be positive, got {getattr(self, name)}")
        if self.fallback_error is not None and not self.fallback_error >= 0:
            raise WeightQuantError(f"fallback error must be >= 0, got {self.fallback_error}")
        if self.fallback not in FALLBACKS:
            raise WeightQuantError(f"fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}")
        if self.seq_len < 2:
            raise WeightQuantError(f"calibration windows need >= 2 tokens, got {self.seq_len}")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "alphas", tuple(self.alphas))

    @property
    def label(self) -> str:
        smooth = "no smoothing" if self.alpha is None else (
            f"alpha auto/{self.alpha_search}" if self.alpha == "auto" else f"alpha {float(self.alpha):g}")
        parts = ["w8a8", smooth, self.method, "lm_head int8" if self.lm_head else "lm_head float"]
        if self.attention:
            parts.append("attention int8")
        return ", ".join(parts)


@dataclass
class W8A8Result:
    path: Path
    config: W8A8Config
    quantized_matmuls: int
    float_matmuls: int
    alphas: dict[str, float | None]
    errors: dict[str, float]
    seconds: float
    dynamic_matmuls: int = 0


def lm_head_nodes(model: ir.Model) -> list[str]:
    """Names of the MatMuls producing graph outputs (the vocabulary projection)."""
    return [n.name or "" for n in model.graph
            if n.op_type in ("MatMul", "Gemm") and any(o.is_graph_output() for o in n.outputs)]


def fold_transposed_weights(model: ir.Model, nodes: list[str]) -> int:
    """Give each named MatMul that reads ``Transpose(initializer)`` (a tied lm_head: the embedding table is
    shared with the Gather) its own transposed constant weight, so it can be quantized; returns how many."""
    done = 0
    for node in model.graph:
        if node.name not in nodes or node.op_type != "MatMul":
            continue
        t = node.inputs[1].producer()
        if t is None or t.op_type != "Transpose" or t.inputs[0].const_value is None:
            continue
        arr = t.inputs[0].const_value.numpy()
        perm = t.attributes.get_ints("perm", list(reversed(range(arr.ndim))))
        weight = ir.Value(name=f"{node.name}_weight", shape=ir.Shape(arr.transpose(perm).shape),
                          type=ir.TensorType(ir.DataType.FLOAT),
                          const_value=ir.tensor(np.ascontiguousarray(arr.transpose(perm)), name=f"{node.name}_weight"))
        model.graph.register_initializer(weight)
        node.replace_input_with(1, weight)
        done += 1
    return done


def quant_config(model: ir.Model, config: W8A8Config) -> QuantConfig:
    """The static-INT8 settings of ``converter.quantize`` that implement ``config`` on ``model``."""
    exclude = tuple(config.exclude) + (() if config.lm_head else tuple(lm_head_nodes(model)))
    return QuantConfig(
        smoothquant=config.alpha if config.alpha is None or config.alpha == "auto" else float(config.alpha),
        smoothquant_search=config.alpha_search, auto_alphas=config.alphas, auto_batches=config.search_batches,
        auto_outlier_rows=config.outlier_rows, auto_float_error=config.fallback_error,
        exclude_nodes=exclude, cpu=config.cpu, quantize_attention=config.attention,
        quantize_embeddings=config.embeddings, bias_correction=False, op_types=("MatMul",),
    )


def calibration_feeds(model: str | os.PathLike[str], text: str, config: W8A8Config,
                      tokenizer: str | os.PathLike[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Prefill feeds (empty KV cache) of ``config.num_samples`` windows of ``text``."""
    from .weight_only import lm_calibration

    feeds = list(lm_calibration(model, text, tokenizer=tokenizer, seq_len=config.seq_len, batch=config.batch,
                                max_windows=config.num_samples))
    if not feeds:
        raise WeightQuantError("the calibration text gave no windows")
    return feeds


def quantize_w8a8(model: str | os.PathLike[str], output: str | os.PathLike[str], config: W8A8Config | None = None,
                  *, text: str, tokenizer: str | os.PathLike[str] | None = None,
                  progress: bool = False, cache: dict | None = None) -> W8A8Result:
    """Write the static W8A8 (SmoothQuant + QDQ) version of the exported LM at ``model`` to ``output``.

    ``cache``: a dict shared by calls on the same model, text and calibration settings (variants that differ
    in lm_head, fallback or alpha search): the captured activations and per-layer searches are reused."""
    from ..onnx_files import write_onnx
    from ..quantize import _load_ir, quantize

    config = config or W8A8Config()
    t0 = time.perf_counter()
    check_memory("quantize-w8a8", onnx_weight_bytes(model), str(model))
    feeds = calibration_feeds(model, text, config, tokenizer)
    m = _load_ir(model)
    if config.lm_head:
        fold_transposed_weights(m, lm_head_nodes(m))
    qconfig = quant_config(m, config)
    calib = CalibConfig(method=config.method, percentile=config.percentile, histogram=True)
    alphas: dict = {} if cache is None else cache
    proto = quantize(m, None, qconfig, calib_data=feeds, calib_config=calib, progress=progress,
                     smoothquant_cache=alphas)
    dynamic = 0
    if config.fallback == "dynamic":
        out = ir.from_proto(proto)
        dynamic = dynamic_fallback(out, tuple(config.exclude) + tuple(lm_head_nodes(out)))
        proto = ir.to_proto(out) if dynamic else proto
        del out
    counts = _matmul_counts(proto)
    del m  # the float model: only the quantized proto is saved, then freed before ONNX Runtime loads the file
    held = [proto]
    del proto
    path = write_onnx(held.pop, output)
    chosen = alphas.get("chosen", {})
    log.info("W8A8: %d MatMuls static int8, %d dynamic int8, %d float", counts[0], dynamic, counts[1])
    return W8A8Result(path, config, counts[0], counts[1], chosen, alphas.get("errors", {}), time.perf_counter() - t0,
                      dynamic)


def dynamic_fallback(model: ir.Model, keep_float: tuple[str, ...] = ()) -> int:
    """Turn the MatMuls the static pass left float (constant float weight), except ``keep_float``, into
    INT8 g128 MatMulNBits with dynamic per-token-and-block int8 activations; returns how many."""
    from .config import WeightOnlyConfig
    from .weight_only import _names, find_weight_matmuls, quantize_model

    todo = find_weight_matmuls(model, keep_float)
    if not todo:
        return 0
    known = set().union(*(_names(n) for n in find_weight_matmuls(model)))
    exclude = tuple(n for n in keep_float if n in known)
    quantize_model(model, WeightOnlyConfig(bits=8, group_size=128, accuracy_level=4, exclude=exclude))
    return len(todo)


def _matmul_counts(proto) -> tuple[int, int]:  # noqa: ANN001 - onnx.ModelProto
    """(MatMuls fed by a DequantizeLinear activation, other MatMuls; MatMulNBits not counted)."""
    produced = {o: n.op_type for n in proto.graph.node for o in n.output}
    q = sum(1 for n in proto.graph.node if n.op_type == "MatMul" and produced.get(n.input[0]) == "DequantizeLinear")
    total = sum(1 for n in proto.graph.node if n.op_type == "MatMul")
    return q, total - q
