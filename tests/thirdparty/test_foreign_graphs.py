"""`qdq quantize` on graphs shaped like other exporters' files: old opsets, initializers listed as inputs,
unfolded Conv-BatchNormalization, fixed batch 1, no shape information."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import graphs
from converter.cli import main
from converter.prepare import prepare_proto
from converter.prepare.opset import OpsetUpgradeError


def _qdq(*args: object):  # noqa: ANN202
    return CliRunner().invoke(main, [str(a) for a in args])


def _cosine_to_fp32(fp32: Path, int8: Path, photos: Path, shape: tuple[int, ...]) -> float:
    """Mean cosine of the two models' logits on the photos (16 images, one run each at batch 1)."""
    from calibration_data import open_data
    from runtime.specs import TensorSpec

    spec = TensorSpec("image", np.dtype(np.float32), (1, *shape[1:]))
    ref, cand = ort.InferenceSession(str(fp32)), ort.InferenceSession(str(int8))
    cos = []
    for feeds in open_data(str(photos), [spec], batch_size=1):
        a, b = ref.run(["logits"], feeds)[0].ravel(), cand.run(["logits"], feeds)[0].ravel()
        cos.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    return float(np.mean(cos))


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("options", [
    pytest.param(dict(opset=11, bn=True, inits_as_inputs=True, batch=1, keep_shapes=False), id="paddle2onnx-like"),
    pytest.param(dict(opset=9), id="opset9"),
    pytest.param(dict(bn=True, layout="NHWC", batch=1), id="tf2onnx-like"),
])
def test_quantizes_foreign_files_end_to_end(tmp_path: Path, photos: Path, options: dict) -> None:
    src = graphs.save(graphs.conv_net(**options), tmp_path, "fp32.onnx")
    before = src.read_bytes()
    out = tmp_path / "int8.onnx"
    res = _qdq("quantize", src, "--data", photos, "-o", out)
    assert res.exit_code == 0, res.output
    assert src.read_bytes() == before  # the input is never changed
    ops = _ops(out)
    assert ops["BatchNormalization"] == 0  # folded into the Conv
    assert ops["QuantizeLinear"] >= 4 and ops["Conv"] == 3  # every Conv and the Gemm get Q/DQ
    q = onnx.load(str(out))
    assert [i.name for i in q.graph.input] == ["image"]  # weights are constants, not feeds
    assert next(o.version for o in q.opset_import if o.domain == "") >= 13
    shape = (1, 32, 32, 3) if options.get("layout") == "NHWC" else (1, 3, 32, 32)
    assert _cosine_to_fp32(src, out, photos, shape) > 0.99


def test_calibration_table_of_an_old_file_fits_quantize(tmp_path: Path, photos: Path) -> None:
    """`qdq calibrate` then `qdq quantize --calib` on an opset-11 file with BN: the same prepared graph."""
    src = graphs.save(graphs.conv_net(opset=11, bn=True, inits_as_inputs=True), tmp_path, "fp32.onnx")
    table = tmp_path / "calib.json"
    res = _qdq("calibrate", src, "--data", photos, "-o", table, "--no-progress")
    assert res.exit_code == 0, res.output
    res = _qdq("quantize", src, "--calib", table, "-o", tmp_path / "int8.onnx", "--no-speed-check")
    assert res.exit_code == 0, res.output
    assert _cosine_to_fp32(src, tmp_path / "int8.onnx", photos, (1, 3, 32, 32)) > 0.99


def test_fold_batchnorm_is_exact() -> None:
    import onnx_ir as ir

    from converter.passes.fold_batchnorm import FoldBatchNormPass

    proto = graphs.conv_net(bn=True)
    model = ir.from_proto(proto)
    assert FoldBatchNormPass()(model).modified
    folded = ir.to_proto(model)
    assert not [n for n in folded.graph.node if n.op_type == "BatchNormalization"]
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString()).run(None, {"image": x})[0]
    got = ort.InferenceSession(folded.SerializeToString()).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_prepare_drops_initializer_inputs_and_upgrades() -> None:
    proto = prepare_proto(graphs.conv_net(opset=10, inits_as_inputs=True))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert next(o.version for o in proto.opset_import if o.domain == "") == 13
    onnx.checker.check_model(proto)


def test_opset_upgrade_failure_names_the_op(tmp_path: Path, photos: Path) -> None:
    """An opset-9 file onnx.version_converter cannot upgrade (a TopK whose indices output was dropped):
    one line naming the node and the remedy, exit 1, nothing written."""
    from onnx import TensorProto, helper

    node = helper.make_node("TopK", ["image"], ["y"], k=2, axis=3, name="head/TopK")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    src = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]), str(src))
    with pytest.raises(OpsetUpgradeError, match="TopK node 'head/TopK'"):
        prepare_proto(onnx.load(str(src)))
    res = _qdq("quantize", src, "--data", photos, "-o", tmp_path / "q.onnx")
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "re-export with opset >= 13" in lines[0] and "head/TopK" in lines[0], res.output
    assert not (tmp_path / "q.onnx").exists()


def test_inspect_counts_weights_in_constant_nodes(tmp_path: Path) -> None:
    """paddle2onnx writes every weight as a Constant node: `qdq inspect` counts them as parameters."""
    proto = graphs.conv_net()
    for init in list(proto.graph.initializer):
        proto.graph.node.insert(0, onnx.helper.make_node("Constant", [], [init.name], value=init))
    del proto.graph.initializer[:]
    src = tmp_path / "constants.onnx"
    onnx.save(proto, str(src))
    res = _qdq("inspect", src)
    assert res.exit_code == 0, res.output
    size_line = next(line for line in res.output.splitlines() if line.startswith("size"))
    # 3*8*9 + 8*16*9 + 16*16*9 + 16*10 + 10 + 3 biases (8+16+16) weights
    total = 3 * 8 * 9 + 8 * 16 * 9 + 16 * 16 * 9 + 16 * 10 + 10 + 8 + 16 + 16
    assert f"{total / 1e6:.2f} M parameters ({total / 1e6:.2f} M of them in 8 Constant nodes)" in size_line
    assert "float32" in res.output  # the weights line is there
