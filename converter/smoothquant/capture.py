"""Run a float model and capture intermediate activations (for SmoothQuant's alpha search)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import onnx_ir as ir

from ..graph_outputs import add_outputs
from ..quant.errors import QuantizationError

log = logging.getLogger(__name__)


def capture(model: ir.Model, names: Sequence[str], feeds: Iterable[dict[str, np.ndarray]],
            on_batch: Callable[[], object] | None = None) -> dict[str, list[np.ndarray]]:
    """Run ``model`` on each feed dict and return the listed intermediate tensors per batch
    (``on_batch`` is called after each).

    The model is not modified: a copy with the tensors exposed as graph outputs is run on
    ONNX Runtime through ``runtime.Engine``.
    """
    from runtime import Engine

    proto = add_outputs(ir.to_proto(model), names)
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    with Engine.load(proto) as eng:
        for feed in feeds:
            try:
                result = eng.run(feed, outputs=list(names))
            except Exception as exc:
                raise QuantizationError(f"running the float model on calibration data failed: {exc}") from exc
            for n in names:
                out[n].append(result[n])
            if on_batch is not None:
                on_batch()
    return out
