"""Preprocessing passes: Softmax NaN-guard removal and the residual Sum rewrite (ORT CPU)."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import helper

from converter.passes.cleanup import StripNanGuardsPass
from converter.passes.ort_cpu import ResidualSumPass

from qdq_graphs import make_model, optimized_op_types, run


def _guarded_softmax(mask_fill: float):
    nodes = [
        helper.make_node("Add", ["s", "mask"], ["m"]),
        helper.make_node("Softmax", ["m"], ["p"], axis=-1),
        helper.make_node("IsNaN", ["p"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "p"], ["g"]),
        helper.make_node("MatMul", ["g", "v"], ["y"]),
    ]
    mask = np.where(np.arange(6) < 4, 0.0, mask_fill).astype(np.float32)
    v = np.arange(12, dtype=np.float32).reshape(6, 2)
    return make_model(nodes, {"s": [2, 6]}, ["y"], {"mask": mask, "zero": np.array(0.0, np.float32), "v": v})


def test_nan_guard_is_removed_and_function_kept(rng: np.random.Generator) -> None:
    model = _guarded_softmax(float(np.finfo(np.float32).min))
    feeds = {"s": rng.standard_normal((2, 6)).astype(np.float32)}
    m = ir.from_proto(model)
    assert StripNanGuardsPass()(m).modified
    ops = [n.op_type for n in m.graph]
    assert "IsNaN" not in ops and "Where" not in ops
    out = ir.to_proto(m)
    np.testing.assert_array_equal(run(out, feeds)[0], run(model, feeds)[0])


def test_nan_guard_kept_when_mask_uses_minus_inf() -> None:
    m = ir.from_proto(_guarded_softmax(float("-inf")))
    assert not StripNanGuardsPass()(m).modified
    assert "IsNaN" in [n.op_type for n in m.graph]


def _post_ln_block():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["lin"]),
        helper.make_node("Add", ["lin", "x"], ["res"]),
        helper.make_node("LayerNormalization", ["res", "g", "beta"], ["y"], axis=-1, epsilon=1e-12),
    ]
    rng = np.random.default_rng(1)
    inits = {"w": rng.standard_normal((16, 16)).astype(np.float32), "b": rng.standard_normal(16).astype(np.float32),
             "g": np.ones(16, np.float32), "beta": np.zeros(16, np.float32)}
    return make_model(nodes, {"x": ["batch", "seq", 16]}, ["y"], inits)


def test_residual_sum_blocks_skip_layernorm_fusion(tmp_path, rng: np.random.Generator) -> None:
    model = _post_ln_block()
    assert optimized_op_types(model, tmp_path)["SkipLayerNormalization"] == 1
    m = ir.from_proto(model)
    assert ResidualSumPass()(m).modified
    out = ir.to_proto(m)
    ops = optimized_op_types(out, tmp_path)
    assert ops["SkipLayerNormalization"] == 0 and ops["Sum"] == 1
    feeds = {"x": rng.standard_normal((2, 5, 16)).astype(np.float32)}
    np.testing.assert_allclose(run(out, feeds)[0], run(model, feeds)[0], atol=1e-5)
