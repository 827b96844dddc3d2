"""Helpers for the pass tests: tiny hand-built ONNX graphs, running and calibrating them."""
from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes: Sequence[onnx.NodeProto], inputs: dict[str, Sequence], outputs: Sequence[str],
               initializers: dict[str, np.ndarray] | None = None, opset: int = 20) -> onnx.ModelProto:
    """A float32 model; ``inputs`` maps names to shapes (ints or symbolic strings)."""
    graph = helper.make_graph(
        list(nodes), "tiny",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from runtime import Engine

    with Engine.load(model) as eng:
        out = eng.run(feeds)
    return [out[o.name] for o in model.graph.output]


def calibrate_table(model: onnx.ModelProto, batches: Sequence[dict[str, np.ndarray]], symmetric: bool = False):
    from converter.calib.config import CalibConfig
    from converter.calibrate import calibrate

    return calibrate(model, list(batches), CalibConfig(method="minmax", symmetric=symmetric), progress=False)


def optimized_op_types(model: onnx.ModelProto, tmp_path: Path) -> collections.Counter:
    """Op types in ONNX Runtime's optimized (ORT_ENABLE_ALL) graph of ``model``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(str(tmp_path / "optimized.onnx"))
    return collections.Counter(n.op_type for n in opt.graph.node)
