"""Score candidate models against FP32 outputs computed once: the inner loop of sensitivity and mixed precision."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ..compare.compare import _mask_for
from ..compare.metrics import ErrorStats
from ..errors import ConverterError

METRICS = ("cosine", "min_cosine", "snr", "top1")


class AccuracyTargetError(ConverterError):
    """A target such as ``cosine=0.999`` is malformed or cannot be reached."""


@dataclass(frozen=True)
class Target:
    """``metric`` must reach ``value`` (all metrics are higher-is-better)."""

    metric: str
    value: float

    @classmethod
    def parse(cls, text: str) -> "Target":
        m = re.fullmatch(r"\s*([a-z_0-9]+)\s*=\s*([-+0-9.eE]+)\s*", text or "")
        if not m or m.group(1) not in METRICS:
            raise AccuracyTargetError(f"bad accuracy target {text!r}: expected METRIC=VALUE with METRIC one of {', '.join(METRICS)} (e.g. cosine=0.999)")
        return cls(m.group(1), float(m.group(2)))

    def met(self, score: float) -> bool:
        return score >= self.value


def score(stats: ErrorStats, metric: str) -> float:
    """One number, higher is better, from accumulated error statistics."""
    if metric == "cosine":
        return stats.mean_cosine
    if metric == "min_cosine":
        return stats.min_cosine
    if metric == "snr":
        return stats.snr_db
    if metric == "top1":
        if stats.top1_agreement is None:
            raise AccuracyTargetError("metric top1 needs a classifier output of shape [batch, classes]")
        return stats.top1_agreement
    raise AccuracyTargetError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


class Evaluator:
    """Holds evaluation feeds and the FP32 model's outputs; scores any candidate on the first output."""

    def __init__(self, reference: str | onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], output: str | None = None,
                 session_options: Any = None) -> None:
        """``session_options`` (onnxruntime.SessionOptions) apply to candidates: e.g. fusions off to score
        exact integer math instead of the CPU's fused INT8 kernels."""
        from runtime import Engine

        self.session_options = session_options
        if not feeds:
            raise AccuracyTargetError("no evaluation data: the data source yielded no samples")
        self.feeds = list(feeds)
        with Engine.load(reference) as eng:
            self.output = output or eng.output_specs[0].name
            self.reference = [eng.run(f, outputs=[self.output])[self.output] for f in self.feeds]

    _SESSION_FIELDS = ("graph_optimization_level", "intra_op_num_threads", "inter_op_num_threads", "execution_mode")

    def __getstate__(self) -> dict:
        """Picklable (to ship to workers once): ONNX Runtime's SessionOptions travel as their thread and
        optimization settings."""
        state = dict(self.__dict__)
        so = state.pop("session_options")
        state["_session"] = None if so is None else {k: getattr(so, k) for k in self._SESSION_FIELDS}
        return state

    def __setstate__(self, state: dict) -> None:
        fields = state.pop("_session")
        self.__dict__.update(state)
        self.session_options = None
        if fields is not None:
            import onnxruntime as ort

            self.session_options = ort.SessionOptions()
            for k, v in fields.items():
                setattr(self.session_options, k, v)

    def stats(self, candidate: str | onnx.ModelProto) -> ErrorStats:
        from runtime import Engine

        stats = ErrorStats()
        with Engine.load(candidate, session_options=self.session_options) as eng:
            for feeds, ref in zip(self.feeds, self.reference):
                got = eng.run(feeds, outputs=[self.output])[self.output]
                classifier = ref.ndim == 2 and ref.shape[1] > 1
                stats.update(ref, got, _mask_for(ref, feeds), classifier=classifier)
        return stats

    def score(self, candidate: str | onnx.ModelProto, metric: str) -> float:
        return score(self.stats(candidate), metric)
