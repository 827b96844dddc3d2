"""Target profiles: one registry read by quantization, check, build and the runtime's saturation warning."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from int8_numerics import assert_fused_close, run_exact
from onnx import helper, numpy_helper
from qdq_graphs import calibrate_table, make_model, run

from converter.check import check_model
from converter.check.graph import GraphIndex, qdq_nodes
from converter.check.saturation import saturation_findings, u8s8_layers
from converter.quant.config import QuantConfig
from converter.quant.errors import QuantizationError
from converter.quantize import quantize
from converter.targets import PROFILES, get_profile, host_cpu_family
from converter.targets.build import BUILD_TARGETS, build_target
from runtime.manifest import TARGETS as ARTIFACTS
from runtime.cpu import CpuInt8, cpu_int8, saturation_warning

AVX2 = CpuInt8("x86_64", frozenset({"avx2"}))
VNNI = CpuInt8("x86_64", frozenset({"avx2", "avx512_vnni"}))


def _layers_model() -> onnx.ModelProto:
    """Conv -> Relu -> flatten -> MatMul -> Gemm: every kind of u8xs8 layer ORT fuses."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("MatMul", ["f", "w2"], ["h"], name="fc1"),
             helper.make_node("Gemm", ["h", "w3", "b3"], ["y"], name="fc2", transB=1)]
    inits = {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
             "b": rng.standard_normal(8).astype(np.float32) * 0.1,
             "w2": rng.standard_normal((8 * 8 * 8, 64)).astype(np.float32) * 0.05,
             "w3": rng.standard_normal((10, 64)).astype(np.float32) * 0.1,
             "b3": rng.standard_normal(10).astype(np.float32) * 0.1}
    return make_model(nodes, {"x": ["batch", 3, 8, 8]}, ["y"], inits)


def _batches(seed: int, n: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)  # images in [0, 4): wide uint8 activations, the case that saturates
    return [{"x": (rng.random((4, 3, 8, 8), dtype=np.float32) * 4)} for _ in range(n)]


def _max_weight_q(model: onnx.ModelProto) -> int:
    index = GraphIndex(model)
    return max(m for _, m, depthwise in u8s8_layers(index, qdq_nodes(index)) if not depthwise)


def test_registry_resolves_cpu_families() -> None:
    assert {"ort-cpu/vnni", "ort-cpu/avx2", "ort-cpu/arm64", "ort-cpu/portable", "tensorrt"} <= set(PROFILES)
    assert get_profile("ort-cpu", "avx2").weight_qmax == 63 and get_profile("ort-cpu", "vnni").weight_qmax == 127
    assert get_profile("ort-cpu", "portable").weight_bits == 7
    assert get_profile("tensorrt").activation_dtype == "int8" and not get_profile("tensorrt").int32_bias
    expected = "avx2" if cpu_int8().u8s8_saturates else ("arm64" if cpu_int8().arch == "arm64" else "vnni")
    assert host_cpu_family() == expected == get_profile("ort-cpu", "auto").cpu
    with pytest.raises(QuantizationError, match="unknown cpu 'avx9'"):
        QuantConfig(cpu="avx9")


def test_every_build_target_has_one_entry_that_names_a_known_int8_profile() -> None:
    """`qdq build`'s targets are data: every artifact kind the runtime loads has one entry, and a target that
    runs INT8 names the quantize profile whose Q/DQ its backend fuses (ort-cuda has none: INT8 is refused)."""
    assert set(BUILD_TARGETS) == set(ARTIFACTS)
    for spec in BUILD_TARGETS.values():
        assert spec.int8_profile is None or spec.int8_profile in {p.name for p in PROFILES.values()}
        assert spec.suffix.endswith(spec.suffixes) and (spec.precision == "fp32" or spec.fp16)
    assert build_target("ort-cuda").int8_profile is None and build_target("ort-cuda").precision == "fp16"
    with pytest.raises(ValueError, match="unknown target 'ort-npu'; choose one of ort-cpu"):
        build_target("ort-npu")


@pytest.mark.parametrize("cpu", ["avx2", "portable"])
def test_seven_bit_profiles_are_exact_on_every_cpu(cpu: str) -> None:
    """The avx2/portable scheme keeps every pair of u8xs8 products inside int16: the fused kernels equal
    exact integer math on this CPU, whatever it is (2%, the tolerance of CPUs with exact dot products)."""
    model = _layers_model()
    q = quantize(model, calibrate_table(model, _batches(1)), QuantConfig(cpu=cpu))
    assert _max_weight_q(q) <= 63
    meta = {p.key: p.value for p in q.metadata_props}
    assert meta["qdq.profile"] == f"ort-cpu/{cpu}" and meta["qdq.int8.exact_needs_vnni"] == "0"
    feeds = _batches(7, 1)[0]
    ref, exact, fused = run(model, feeds)[0], run_exact(q, feeds)["y"], run(q, feeds)[0]
    assert np.abs(exact - ref).max() < 0.05 * np.abs(ref).max()
    err = np.abs(fused - exact).max()
    assert err <= 0.02 * np.abs(exact).max(), f"{cpu_int8().describe()}: fused differs from exact by {err}"
    assert check_model(q, "ort-cpu").ok


def test_avx2_profile_keeps_8_bit_depthwise_weights_and_stays_exact() -> None:
    """MLAS's depthwise kernel widens to int16 before multiplying: 8-bit depthwise weights do not saturate
    (measured under an emulated AVX2-only CPU), so the avx2 profile keeps them; the pointwise Conv after it
    gets 7 bits. Fused equals exact on this CPU, whatever it is."""
    rng = np.random.default_rng(0)
    c = 16
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=c, name="depthwise"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="pointwise")]
    model = make_model(nodes, {"x": ["batch", c, 8, 8]}, ["y"], {
        "w": (rng.standard_normal((c, 1, 3, 3)) * 0.5).astype(np.float32), "b": np.zeros(c, np.float32),
        "w2": (rng.standard_normal((8, c, 1, 1)) * 0.2).astype(np.float32)})
    batches = [{"x": rng.random((2, c, 8, 8), dtype=np.float32) * 4} for _ in range(2)]
    q = quantize(model, calibrate_table(model, batches), QuantConfig(cpu="avx2"))
    index = GraphIndex(q)
    layers = {name: (m, dw) for name, m, dw in u8s8_layers(index, qdq_nodes(index))}
    assert layers["depthwise"] == (127, True) and layers["pointwise"][0] <= 63
    assert check_model(q, "ort-cpu").ok
    assert list(saturation_findings([(n, *v) for n, v in layers.items()], AVX2)) == []
    feeds = {"x": rng.random((2, c, 8, 8), dtype=np.float32) * 4}
    exact, fused = run_exact(q, feeds)["y"], run(q, feeds)[0]
    assert np.abs(fused - exact).max() <= 0.02 * np.abs(exact).max(), cpu_int8().describe()


def test_vnni_model_fails_the_avx2_check_and_warns_on_saturating_cpus() -> None:
    model = _layers_model()
    q = quantize(model, calibrate_table(model, _batches(1)), QuantConfig(cpu="vnni"))
    assert _max_weight_q(q) > 63
    assert check_model(q, "ort-cpu", cpu="vnni").ok
    report = check_model(q, "ort-cpu", cpu="avx2")
    assert not report.ok and any(f.rule == "weight-range" and "--cpu avx2" in f.message for f in report.violations)
    index = GraphIndex(q)
    layers = u8s8_layers(index, qdq_nodes(index))
    assert [f.rule for f in saturation_findings(layers, AVX2)] == ["saturation"]
    assert list(saturation_findings(layers, VNNI)) == []
    meta = {p.key: p.value for p in q.metadata_props}
    assert "re-quantize with --cpu avx2" in saturation_warning(meta, "m.onnx", AVX2)
    assert saturation_warning(meta, "m.onnx", VNNI) is None


def test_tensorrt_quantize_output_passes_tensorrt_check() -> None:
    """Both read the tensorrt profile: float biases, symmetric int8, per-tensor activations."""
    model = _layers_model()
    q = quantize(model, calibrate_table(model, _batches(1), symmetric=True), QuantConfig(target="tensorrt"))
    report = check_model(q, "tensorrt")
    assert report.ok, report.render()
    assert not [i for i in q.graph.initializer if numpy_helper.to_array(i).dtype == np.int32]


def test_fused_path_on_this_cpu_for_the_vnni_scheme() -> None:
    """The vnni scheme on this CPU: exact where dot products are exact, within the stated saturation
    tolerance elsewhere (tests/int8_numerics.py)."""
    model = _layers_model()
    q = quantize(model, calibrate_table(model, _batches(1)), QuantConfig(cpu="vnni"))
    feeds = _batches(7, 1)[0]
    assert_fused_close(run(q, feeds)[0], run_exact(q, feeds)["y"])


def test_cli_cpu_option_quantize_check_build(tmp_path) -> None:
    from click.testing import CliRunner

    from converter.cli import main
    from runtime.manifest import read_manifest

    model = tmp_path / "m.onnx"
    onnx.save(_layers_model(), model)
    np.savez(tmp_path / "x.npz", x=np.concatenate([b["x"] for b in _batches(1)]))
    runner = CliRunner()
    for cpu in ("avx2", "vnni"):
        res = runner.invoke(main, ["quantize", str(model), "--data", str(tmp_path / "x.npz"), "--cpu", cpu,
                                   "-o", str(tmp_path / f"{cpu}.onnx")])
        assert res.exit_code == 0 and f"target ort-cpu/{cpu}" in res.output, res.output
    res = runner.invoke(main, ["check", str(tmp_path / "avx2.onnx"), "--target", "ort-cpu"])
    assert res.exit_code == 0 and "ort-cpu/avx2: OK" in res.output, res.output
    res = runner.invoke(main, ["check", str(tmp_path / "vnni.onnx"), "--target", "ort-cpu", "--cpu", "avx2"])
    assert res.exit_code == 1 and "weight-range" in res.output, res.output
    res = runner.invoke(main, ["build", str(tmp_path / "avx2.onnx"), "--target", "ort-cpu", "--cpu", "portable",
                               "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    build = read_manifest(tmp_path / "out" / "avx2.cpu.onnx.manifest.json").build
    assert build["quant_profile"] == "ort-cpu/avx2" and build["cpu"] == "portable"
    res = runner.invoke(main, ["quantize", str(model), "--data", str(tmp_path / "x.npz"), "--cpu", "avx9",
                               "-o", str(tmp_path / "bad.onnx")])
    assert res.exit_code == 2 and "avx9" in res.output


def test_embeddings_follow_the_profile() -> None:
    """ort-cpu dequantizes the gathered rows (per channel, after the lookup); tensorrt takes no per-channel
    activation, so its table is dequantized as a constant before the Gather; both run and match FP32."""
    from onnx import TensorProto

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("MatMul", ["e", "w"], ["y"], name="proj")]
    model = make_model(nodes, {}, ["y"], {"table": rng.standard_normal((300, 16)).astype(np.float32),
                                          "w": rng.standard_normal((16, 8)).astype(np.float32) * 0.2})
    model.graph.input.append(helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 5]))
    feeds = [{"ids": rng.integers(0, 300, (4, 5))} for _ in range(2)]
    for target, symmetric in (("ort-cpu", False), ("tensorrt", True)):
        q = quantize(model, calibrate_table(model, feeds, symmetric=symmetric), QuantConfig(target=target))
        gather = next(n for n in q.graph.node if n.op_type == "Gather")
        producer = next((n for n in q.graph.node if gather.input[0] in n.output), None)
        consumer = next(n for n in q.graph.node if gather.output[0] in n.input)
        if target == "tensorrt":
            assert producer is not None and producer.op_type == "DequantizeLinear"
            assert check_model(q, "tensorrt").ok
        else:
            assert producer is None and consumer.op_type == "DequantizeLinear"
        ref, exact = run(model, feeds[0])[0], run_exact(q, feeds[0])["y"]
        assert np.abs(exact - ref).max() < 0.05 * np.abs(ref).max()
