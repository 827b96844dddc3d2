"""Sensitivity analysis: the output error each quantized layer causes, alone or by its absence.

One calibration table serves every variant: each is the same quantization with a different
exclusion list, so only the Q/DQ insertion and the evaluation run per layer.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx

from ..calib.table import CalibrationTable
from ..quant.config import QuantConfig
from .evaluate import Evaluator

if TYPE_CHECKING:
    from ..distributed import Executor

log = logging.getLogger(__name__)

MODES = ("without", "alone")


@dataclass
class LayerSensitivity:
    """``without``: score with every layer quantized but this one; ``alone``: only this one quantized."""

    node: str
    op_type: str
    without: float | None = None
    alone: float | None = None

    def gain(self, full: float) -> float:
        """How much keeping this layer in float improves the score over full quantization."""
        return (self.without - full) if self.without is not None else 0.0


@dataclass
class SensitivityReport:
    metric: str
    full: float  # score with every layer quantized
    layers: list[LayerSensitivity]
    seconds: float

    def ranked(self) -> list[LayerSensitivity]:
        """Most sensitive first: largest gain from keeping the layer in float."""
        return sorted(self.layers, key=lambda l: l.gain(self.full), reverse=True)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "full": self.full, "seconds": self.seconds,
                "layers": [{**dataclasses.asdict(l), "gain": l.gain(self.full)} for l in self.ranked()]}


def quantized_layers(qmodel: onnx.ModelProto, op_types: Sequence[str]) -> list[tuple[str, str]]:
    """(name, op type) of the nodes that run on dequantized inputs, i.e. the INT8 layers, in graph order."""
    dq_outputs = {o for n in qmodel.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [(n.name, n.op_type) for n in qmodel.graph.node
            if n.op_type in op_types and n.input and n.input[0] in dq_outputs and n.name]


def analyze(
    quantize_fn: Callable[[QuantConfig], onnx.ModelProto],
    evaluator: Evaluator,
    config: QuantConfig,
    metric: str = "cosine",
    modes: Sequence[str] = ("without",),
    progress: Callable[[int, int], None] | None = None,
    executor: Executor | None = None,
) -> SensitivityReport:
    """Quantize with each layer excluded alone (``without``) and/or with only it kept (``alone``); score each.

    The variants are independent: ``executor`` (default: this process) runs them, e.g. on Ray. Then
    ``quantize_fn`` and ``evaluator`` must pickle (:func:`table_quantizer`'s and :class:`Evaluator` do);
    they travel once per job, not per variant.
    """
    from ..distributed import LocalExecutor

    t0 = time.perf_counter()
    full_model = quantize_fn(config)
    full = evaluator.score(full_model, metric)
    layers = [LayerSensitivity(name, op) for name, op in quantized_layers(full_model, config.op_types)]
    del full_model
    names = tuple(l.node for l in layers)
    variants = [(layer.node, mode) for layer in layers for mode in MODES if mode in modes]
    done = 0
    if progress:
        progress(done, len(variants))

    def finished(_: int) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, len(variants))

    scores = (executor or LocalExecutor()).map(
        score_variant, variants, context=(quantize_fn, evaluator, config, names, metric),
        label=lambda v: f"sensitivity of layer '{v[0]}' ({v[1]})", on_result=finished)
    by_variant = dict(zip(variants, scores))
    for layer in layers:
        layer.without = by_variant.get((layer.node, "without"))
        layer.alone = by_variant.get((layer.node, "alone"))
        log.info("%s: without %s, alone %s", layer.node, layer.without, layer.alone)
    return SensitivityReport(metric, full, layers, time.perf_counter() - t0)


def score_variant(context: tuple, variant: tuple[str, str]) -> float:
    """One task: quantize without ``node`` (mode ``without``) or with only it (``alone``), then score."""
    quantize_fn, evaluator, config, names, metric = context
    node, mode = variant
    excluded = (node,) if mode == "without" else tuple(n for n in names if n != node)
    cfg = dataclasses.replace(config, exclude_nodes=tuple(config.exclude_nodes) + excluded)
    return evaluator.score(quantize_fn(cfg), metric)


class TableQuantizer:
    """A ``quantize_fn`` that reuses one calibration table (and SmoothQuant auto's captured
    activations and searches) for every exclusion list. Pickles without its cache, so it can be
    shipped to workers once; each worker process then keeps its own cache."""

    def __init__(self, model: str | onnx.ModelProto, table: CalibrationTable,
                 calib_data: Sequence[dict] | None = None) -> None:
        self.model = str(model) if isinstance(model, os.PathLike) else model
        self.table = table
        self.calib_data = calib_data
        self.smoothquant_cache: dict = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "smoothquant_cache": {}}

    def __call__(self, config: QuantConfig) -> onnx.ModelProto:
        from ..inspect import load_onnx
        from ..quant.errors import QuantizationError
        from ..quantize import quantize

        try:
            return quantize(self.model, self.table, config, calib_data=self.calib_data,
                            smoothquant_cache=self.smoothquant_cache)
        except QuantizationError as exc:
            if config.exclude_nodes and str(exc).startswith("nothing to quantize"):
                # every layer in float
                return self.model if isinstance(self.model, onnx.ModelProto) else load_onnx(self.model)
            raise


def table_quantizer(model: str | onnx.ModelProto, table: CalibrationTable,
                    calib_data: Sequence[dict] | None = None) -> Callable[[QuantConfig], onnx.ModelProto]:
    """A ``quantize_fn`` that reuses one calibration table for every exclusion list (see TableQuantizer)."""
    return TableQuantizer(model, table, calib_data)
