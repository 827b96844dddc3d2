"""Compare a quantized model against its FP32 reference on real data: outputs and, optionally, every layer."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..calib.observers import HistogramObserver
from ..errors import ConverterError
from ..inspect import load_onnx
from .metrics import ErrorStats
from .pairs import TensorPair, match_quantized_tensors, with_outputs

log = logging.getLogger(__name__)


class CompareError(ConverterError):
    """The two models cannot be compared (different inputs/outputs, no data)."""


@dataclass
class LayerError:
    pair: TensorPair
    stats: ErrorStats = field(default_factory=ErrorStats)  # candidate's dequantized tensor vs FP32 twin
    local: ErrorStats = field(default_factory=ErrorStats)  # candidate's own float input vs its Q/DQ output
    observer: HistogramObserver = field(default_factory=lambda: HistogramObserver(num_bins=512))  # FP32 values

    def to_dict(self) -> dict[str, Any]:
        return {"tensor": self.pair.float_name, "dq_tensor": self.pair.dq_name, "consumers": list(self.pair.consumer_ops),
                **self.stats.to_dict(), "local_snr_db": self.local.snr_db}


@dataclass
class CompareReport:
    reference: str
    candidate: str
    outputs: dict[str, ErrorStats]
    layers: list[LayerError]
    samples: int
    seconds: float

    def worst_layers(self) -> list[LayerError]:
        """Layers sorted worst first (lowest SNR against the FP32 twin)."""
        return sorted(self.layers, key=lambda l: l.stats.snr_db)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "samples": self.samples,
            "seconds": self.seconds,
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
            "layers": [l.to_dict() for l in self.worst_layers()],
        }


def _mask_for(output: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray | None:
    """Padding mask for [B, S, ...] outputs when the feeds carry an attention mask of shape [B, S]."""
    mask = feeds.get("attention_mask")
    if mask is None or output.ndim < 2 or output.shape[:2] != mask.shape:
        return None
    return mask.astype(bool).reshape(mask.shape + (1,) * (output.ndim - 2))


def _is_classifier(output: np.ndarray) -> bool:
    """Every 2-D [batch, classes > 1] output gets top-1 agreement, whatever its name."""
    return output.ndim == 2 and output.shape[1] > 1


def compare_models(
    reference: str | os.PathLike[str],
    candidate: str | os.PathLike[str],
    data: Iterable[dict[str, np.ndarray]],
    *,
    per_layer: bool = False,
    providers: list[str] | None = None,
) -> CompareReport:
    """Run both models on every batch of ``data`` and accumulate error statistics.

    Output metrics ignore padded positions when the feeds carry an ``attention_mask``. With
    ``per_layer``, every activation the candidate quantizes is compared with its FP32 twin.
    """
    from runtime import Engine

    t0 = time.perf_counter()
    ref_model = load_onnx(reference)
    cand_model = load_onnx(candidate)
    ref_outputs = [o.name for o in ref_model.graph.output]
    cand_outputs = {o.name for o in cand_model.graph.output}
    common = [o for o in ref_outputs if o in cand_outputs]
    if not common:
        raise CompareError(f"{candidate} shares no output name with {reference} (reference outputs: {', '.join(ref_outputs)})")
    pairs = match_quantized_tensors(ref_model, cand_model) if per_layer else []
    if per_layer:
        log.info("matched %d quantized tensors to their float twins", len(pairs))
        ref_model = with_outputs(ref_model, [p.float_name for p in pairs])
        cand_model = with_outputs(cand_model, [p.dq_name for p in pairs] + [p.float_name for p in pairs])
    ref_eng = Engine.load(ref_model, providers=providers)
    cand_eng = Engine.load(cand_model, providers=providers)
    ref_inputs = {s.name for s in ref_eng.input_specs}
    if ref_inputs != {s.name for s in cand_eng.input_specs}:
        raise CompareError(f"the models take different inputs: {sorted(ref_inputs)} vs {sorted(s.name for s in cand_eng.input_specs)}")

    outputs = {name: ErrorStats() for name in common}
    layers = [LayerError(p) for p in pairs]
    samples = 0
    for feeds in data:
        r = ref_eng.run(feeds)
        c = cand_eng.run(feeds)
        for name, stats in outputs.items():
            stats.update(r[name], c[name], _mask_for(r[name], feeds), classifier=_is_classifier(r[name]))
        for layer in layers:
            p = layer.pair
            layer.stats.update(r[p.float_name], c[p.dq_name])
            layer.local.update(c[p.float_name], c[p.dq_name])
            layer.observer.update(r[p.float_name])
        samples += len(next(iter(feeds.values())))
    if samples == 0:
        raise CompareError("no data: the data source yielded no samples")
    return CompareReport(str(reference), str(candidate), outputs, layers, samples, time.perf_counter() - t0)
