"""Export: the QDQ ONNX reproduces the fake-quant torch model and has the PTQ's layout; the
initial scales are the PTQ's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from qat_helpers import forward

from converter.errors import ExportError
from converter.qat import (
    QATConfig, QATError, TrainConfig, check_layout, distillation_loss, export_qat, initialize, quantize_model, to_peqa,
    train,
)
from converter.qat.pipeline import epochs
from runtime import Engine


def _trained(qat_cnn, digits_cnn, digits_batches, steps: int = 6):
    train(qat_cnn, distillation_loss(digits_cnn, forward), epochs(digits_batches),
          TrainConfig(steps=steps, lr=2e-3, progress=False))
    return qat_cnn


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_export_round_trip_matches_fake_quant_torch(qat_cnn, digits_cnn, digits_batches, digits_split,
                                                    tmp_path: Path) -> None:
    model = _trained(qat_cnn, digits_cnn, digits_batches)
    X = digits_split["X_test"]
    out = tmp_path / "qat.onnx"
    res = export_qat(model, {"image": X[:4]}, out, output_names=["logits"], check_inputs={"image": X})
    assert res.path == out and out.is_file()
    assert res.mismatch["logits"] < 0.01
    with torch.no_grad():
        ref = model(torch.from_numpy(X)).numpy()
    with Engine.load(out) as eng:  # default ORT optimizations: fused integer kernels
        got = eng.run({"image": X})["logits"]
    close = np.abs(got - ref) <= 1e-4 + 1e-3 * np.abs(ref)
    assert close.mean() > 0.9  # integer kernels requantize in fixed point: some values one step off
    assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.99
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_exported_layout_is_the_ptq_qdq_layout(qat_cnn, digits_split, tmp_path: Path) -> None:
    out = export_qat(qat_cnn, {"image": digits_split["X_test"][:4]}, tmp_path / "q.onnx",
                     output_names=["logits"]).path
    assert check_layout(out) == {"weight_dq": 4, "bias_dq": 4, "activation_qdq": 4}
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 20
    inits = _inits(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        x_dq, w_dq = producers[node.input[0]], producers[node.input[1]]
        assert x_dq.op_type == w_dq.op_type == "DequantizeLinear"
        assert producers[x_dq.input[0]].op_type == "QuantizeLinear"
        assert inits[x_dq.input[2]].dtype == np.uint8 and inits[x_dq.input[2]] == 0  # non-negative inputs
        w = inits[w_dq.input[0]]
        assert w.dtype == np.int8 and np.abs(w).max() <= 7  # 4-bit values in int8 containers
        axis = next(a.i for a in w_dq.attribute if a.name == "axis")
        assert axis == 0 and inits[w_dq.input[1]].shape == (w.shape[0],)
        b_dq = producers[node.input[2]]  # Conv and Gemm biases: int32, scale = input scale x weight scale
        assert inits[b_dq.input[0]].dtype == np.int32
        np.testing.assert_allclose(inits[b_dq.input[1]], inits[x_dq.input[1]] * inits[w_dq.input[1]], rtol=1e-6)
    assert not any(a.dtype == np.float32 and a.ndim >= 2 for a in inits.values()), "float weights left"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["qdq.int8.exact_needs_vnni"] == "0" and meta["qdq.profile"] == "qat W4A8"  # exact on every CPU


def test_w8_export_warns_on_cpus_that_saturate(digits_cnn, digits_batches, digits_split, tmp_path: Path) -> None:
    """8-bit QAT weights are exact only where u8xs8 dot products are: the model says so, and loading it on
    an AVX2-only CPU warns with the remedy."""
    from runtime.cpu import CpuInt8, saturation_warning

    model = quantize_model(digits_cnn, QATConfig(weight_bits=8, act_bits=8))
    initialize(model, batches=digits_batches, forward=forward)
    out = export_qat(model, {"image": digits_split["X_test"][:4]}, tmp_path / "w8.onnx", output_names=["logits"]).path
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["qdq.int8.exact_needs_vnni"] == "1" and meta["qdq.profile"] == "qat W8A8"
    avx2, vnni = CpuInt8("x86_64", frozenset({"avx2"})), CpuInt8("x86_64", frozenset({"avx2", "avx512_vnni"}))
    assert "QAT: --weight-bits 7" in saturation_warning(meta, out.name, avx2)
    assert saturation_warning(meta, out.name, vnni) is None


def test_export_refuses_bad_models(digits_cnn, digits_split, tmp_path: Path) -> None:
    x = {"image": digits_split["X_test"][:2]}
    with pytest.raises(QATError, match="no fake-quantized layers"):
        export_qat(digits_cnn, x, tmp_path / "a.onnx")
    low = quantize_model(digits_cnn, QATConfig(weight_bits=4, act_bits=4))
    with pytest.raises(QATError, match="uninitialised scales"):
        export_qat(low, x, tmp_path / "b.onnx")
    initialize(low, batches=[x], forward=forward)
    with pytest.raises(QATError, match="8-bit activations"):
        export_qat(low, x, tmp_path / "b.onnx")
    with pytest.raises(QATError, match="uninitialised scales"):
        to_peqa(quantize_model(digits_cnn, QATConfig()))
    assert not list(tmp_path.iterdir())


def test_export_check_catches_a_wrong_graph(qat_cnn, digits_split, tmp_path: Path, monkeypatch) -> None:
    """The round-trip check is real: an export form with a wrong scale is refused and leaves no file."""
    from converter.qat import export as qexport  # the export form, patched to write a wrong scale

    real = qexport._ActQDQ.__init__

    def wrong_scale(self, q):
        real(self, q)
        self.scale *= 1.5

    monkeypatch.setattr(qexport._ActQDQ, "__init__", wrong_scale)
    with pytest.raises(ExportError, match="differs from the fake-quant torch model"):
        export_qat(qat_cnn, {"image": digits_split["X_test"][:64]}, tmp_path / "w.onnx", output_names=["logits"])
    assert not list(tmp_path.iterdir())


def test_peqa_export_stores_the_frozen_integers(qat_cnn, digits_split, tmp_path: Path) -> None:
    to_peqa(qat_cnn)
    out = export_qat(qat_cnn, {"image": digits_split["X_test"][:8]}, tmp_path / "p.onnx", output_names=["logits"]).path
    ints = sorted((a for a in _inits(onnx.load(str(out))).values() if a.dtype == np.int8 and a.ndim >= 2),
                  key=lambda a: a.size)
    frozen = sorted((l.weight_int.numpy() for l in (qat_cnn[0], qat_cnn[2], qat_cnn[6], qat_cnn[8])),
                    key=lambda a: a.size)
    for a, b in zip(ints, frozen):
        np.testing.assert_array_equal(a, b)


def test_scales_start_from_the_ptq(digits_cnn, digits_cnn_onnx: Path, digits_batches) -> None:
    """Initialised from the calibration table (matched through the FP32 ONNX), W8A8 scales equal the
    scales the PTQ writes for the same table."""
    from converter.calib.config import CalibConfig
    from converter.calibrate import calibrate
    from converter.quant.config import QuantConfig
    from converter.quantize import quantize

    table = calibrate(digits_cnn_onnx, digits_batches, CalibConfig(symmetric=False), progress=False)
    model = quantize_model(digits_cnn, QATConfig(weight_bits=8, act_bits=8))
    names = initialize(model, table=table, onnx_path=digits_cnn_onnx)
    assert names == {"0": "image", "2": "relu", "6": "_unsafe_view", "8": "relu_2"}

    ptq = quantize(digits_cnn_onnx, table, QuantConfig(activation_dtype="uint8", cpu="vnni"))  # 8-bit weights, as the QAT
    inits = _inits(ptq)
    producers = {o: n for n in ptq.graph.node for o in n.output}
    checked = 0
    for node in ptq.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        x_dq, w_dq = producers[node.input[0]], producers[node.input[1]]
        x_name = producers[x_dq.input[0]].input[0]
        layer = next(model.get_submodule(k) for k, v in names.items() if v == x_name)
        assert layer.input_quant.signed is False
        assert layer.input_quant.effective_scale().item() == pytest.approx(inits[x_dq.input[1]].item(), rel=1e-6)
        np.testing.assert_allclose(layer.weight_quant.effective_scale().detach().numpy(), inits[w_dq.input[1]],
                                   rtol=1e-6)
        np.testing.assert_array_equal(layer.integer_weight().numpy(), inits[w_dq.input[0]])
        checked += 1
    assert checked == 4


def test_table_from_another_model_is_refused(digits_cnn, digits_cnn_onnx: Path) -> None:
    from converter.calib.table import CalibrationTable, TensorRange

    table = CalibrationTable(tensors={"other": TensorRange("other", "minmax", -1.0, 1.0, 1 / 127, 0)})
    model = quantize_model(digits_cnn, QATConfig())
    with pytest.raises(QATError, match="none of this model's layer inputs"):
        initialize(model, table=table, onnx_path=digits_cnn_onnx)
