"""Top-1 agreement is reported for every 2-D [batch, classes] output, not only outputs named like logits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from converter.cli import main
from converter.compare import compare_models


def _classifier(path: Path, weights: np.ndarray) -> Path:
    """x float32[batch, 16] @ W[16, 1000] -> "output" (1000 classes, a name with no hint of logits)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["output"], name="fc")], "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1000])],
        initializer=[numpy_helper.from_array(weights, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_top1_for_a_1000_class_output_named_output(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 1000)).astype(np.float32)
    w2 = w + 0.3 * rng.standard_normal(w.shape).astype(np.float32)
    ref, cand = _classifier(tmp_path / "ref.onnx", w), _classifier(tmp_path / "cand.onnx", w2)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    got = compare_models(ref, cand, [{"x": x}]).outputs["output"].top1_agreement
    expected = float(np.mean((x @ w).argmax(1) == (x @ w2).argmax(1)))
    assert got is not None and 0.0 < expected < 1.0 and abs(got - expected) <= 1 / 64
    np.savez(tmp_path / "x.npz", x=x)
    res = CliRunner().invoke(main, ["compare", str(ref), str(cand), "--data", str(tmp_path / "x.npz")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    row = res.output.strip().splitlines()[-1]
    assert row.startswith("output") and row.split()[-1] == f"{got:.3f}", res.output
