"""calibrate() on real models: MiniLM (ragged text batches, mask values) and the digits CNN."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from converter.calibrate import CalibConfig, CalibrationDataError, CalibrationError, calibrate, recompute
from converter.calib.table import CalibrationTable


def _matmul_inputs(model_path: Path) -> tuple[set[str], dict[str, int]]:
    """Activation inputs of MatMul/Gemm, and for those with a 2-D weight initializer its row count."""
    g = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name: list(i.dims) for i in g.initializer}
    acts, channels = set(), {}
    for node in g.node:
        if node.op_type in ("MatMul", "Gemm"):
            for t in node.input[:2]:
                if t and t not in inits:
                    acts.add(t)
            w = node.input[1]
            if node.op_type == "MatMul" and w in inits and len(inits[w]) == 2 and node.input[0] not in inits:
                channels[node.input[0]] = inits[w][0]
    return acts, channels


def _seen_by_calibration(model: Path, batches: list, name: str) -> np.ndarray:
    """Values of ``name`` as the calibration run computes them (same graph, same extra outputs;
    ONNX Runtime fuses the plain model differently, so its outputs differ in the last bits)."""
    from converter.calib.collector import load_model, open_engine, plan_tensors

    source = load_model(model)
    plan = plan_tensors(source.proto, CalibConfig(scope="all"))
    with open_engine(source, plan) as eng:
        return np.concatenate([eng.run(b, plan.fetch)[name].ravel() for b in batches])


def test_minilm_ranges_for_all_matmul_inputs(minilm_onnx: Path, minilm_table: CalibrationTable,
                                              minilm_batches: list) -> None:
    assert len({b["input_ids"].shape[1] for b in minilm_batches}) > 1, "batches should have ragged lengths"
    acts, channels = _matmul_inputs(minilm_onnx)
    assert acts and acts <= set(minilm_table.tensors)
    for name in acts:
        r = minilm_table.tensors[name]
        assert r.count > 0 and 0 < r.hi < 1e4 and r.lo == -r.hi and r.scale == pytest.approx(r.hi / 127, rel=1e-6)
    assert channels and set(channels) <= set(minilm_table.channel_absmax)
    assert {channels[t] for t in channels} >= {384}
    for name, k in channels.items():
        absmax = minilm_table.channel_absmax[name]
        assert absmax.shape == (k,) and np.all(absmax > 0) and np.all(np.isfinite(absmax))
    assert minilm_table.meta["num_samples"] == 12 and minilm_table.meta["num_batches"] == 3
    assert len(minilm_table.meta["model_sha256"]) == 64


def test_minilm_mask_values_are_excluded_not_fatal(minilm_table: CalibrationTable, minilm_batches: list) -> None:
    assert any((b["attention_mask"] == 0).any() for b in minilm_batches), "padding expected in ragged batches"
    masked = [r for r in minilm_table.tensors.values() if r.nonfinite]
    assert masked, "the attention-mask additions hold -inf / finfo.min values"
    for r in masked:
        assert np.isfinite([r.lo, r.hi, r.scale]).all() and abs(r.hi) < 1e4


def test_streamed_histogram_of_model_output_equals_one_shot(minilm_onnx: Path, minilm_table: CalibrationTable,
                                                             minilm_batches: list) -> None:
    from converter.calib.observers import Histogram

    values = _seen_by_calibration(minilm_onnx, minilm_batches, "last_hidden_state")
    r = minilm_table.get("last_hidden_state")
    h = Histogram.from_dict(r.histogram)
    assert (r.histogram["min"], r.histogram["max"]) == (float(values.min()), float(values.max()))
    assert r.count == values.size
    np.testing.assert_array_equal(h.counts, np.histogram(values, bins=h.edges)[0])


def test_save_load_trt_cache_and_recompute(minilm_table: CalibrationTable, tmp_path: Path) -> None:
    path = minilm_table.save(tmp_path / "calib.json")
    assert path.stat().st_size < 4_000_000
    loaded = CalibrationTable.load(path)
    assert set(loaded.tensors) == set(minilm_table.tensors)
    name = next(iter(loaded.tensors))
    assert loaded.tensors[name] == minilm_table.tensors[name]
    cache = loaded.save_tensorrt_cache(tmp_path / "calib.cache").read_text().splitlines()
    assert len(cache) == len(loaded.tensors) + 1
    same = recompute(loaded, "percentile")
    assert all(same.tensors[t].hi == pytest.approx(loaded.tensors[t].hi) for t in loaded.tensors)
    mm, ent, mse = recompute(loaded, "minmax"), recompute(loaded, "entropy"), recompute(loaded, "mse")
    for t, r in mm.tensors.items():
        if r.count:
            assert r.hi == max(abs(r.histogram["min"]), abs(r.histogram["max"]))
            assert ent.tensors[t].hi <= r.hi * (1 + 1e-9) and mse.tensors[t].hi <= r.hi * (1 + 1e-9)
    asym = recompute(loaded, "minmax", symmetric=False)
    r = asym.get("last_hidden_state")
    assert r.qtype == "uint8" and (r.lo, r.hi) == (r.histogram["min"], r.histogram["max"])
    assert mm.meta["method"] == "minmax" and ent.meta["config"]["method"] == "entropy"


def test_default_scope_is_what_quantize_needs(minilm_onnx: Path, minilm_batches: list,
                                              minilm_table: CalibrationTable) -> None:
    """Default: the tensors any target's QDQ placement quantizes (MatMul/Gemm activation inputs,
    the softmax output rather than its NaN guard), a fraction of every activation; the ranges match
    those of the every-activation run, and `quantize` takes the table."""
    from converter.quantize import quantize

    table = calibrate(minilm_onnx, minilm_batches, CalibConfig(method="percentile"), progress=False)
    acts, channels = _matmul_inputs(minilm_onnx)
    g = onnx.load(str(minilm_onnx), load_external_data=False).graph
    producer = {o: n for n in g.node for o in n.output}
    guarded = {t for t in acts if t in producer and producer[t].op_type == "Where"}
    assert len(guarded) == 6 and not guarded & set(table.tensors)
    assert acts - guarded <= set(table.tensors) and len(table.tensors) < len(minilm_table.tensors) / 3
    assert all(producer[producer[t].input[2]].op_type == "Softmax" for t in guarded)
    assert {producer[t].input[2] for t in guarded} <= set(table.tensors)
    for name, r in table.tensors.items():  # ORT fuses the two graphs differently: last-bit differences
        other = minilm_table.tensors[name]
        assert r.count == other.count and (r.lo, r.hi) == pytest.approx((other.lo, other.hi), rel=1e-3)
    assert set(table.channel_absmax) == set(minilm_table.channel_absmax)
    assert table.meta["config"]["scope"] == "quantizable"
    quantized = quantize(minilm_onnx, table)
    assert sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node) >= len(acts) - len(guarded)


def test_external_data_model_from_another_folder(minilm_onnx: Path, minilm_batches: list, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights in a .data file beside the model: found from any working directory; a proto whose
    data files cannot be found gets an error that says so."""
    model = onnx.load(str(minilm_onnx))
    path = tmp_path / "ext" / "minilm.onnx"
    path.parent.mkdir()
    onnx.save_model(model, str(path), save_as_external_data=True, location="minilm.onnx.data", size_threshold=1024)
    monkeypatch.chdir(tmp_path)
    table = calibrate(path, minilm_batches[:1], CalibConfig(), progress=False)
    assert len(table.tensors) == 49 and len(table.channel_absmax) == 25
    with pytest.raises(CalibrationError, match="external"):
        calibrate(onnx.load(str(path), load_external_data=False), minilm_batches[:1], progress=False)


def test_minmax_without_histograms_cannot_recompute(digits_cnn_onnx: Path, digits_batches: list) -> None:
    table = calibrate(digits_cnn_onnx, digits_batches, progress=False)
    assert all("counts" not in r.histogram for r in table.tensors.values())
    with pytest.raises(CalibrationError, match="without a histogram.*--method entropy"):
        recompute(table, "entropy")


def test_digits_cnn_ranges_and_conv_channels(digits_cnn_onnx: Path, digits_batches: list) -> None:
    table = calibrate(digits_cnn_onnx, digits_batches, CalibConfig(method="mse", scope="all"), progress=False)
    images = np.concatenate([b["image"] for b in digits_batches])
    image = table.get("image")
    assert (image.histogram["min"], image.histogram["max"]) == (float(images.min()), float(images.max()))
    assert image.count == images.size
    np.testing.assert_allclose(table.channel_absmax["image"], [images.max()])
    g = onnx.load(str(digits_cnn_onnx)).graph
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert len(convs) == 2
    assert table.channel_absmax[convs[1].input[0]].shape == (16,)
    logits = _seen_by_calibration(digits_cnn_onnx, digits_batches, "logits")
    r = table.get("logits")
    assert (r.histogram["min"], r.histogram["max"]) == (float(logits.min()), float(logits.max()))
    assert 0 < r.hi <= float(np.abs(logits).max())
    assert table.meta["num_samples"] == 100 and table.meta["method"] == "mse"


def test_explicit_tensors_and_num_samples(digits_cnn_onnx: Path, digits_batches: list) -> None:
    table = calibrate(digits_cnn_onnx, iter(digits_batches), CalibConfig(num_samples=50, channel_stats=False),
                      tensors=["logits", "image"], progress=False)
    assert set(table.tensors) == {"logits", "image"} and not table.channel_absmax
    assert table.meta["num_samples"] == 50 and table.meta["num_batches"] == 2
    assert table.get("image").count == 50 * 64

    def exactly_two(batches: list):
        yield from batches[:2]
        raise AssertionError("a third batch was pulled after num_samples was reached")

    table = calibrate(digits_cnn_onnx, exactly_two(digits_batches), CalibConfig(num_samples=64), progress=False)
    assert table.meta["num_samples"] == 64
    with pytest.raises(CalibrationError, match="'nope' is not in the model"):
        calibrate(digits_cnn_onnx, digits_batches, tensors=["nope"], progress=False)


@pytest.mark.parametrize("make_batches, message", [
    (lambda x: [], "empty"),
    (lambda x: [{"img": x}], "batch 1 .*'img'.*image"),
    (lambda x: [{"image": x.astype(np.float64)}], "batch 1 .*'image' has dtype float64; expected float32"),
    (lambda x: [{"image": x[:, 0]}], "'image' has rank 3"),
    (lambda x: [{"image": x}, {"image": x[:, :, :4]}], "batch 2 .*'image' has size 4 on axis 2"),
    (lambda x: [x], "batch 1 is a ndarray"),
    (lambda x: [{"image": x[:0]}], "hold no samples"),
])
def test_bad_data_errors_name_the_problem(digits_cnn_onnx: Path, digits_split: dict, make_batches, message) -> None:
    x = digits_split["X_test"][:8]
    with pytest.raises(CalibrationDataError, match=message):
        calibrate(digits_cnn_onnx, make_batches(x), progress=False)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="model file not found"):
        calibrate(tmp_path / "absent.onnx", [{}], progress=False)


def test_model_with_nothing_quantizable(tmp_path: Path) -> None:
    """No MatMul/Gemm/Conv: the default scope says so and names the way out; scope='all' works."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    data = [{"x": np.linspace(-1, 3, 8, dtype=np.float32).reshape(2, 4)}]
    with pytest.raises(CalibrationError, match="no tensor `qdq quantize` can quantize.*--all-tensors"):
        calibrate(path, data, progress=False)
    table = calibrate(path, data, CalibConfig(scope="all"), progress=False)
    assert set(table.tensors) == {"x", "y"} and table.get("y").histogram["min"] == 0.0 and table.get("x").hi == 3.0
