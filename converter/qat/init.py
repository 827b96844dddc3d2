"""Start QAT where PTQ ends: weight scales from per-channel abs-max, activation scales from the
calibration table of the FP32 ONNX model (or, failing that, a torch-side min/max pass).

The table is keyed by ONNX tensor names. A quantized layer is matched to its ONNX node by the
weight's *values* (the exporter renames or transposes weights, e.g. ``MatMul`` weights become
``val_12``), and the node's activation input names the table entry.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..calib.table import CalibrationTable, TensorRange
from .errors import QATError
from .wrap import QuantLayer, quant_layers, set_quantization

log = logging.getLogger(__name__)

Forward = Callable[[nn.Module, Any], Any]
"""How to run a model on one batch of the data: ``forward(model, batch)``."""


def init_weight_scales(model: nn.Module) -> None:
    """Weight scale per output channel = abs-max / qmax, the PTQ rule (frozen PEQA layers are left alone)."""
    for layer in quant_layers(model).values():
        if layer.peqa:
            continue
        w = layer.weight.detach()
        amax = w.abs().amax(dim=tuple(range(1, w.dim()))) if w.dim() > 1 else w.abs()
        layer.weight_quant.init_scale(torch.where(amax > 0, amax, torch.ones_like(amax)))


def _key(arr: np.ndarray) -> tuple[tuple[int, ...], str]:
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    return arr.shape, hashlib.sha1(arr.tobytes()).hexdigest()


def onnx_input_names(model: nn.Module, onnx_path: str | os.PathLike[str]) -> dict[str, str]:
    """Map each quantized layer's name to its input tensor's name in the FP32 ONNX at ``onnx_path``.

    Conv/Gemm/MatMul weights are compared with the layers' weights in ``[out, in, ...]`` order;
    layers whose weight appears nowhere (or twice, with different inputs) are left out.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(onnx_path)
    if not path.is_file():
        raise QATError(f"ONNX model not found: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise QATError(f"{path} is not a readable ONNX model: {exc}") from None
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}

    def weight(name: str) -> tuple[np.ndarray, bool] | None:
        """(array, transposed-by-a-node) of an initializer input, possibly behind a 2-D Transpose."""
        if name in inits:
            return numpy_helper.to_array(inits[name]), False
        node = producers.get(name)
        if node is not None and node.op_type == "Transpose" and node.input[0] in inits:
            arr = numpy_helper.to_array(inits[node.input[0]])
            return (arr, True) if arr.ndim == 2 else None
        return None

    by_weight: dict[tuple[tuple[int, ...], str], str | None] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        found = weight(node.input[1])
        if found is None:
            continue
        arr, transposed = found
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            out_first = bool(trans_b) != transposed
        elif node.op_type == "MatMul":
            out_first = transposed
        else:
            out_first = True
        if arr.ndim < 2 or arr.dtype.kind != "f":
            continue
        key = _key(arr if out_first else arr.T)
        prev = by_weight.get(key, node.input[0])
        by_weight[key] = node.input[0] if prev == node.input[0] else None  # ambiguous: drop
    names: dict[str, str] = {}
    for lname, layer in quant_layers(model).items():
        if layer.peqa:
            continue
        hit = by_weight.get(_key(layer.weight.detach().cpu().numpy()))
        if hit:
            names[lname] = hit
    log.info("matched %d of %d quantized layers to tensors of %s", len(names), len(quant_layers(model)), path.name)
    return names


def _set_act(layer: QuantLayer, lo: float, amax: float) -> None:
    q = layer.input_quant
    assert q is not None
    q.signed = lo < 0
    q.init_scale(amax if amax > 0 else 1.0)


def _table_lo_amax(r: TensorRange) -> tuple[float, float]:
    """(minimum, clip value) of a range: the true minimum from the histogram stats when a symmetric
    table widened ``lo`` to ``-amax``; the clip value is ``hi`` for non-negative tensors."""
    lo = float((r.histogram or {}).get("min", r.lo))
    return lo, (r.amax if lo < 0 else max(float(r.hi), 0.0))


def init_from_table(model: nn.Module, table: CalibrationTable, names: dict[str, str]) -> list[str]:
    """Set activation scales from ``table`` (PTQ's ``amax/127`` or ``hi/255``); returns the layers left out."""
    missing = []
    for lname, layer in quant_layers(model).items():
        if layer.input_quant is None:
            continue
        tensor = names.get(lname)
        if tensor is None or tensor not in table.tensors:
            missing.append(lname)
            continue
        lo, amax = _table_lo_amax(table.tensors[tensor])
        _set_act(layer, lo, amax)
    return missing


def init_from_data(model: nn.Module, batches: Iterable[Any], forward: Forward, *,
                   layers: list[str] | None = None, max_batches: int = 8) -> int:
    """Set activation scales from the min/max the float model sees on ``batches``; returns the batch count.

    Runs with every quantizer off, so the ranges are the FP32 model's (as calibration measures them).
    """
    targets = {n: l for n, l in quant_layers(model).items()
               if l.input_quant is not None and (layers is None or n in layers)}
    if not targets:
        return 0
    stats: dict[str, list[float]] = {n: [float("inf"), 0.0] for n in targets}

    def hook(name: str) -> Callable[..., None]:
        def record(_module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            stats[name][0] = min(stats[name][0], float(x.min()))
            stats[name][1] = max(stats[name][1], float(x.abs().max()))
        return record

    handles = [l.input_quant.register_forward_pre_hook(hook(n)) for n, l in targets.items()]
    was_training = model.training
    set_quantization(model, False)
    model.eval()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                forward(model, batch)
                seen += 1
                if seen >= max_batches:
                    break
    finally:
        for h in handles:
            h.remove()
        set_quantization(model, True)
        model.train(was_training)
    if seen == 0:
        raise QATError("no batches to observe activation ranges: the data set is empty")
    for name, (lo, amax) in stats.items():
        _set_act(targets[name], lo, amax)
    log.info("activation scales of %d layers from min/max over %d batches", len(targets), seen)
    return seen


def initialize(model: nn.Module, *, table: CalibrationTable | None = None,
               onnx_path: str | os.PathLike[str] | None = None, batches: Iterable[Any] | None = None,
               forward: Forward | None = None, max_batches: int = 8) -> dict[str, str]:
    """Initialise all scales: weights by abs-max; activations from ``table`` (matched through the
    FP32 ``onnx_path`` it was calibrated on), the rest from ``batches``. Returns the layer -> tensor map used.
    """
    init_weight_scales(model)
    names: dict[str, str] = {}
    with_inputs = [n for n, layer in quant_layers(model).items() if layer.input_quant is not None]
    pending = with_inputs
    if table is not None:
        if onnx_path is None:
            raise QATError("initialising from a calibration table needs the FP32 ONNX model it was made from")
        names = onnx_input_names(model, onnx_path)
        pending = init_from_table(model, table, names)
        if pending and len(pending) == len(with_inputs):
            raise QATError(f"the calibration table has none of this model's layer inputs "
                           f"(e.g. layer '{pending[0]}'); was it made from {Path(onnx_path).name}?")
    if pending:
        if batches is None or forward is None:
            raise QATError(f"{len(pending)} layer(s) have no calibrated range (e.g. '{pending[0]}'); "
                           f"pass calibration data to observe them")
        log.info("%d layer(s) not in the calibration table; observing them on the data", len(pending))
        init_from_data(model, batches, forward, layers=pending, max_batches=max_batches)
    return names
