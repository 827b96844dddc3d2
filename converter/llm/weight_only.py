"""Weight-only quantization of an ONNX model's MatMul weights (RTN or GPTQ) to MatMulNBits / block-wise DQ.

    from converter.llm.weight_only import quantize_weights, lm_calibration
    cfg = WeightOnlyConfig(bits=4, group_size=128, algo="gptq")
    quantize_weights("lm.onnx", "lm.int4.onnx", cfg, calibration=lm_calibration("lm.onnx", text))

Every MatMul (or Gemm without transA/scaling, as GPT-2 exports) whose second input is a constant
2-D float weight is quantized, unless named in ``config.exclude`` (by node, output or weight name).
Activations stay in float; with ``accuracy_level=4`` ONNX Runtime quantizes them per row and block
on the fly (see dynamic.py).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from ..errors import ExportError, ModelFileError
from ..memory import release_memory
from ..models import source_model_dir
from ..onnx_files import write_onnx
from .config import WeightOnlyConfig, WeightQuantError
from .hessian import collect_hessians
from .input_scales import apply_input_scales
from .memory_budget import check_memory, onnx_weight_bytes
from .matmulnbits import MS_DOMAIN, blockwise_dq_nodes, matmulnbits_node
from .quantizers import QuantizedWeight, check_shape, quantize_layer, quantize_rtn

log = logging.getLogger(__name__)


@dataclass
class WeightOnlyResult:
    """What was quantized and how large the model became."""

    path: Path | None
    config: WeightOnlyConfig
    quantized: list[str] = field(default_factory=list)
    float_bytes: int = 0
    quantized_bytes: int = 0
    seconds: float = 0.0


def load_model(model: str | os.PathLike[str] | ir.Model) -> ir.Model:
    if isinstance(model, ir.Model):
        return model
    path = Path(model)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        return ir.load(path)
    except Exception as exc:
        raise ModelFileError(f"{path} is not a readable ONNX model: {str(exc).splitlines()[0]}") from None


def _attr(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return attr.value if attr is not None else default


def _weight(node: ir.Node) -> np.ndarray | None:
    """W [N, K] of a MatMul (or plain Gemm: no transA, alpha 1, beta 1) with a constant 2-D float weight."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm") or len(node.inputs) < 2:
        return None
    if node.op_type == "Gemm" and (_attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0
                                   or (len(node.inputs) > 2 and _attr(node, "beta", 1.0) != 1.0)):
        return None
    b = node.inputs[1]
    tensor = b.const_value if b is not None else None
    if tensor is None or len(tensor.shape) != 2 or tensor.dtype != ir.DataType.FLOAT:
        return None
    w = tensor.numpy()
    return w if node.op_type == "Gemm" and _attr(node, "transB", 0) else w.T


def _names(node: ir.Node) -> set[str]:
    return {n for n in (node.name, node.outputs[0].name, node.inputs[1].name if node.inputs[1] else None) if n}


def find_weight_matmuls(model: ir.Model, exclude: Iterable[str] = ()) -> list[ir.Node]:
    """MatMul (and plain Gemm) nodes with a constant 2-D float32 weight, minus those named in ``exclude``."""
    skip = set(exclude)
    return [n for n in model.graph if _weight(n) is not None and not (_names(n) & skip)]


def _check_exclude(model: ir.Model, exclude: Iterable[str]) -> None:
    """Every excluded name must name a quantizable MatMul (node, output or weight): a typo is an error."""
    from ..quant.exclude import near_matches

    known = set().union(*(_names(n) for n in find_weight_matmuls(model)))
    unknown = [name for name in exclude if name not in known]
    if unknown:
        raise WeightQuantError("--exclude " + "; ".join(
            f"'{name}' names no MatMul with a constant weight{near_matches(name, known)}" for name in unknown))


def hessian_inputs(model: ir.Model, exclude: Iterable[str] = ()) -> list[str]:
    """Names of the activations feeding the quantizable MatMuls (each once)."""
    return list(dict.fromkeys(n.inputs[0].name for n in find_weight_matmuls(model, exclude)))


def needs_hessians(config: WeightOnlyConfig) -> bool:
    """Whether ``config`` uses calibration data (GPTQ, AWQ scales, clip search or HERA)."""
    return config.algo == "gptq" or config.hera or config.awq or config.clip


def quantize_model(
    model: ir.Model,
    config: WeightOnlyConfig,
    calibration: Iterable[Mapping[str, np.ndarray]] | None = None,
    hessians: Mapping[str, np.ndarray] | None = None,
    quantized: Mapping[str, QuantizedWeight] | None = None,
) -> WeightOnlyResult:
    """Quantize ``model`` in place; GPTQ/HERA need ``calibration`` feed dicts for the float model.

    ``quantized`` (from :func:`converter.llm.sequential.quantize_sequential`, keyed by weight
    fingerprint) supplies levels computed on the torch model. Otherwise GPTQ/HERA take Hessians of the
    float ONNX model's MatMul inputs: ``hessians`` (from ``hessian_inputs`` + ``collect_hessians``, keyed
    by MatMul input name) may be passed instead of ``calibration`` to reuse them across runs.
    """
    import torch

    from .sequential import fingerprint

    t0 = time.perf_counter()
    _check_exclude(model, config.exclude)
    targets = find_weight_matmuls(model, config.exclude)
    if not targets:
        raise WeightQuantError("the model has no MatMul with a constant 2-D float32 weight to quantize")
    for node in targets:  # fail fast, before any calibration work
        check_shape(_weight(node), config.group_size, f"MatMul {node.name or node.outputs[0].name}")
    if needs_hessians(config) and quantized is None and hessians is None:
        if calibration is None:
            raise WeightQuantError("GPTQ needs calibration data (text for a causal LM)")
        hessians = collect_hessians(model, hessian_inputs(model, config.exclude), calibration)
    missing = [n.inputs[0].name for n in targets
               if needs_hessians(config) and quantized is None and n.inputs[0].name not in hessians]
    if missing:
        raise WeightQuantError(f"no Hessian for MatMul input(s) {', '.join(missing[:3])}")

    result = WeightOnlyResult(None, config)
    graph = model.graph
    fallback = []
    scaled: list[tuple[ir.Node, np.ndarray]] = []
    if config.awq and quantized is None:
        log.warning("AWQ scales need the torch model the LM was exported from: rounding without them")
    for node in targets:
        w = _weight(node)
        label = node.outputs[0].name or node.name
        qw = quantized.get(fingerprint(w)) if quantized is not None else None
        if qw is None and quantized is not None:
            fallback.append(label)
            qw = quantize_rtn(w, config, label)
        elif qw is None and needs_hessians(config):
            qw = quantize_layer(torch.tensor(w), torch.as_tensor(hessians[node.inputs[0].name]), config, label)
        elif qw is None:
            qw = quantize_rtn(w, config, label)
        reader = _replace(graph, node, qw, config, label)
        if qw.input_scale is not None:
            scaled.append((reader, qw.input_scale))
        result.quantized.append(label)
        result.float_bytes += w.size * 4
        levels = qw.blocks * qw.group_size * qw.q.shape[0] + (0 if qw.symmetric else qw.zero_points.size)
        result.quantized_bytes += levels * qw.bits // 8 + qw.scales.size * 4
    if fallback:
        log.warning("%d MatMul weight(s) not found in the torch model were rounded to nearest: %s",
                    len(fallback), ", ".join(fallback[:3]))
    apply_input_scales(graph, scaled)
    _drop_unused_initializers(graph)
    if config.format == "matmulnbits":
        model.opset_imports.setdefault(MS_DOMAIN, 1)
    else:
        model.opset_imports[""] = max(21, model.opset_imports.get("", 21))
    result.seconds = time.perf_counter() - t0
    log.info("quantized %d MatMul weights (%s): %.2f MB -> %.2f MB in %.1fs", len(result.quantized), config.label,
             result.float_bytes / 1e6, result.quantized_bytes / 1e6, result.seconds)
    return result


def _replace(graph: ir.Graph, node: ir.Node, qw: QuantizedWeight, config: WeightOnlyConfig, prefix: str) -> ir.Node:
    """Put the quantized form of MatMul ``node`` in its place; returns the new node reading its activation."""
    x, old_out = node.inputs[0], node.outputs[0]
    if config.format == "matmulnbits":
        new_nodes = [matmulnbits_node(graph, node.inputs[0], qw, prefix, config.accuracy_level)]
    else:
        new_nodes = list(blockwise_dq_nodes(graph, node.inputs[0], qw, prefix))
    bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
    if bias is not None:
        new_nodes.append(ir.node("Add", [new_nodes[-1].outputs[0], bias], name=f"{prefix}_bias"))
    new_out = new_nodes[-1].outputs[0]
    ir.convenience.replace_nodes_and_values(graph, node, [node], new_nodes, [old_out], [new_out])
    return next(n for n in new_nodes if n.inputs and n.inputs[0] is x)


def _drop_unused_initializers(graph: ir.Graph) -> None:
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output():
            del graph.initializers[name]


def quantize_weights(
    model: str | os.PathLike[str] | ir.Model,
    output: str | os.PathLike[str],
    config: WeightOnlyConfig,
    calibration: Iterable[Mapping[str, np.ndarray]] | None = None,
    hessians: Mapping[str, np.ndarray] | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> WeightOnlyResult:
    """Quantize the MatMul weights of ``model`` and save it to ``output`` (atomically).

    GPTQ/HERA run sequentially on the torch model ``source`` (a HF folder; default: the folder the
    export recorded) when there is one: see converter.llm.sequential. Without a source model (or
    with ``hessians``), Hessians come from the float ONNX model, all at once.
    """
    t0 = time.perf_counter()
    if not isinstance(model, ir.Model):
        check_memory("quantize-weights", onnx_weight_bytes(model), str(model))
    ir_model = load_model(model)
    if isinstance(calibration, LMCalibration) and calibration.reads(model):
        calibration.bind(ir_model)  # the feeds need the model's inputs: take them now, not from a second parse
    quantized = None
    if needs_hessians(config) and hessians is None:
        folder = Path(source) if source is not None else (
            None if isinstance(model, ir.Model) else source_model_dir(ir_model))
        if folder is not None:
            if calibration is None:
                raise WeightQuantError("GPTQ needs calibration data (text for a causal LM)")
            wanted = _wanted(ir_model, config)
            if not isinstance(model, ir.Model):  # the ONNX model is read again afterwards: one model in memory at a time
                del ir_model
                release_memory()
            quantized = _quantize_torch(wanted, folder, config, calibration, progress)
            if not isinstance(model, ir.Model):
                ir_model = load_model(model)
        else:
            log.warning("no source model folder: GPTQ Hessians come from the float ONNX model (not sequential)")
    result = quantize_model(ir_model, config, calibration, hessians, quantized)
    del quantized
    held = [ir_model]  # the writer drops the last reference once saved, before ONNX Runtime loads the file
    del ir_model
    result.path = write_onnx(held.pop if not isinstance(model, ir.Model) else model, output)
    result.seconds = time.perf_counter() - t0
    return result


def _wanted(ir_model: ir.Model, config: WeightOnlyConfig) -> set[str]:
    """Fingerprints of the MatMul weights to quantize."""
    from .sequential import fingerprint

    _check_exclude(ir_model, config.exclude)
    return {fingerprint(_weight(n)) for n in find_weight_matmuls(ir_model, config.exclude)}


def _quantize_torch(wanted: set[str], folder: Path, config: WeightOnlyConfig,
                    calibration: Iterable[Mapping[str, np.ndarray]], progress: bool | None) -> dict[str, QuantizedWeight] | None:
    """Levels for the weights ``wanted`` from sequential GPTQ/HERA on the torch model in ``folder``."""
    from .export import load_causal_lm
    from .sequential import quantize_sequential

    try:
        torch_model, _ = load_causal_lm(folder)
    except ExportError as exc:
        log.warning("%s: GPTQ Hessians come from the float ONNX model instead (not sequential)", exc)
        return None
    try:
        return quantize_sequential(torch_model, calibration, config, wanted, progress=progress)
    finally:
        del torch_model
        release_memory()


class LMCalibration:
    """Prefill feeds of ``seq_len``-token windows of a text for an exported KV-cache LM; iterable again and again.

    What the feeds need from the model (its input specs, the tokenizer folder the export recorded) is read
    once: from a model already in memory passed to :meth:`bind` (``quantize_weights`` does, so a 0.5 GB
    LM is not parsed a second time), else from the file when first iterated.
    """

    def __init__(self, model: str | os.PathLike[str] | ir.Model, text: str, *,
                 tokenizer: str | os.PathLike[str] | None = None, seq_len: int = 128, batch: int = 8,
                 max_windows: int = 128) -> None:
        self.model, self.text, self.tokenizer = model, text, tokenizer
        self.seq_len, self.batch, self.max_windows = seq_len, batch, max_windows
        self._specs: list | None = None
        self._folder: Path | None = None
        if isinstance(model, ir.Model):
            if tokenizer is None:
                raise WeightQuantError("pass tokenizer= (a model folder) when calibrating an in-memory model")
            self.bind(model)

    def reads(self, model: str | os.PathLike[str] | ir.Model) -> bool:
        """Whether these feeds are for ``model`` (the same file, or the same object)."""
        if isinstance(model, ir.Model) or isinstance(self.model, ir.Model):
            return model is self.model
        return Path(model).resolve() == Path(self.model).resolve()

    def bind(self, ir_model: ir.Model) -> None:
        """Take the input specs and tokenizer folder from ``ir_model`` (the model these feeds are for)."""
        from runtime.specs import TensorSpec

        from .feeds import tokenizer_dir

        if self._specs is None:
            self._specs = [TensorSpec(v.name, np.dtype(v.dtype.numpy()),
                                      tuple(d if isinstance(d, int) else str(d) for d in v.shape))
                           for v in ir_model.graph.inputs]
        if self._folder is None:
            try:
                self._folder = tokenizer_dir(ir_model, self.tokenizer)
            except WeightQuantError:  # said when the feeds are wanted (RTN never asks for them)
                pass

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        from .feeds import encode_text, load_tokenizer, prefill_feeds, tokenizer_dir, windows

        if self._specs is None:
            ir_model = load_model(self.model)
            self.bind(ir_model)
            del ir_model
        if self._folder is None:
            self._folder = tokenizer_dir(self.model, self.tokenizer)
        stream = encode_text(load_tokenizer(str(self._folder)), self.text)
        stream = stream[: self.seq_len * self.max_windows]
        for ids in windows(stream, self.seq_len, self.batch):
            yield prefill_feeds(self._specs, ids)


def lm_calibration(
    model: str | os.PathLike[str] | ir.Model,
    text: str,
    *,
    tokenizer: str | os.PathLike[str] | None = None,
    seq_len: int = 128,
    batch: int = 8,
    max_windows: int = 128,
) -> LMCalibration:
    """Prefill feeds of ``seq_len``-token windows of ``text`` for an exported KV-cache LM at ``model``."""
    return LMCalibration(model, text, tokenizer=tokenizer, seq_len=seq_len, batch=batch, max_windows=max_windows)
