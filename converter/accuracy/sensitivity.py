"""Sensitivity analysis: the output error each quantized layer causes, alone or by its absence.

One calibration table serves every variant: each is the same quantization with a different
exclusion list, so only the Q/DQ insertion and the evaluation run per layer.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from ..calib.table import CalibrationTable
from ..quant.config import QuantConfig
from .evaluate import Evaluator

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
) -> SensitivityReport:
    """Quantize with each layer excluded alone (``without``) and/or with only it kept (``alone``); score each."""
    t0 = time.perf_counter()
    full_model = quantize_fn(config)
    full = evaluator.score(full_model, metric)
    layers = [LayerSensitivity(name, op) for name, op in quantized_layers(full_model, config.op_types)]
    names = [l.node for l in layers]
    total = len(layers) * len(modes)
    done = 0
    if progress:
        progress(done, total)
    for layer in layers:
        if "without" in modes:
            cfg = dataclasses.replace(config, exclude_nodes=tuple(config.exclude_nodes) + (layer.node,))
            layer.without = evaluator.score(quantize_fn(cfg), metric)
            done += 1
        if "alone" in modes:
            others = tuple(n for n in names if n != layer.node)
            cfg = dataclasses.replace(config, exclude_nodes=tuple(config.exclude_nodes) + others)
            layer.alone = evaluator.score(quantize_fn(cfg), metric)
            done += 1
        log.info("%s: without %s, alone %s", layer.node, layer.without, layer.alone)
        if progress:
            progress(done, total)
    return SensitivityReport(metric, full, layers, time.perf_counter() - t0)


def table_quantizer(model: str | onnx.ModelProto, table: CalibrationTable,
                    calib_data: Sequence[dict] | None = None) -> Callable[[QuantConfig], onnx.ModelProto]:
    """A ``quantize_fn`` that reuses one calibration table (and SmoothQuant auto's captured
    activations and searches) for every exclusion list."""
    from ..inspect import load_onnx
    from ..quant.errors import QuantizationError
    from ..quantize import quantize

    smoothquant_cache: dict = {}

    def run(config: QuantConfig) -> onnx.ModelProto:
        try:
            return quantize(model, table, config, calib_data=calib_data, smoothquant_cache=smoothquant_cache)
        except QuantizationError as exc:
            if config.exclude_nodes and str(exc).startswith("nothing to quantize"):
                return model if isinstance(model, onnx.ModelProto) else load_onnx(model)  # every layer in float
            raise

    return run
