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

    from ..onnx_files import disk_copy, runs_from_disk

    if not runs_from_disk(model):
        return _run(Engine.load(add_outputs(ir.to_proto(model), names)), names, feeds, on_batch)
    with disk_copy(model) as path:  # a large model: ONNX Runtime maps its weights from the copy
        import onnx

        graph = path.with_name("capture.onnx")
        onnx.save(add_outputs(onnx.load(str(path), load_external_data=False), names), str(graph))
        return _run(Engine.load(graph, session_options=low_memory_options()), names, feeds, on_batch)


def low_memory_options():  # noqa: ANN201 - onnxruntime.SessionOptions
    """Session options that keep ONNX Runtime from holding a second (pre-packed) copy of the weights."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.disable_prepacking", "1")
    return so


def _run(engine, names: Sequence[str], feeds: Iterable[dict[str, np.ndarray]],  # noqa: ANN001
         on_batch: Callable[[], object] | None) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    with engine as eng:
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
