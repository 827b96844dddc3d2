"""Automatic mixed precision: keep the most sensitive layers in float until an accuracy target holds."""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import onnx

from ..quant.config import QuantConfig
from .evaluate import Evaluator, Target
from .sensitivity import SensitivityReport, analyze

if TYPE_CHECKING:
    from ..distributed import Executor

log = logging.getLogger(__name__)


@dataclass
class Decision:
    """One greedy step: ``node`` went back to float; the held-out score and latency after it."""

    node: str
    score: float
    latency_ms: float | None


@dataclass
class MixedPrecisionResult:
    target: Target
    model: onnx.ModelProto
    excluded: list[str]
    start_score: float
    start_latency_ms: float | None
    decisions: list[Decision] = field(default_factory=list)
    sensitivity: SensitivityReport | None = None
    seconds: float = 0.0

    @property
    def reached(self) -> bool:
        return self.target.met(self.final_score)

    @property
    def final_score(self) -> float:
        return self.decisions[-1].score if self.decisions else self.start_score

    def to_dict(self) -> dict:
        return {"target": f"{self.target.metric}={self.target.value}", "excluded": self.excluded,
                "start_score": self.start_score, "start_latency_ms": self.start_latency_ms,
                "final_score": self.final_score, "reached": self.reached, "seconds": self.seconds,
                "decisions": [dataclasses.asdict(d) for d in self.decisions]}


def reach_target(
    quantize_fn: Callable[[QuantConfig], onnx.ModelProto],
    sensitivity_eval: Evaluator,
    heldout_eval: Evaluator,
    config: QuantConfig,
    target: Target,
    latency_fn: Callable[[onnx.ModelProto], float] | None = None,
    max_float_layers: int | None = None,
    executor: "Executor | None" = None,
) -> MixedPrecisionResult:
    """Greedy: rank layers by how much un-quantizing each alone helps (on ``sensitivity_eval``),
    then put them back to float one at a time, most helpful first, until ``target`` holds on
    ``heldout_eval``. ``latency_fn`` (optional) times each step so every decision's speed cost shows.
    ``executor`` runs the sensitivity variants (e.g. on Ray); the greedy steps run here.
    """
    t0 = time.perf_counter()
    model = quantize_fn(config)
    start = heldout_eval.score(model, target.metric)
    start_latency = latency_fn(model) if latency_fn else None
    result = MixedPrecisionResult(target, model, [], start, start_latency)
    if target.met(start):
        result.seconds = time.perf_counter() - t0
        return result
    report = analyze(quantize_fn, sensitivity_eval, config, target.metric, executor=executor)
    result.sensitivity = report
    limit = max_float_layers if max_float_layers is not None else len(report.layers)
    excluded: list[str] = []
    for layer in report.ranked()[:limit]:
        excluded.append(layer.node)
        cfg = dataclasses.replace(config, exclude_nodes=tuple(config.exclude_nodes) + tuple(excluded))
        model = quantize_fn(cfg)
        s = heldout_eval.score(model, target.metric)
        lat = latency_fn(model) if latency_fn else None
        result.decisions.append(Decision(layer.node, s, lat))
        log.info("float %s -> %s %.5f%s", layer.node, target.metric, s, f", {lat:.2f} ms" if lat else "")
        if target.met(s):
            break
    result.model, result.excluded = model, excluded
    result.seconds = time.perf_counter() - t0
    return result
