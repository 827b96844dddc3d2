"""Shared weights exported as ``MatMul(x, Transpose(W))`` (ALBERT) are folded and quantized like any weight."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import helper

from converter.calibrate import calibrate
from converter.passes.fold_weights import FoldWeightTransposePass
from converter.quant.config import QuantConfig
from converter.quantize import quantize

from qdq_graphs import make_model, run


def _shared_weight_model(rng: np.random.Generator):
    """Two MatMuls reuse one weight through their own Transpose, as ALBERT's layers do."""
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt1"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "wt1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Transpose", ["w"], ["wt2"], perm=[1, 0]),
        helper.make_node("MatMul", ["r", "wt2"], ["y"]),
    ]
    w = rng.standard_normal((16, 16)).astype(np.float32) / 4
    return make_model(nodes, {"x": [4, 16]}, ["y"], {"w": w})


def test_transposed_weights_fold_into_initializers(rng: np.random.Generator) -> None:
    model = _shared_weight_model(rng)
    feeds = {"x": rng.standard_normal((4, 16)).astype(np.float32)}
    m = ir.from_proto(model)
    assert FoldWeightTransposePass()(m).modified
    assert "Transpose" not in [n.op_type for n in m.graph]
    np.testing.assert_array_equal(run(ir.to_proto(m), feeds)[0], run(model, feeds)[0])


def test_shared_transposed_weights_are_quantized(rng: np.random.Generator) -> None:
    """Before the fold, neither MatMul had a constant weight, so neither was quantized (ALBERT stayed float)."""
    model = _shared_weight_model(rng)
    data = [{"x": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(4)]
    q = quantize(model, calibrate(model, data, progress=False), QuantConfig(cpu="vnni"))
    weighted = [n for n in q.graph.node if n.op_type == "MatMul"]
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    assert all(producers.get(n.input[1]) == "DequantizeLinear" for n in weighted), "a MatMul kept a float weight"
    ref, out = run(model, data[0])[0], run(q, data[0])[0]
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
