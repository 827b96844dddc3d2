"""`qdq build` for ONNX Runtime targets, end to end on real QDQ models: build, load, run, compare."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from converter.build import BuildConfig, build
from runtime import BackendUnavailableError, Engine
from runtime.manifest import manifest_path_for, read_manifest, sha256_file


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def test_ort_cpu_digits_end_to_end(qdq_cnn: Path, digits_split: dict, tmp_path: Path) -> None:
    result = build(qdq_cnn, "ort-cpu", tmp_path / "cnn.cpu.onnx")
    assert result.artifact == tmp_path / "cnn.cpu.onnx" and result.manifest == manifest_path_for(result.artifact)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.cpu.onnx", "cnn.cpu.onnx.manifest.json"]
    # the offline optimizer fused the Q/DQ groups into integer kernels
    assert "QLinearConv" in _ops(result.artifact) and "Conv" not in _ops(result.artifact)

    m = read_manifest(result.manifest)
    assert (m.target, m.backend, m.providers) == ("ort-cpu", "onnxruntime", ("CPUExecutionProvider",))
    assert m.artifact_sha256 == sha256_file(result.artifact) and m.source_sha256 == sha256_file(qdq_cnn)
    assert m.source_name == qdq_cnn.name and m.qdq_version == "0.1.0" and m.build["optimization_level"] == "extended"
    assert [(s.name, s.shape) for s in m.inputs] == [("image", ("batch", 1, 8, 8))]

    X = digits_split["X_test"][:64]
    with Engine.load(qdq_cnn) as src, Engine.load(result.artifact) as eng:
        assert eng.backend == "onnxruntime" and eng.providers == ["CPUExecutionProvider"]
        assert eng.input_specs == src.input_specs and eng.output_specs == src.output_specs
        np.testing.assert_allclose(eng.run({"image": X})["logits"], src.run({"image": X})["logits"], atol=1e-4)


def test_ort_cpu_minilm(qdq_minilm: Path, minilm_feeds, tmp_path: Path) -> None:
    result = build(qdq_minilm, "ort-cpu", tmp_path)  # a folder: named after the model
    assert result.artifact == tmp_path / "minilm.int8.cpu.onnx"
    assert "QLinearMatMul" in _ops(result.artifact)
    feeds = minilm_feeds(batch=2, sequence=12, seed=7)
    with Engine.load(qdq_minilm) as src, Engine.load(result.artifact) as eng:
        assert [s.shape for s in eng.input_specs] == [("batch", "sequence")] * 3
        want, got = src.run(feeds), eng.run(feeds)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-4)


@pytest.mark.parametrize("target, provider, hint", [
    # ort-cuda (FP16 after fusions, refuses QDQ models): tests/deploy/test_build_cuda.py
    ("ort-trt", "TensorrtExecutionProvider", "qdq\\[tensorrt\\]"),
])
def test_gpu_targets_record_providers_and_need_them(qdq_cnn: Path, digits_split: dict, tmp_path: Path,
                                                    target: str, provider: str, hint: str) -> None:
    import onnxruntime as ort

    if provider in ort.get_available_providers():
        pytest.skip(f"{provider} is available here; this test covers its absence")
    config = BuildConfig(shapes={"image": ((1, 1, 8, 8), (8, 1, 8, 8), (64, 1, 8, 8))}, workspace_gb=2)
    result = build(qdq_cnn, target, tmp_path, config)
    m = read_manifest(result.manifest)
    assert m.providers[0] == provider and m.providers[-1] == "CPUExecutionProvider"
    assert m.build["optimization_level"] == "basic"
    # provider-independent level: every Q/DQ node is kept for the GPU provider to fuse
    assert "QLinearConv" not in _ops(result.artifact) and "DequantizeLinear" in _ops(result.artifact)
    if target == "ort-trt":
        trt = m.provider_options["TensorrtExecutionProvider"]
        assert trt["trt_int8_enable"] == "True" and trt["trt_engine_cache_enable"] == "True"
        assert trt["trt_profile_min_shapes"] == "image:1x1x8x8" and trt["trt_profile_max_shapes"] == "image:64x1x8x8"
        assert trt["trt_max_workspace_size"] == str(2 << 30)
        # relative cache paths are stored relative and resolved next to the artifact at load time
        assert trt["trt_engine_cache_path"] == "cnn.int8.trt.trt_cache"
        resolved = m.resolved_provider_options(tmp_path)["TensorrtExecutionProvider"]
        assert resolved["trt_engine_cache_path"] == str(tmp_path / "cnn.int8.trt.trt_cache")

    with pytest.raises(BackendUnavailableError, match=hint):
        Engine.load(result.artifact)
    # explicit providers override the manifest's: the basic-level model runs anywhere
    X = digits_split["X_test"][:16]
    with Engine.load(result.artifact, providers=["cpu"]) as eng, Engine.load(qdq_cnn) as src:
        np.testing.assert_allclose(eng.run({"image": X})["logits"], src.run({"image": X})["logits"], atol=1e-4)


def test_external_data_travels_with_the_artifact(qdq_cnn: Path, digits_split: dict, tmp_path: Path) -> None:
    src = tmp_path / "src" / "ext.onnx"
    src.parent.mkdir()
    onnx.save(onnx.load(str(qdq_cnn)), str(src), save_as_external_data=True, location="ext.onnx.weights",
              size_threshold=1024)
    result = build(src, "ort-cpu", tmp_path / "out" / "ext.cpu.onnx")
    assert [p.name for p in result.side_files] == ["ext.cpu.onnx.data"]
    m = read_manifest(result.manifest)
    assert [(f.name, f.role) for f in m.files] == [("ext.cpu.onnx.data", "external-data")]
    X = digits_split["X_test"][:8]
    with Engine.load(result.artifact) as eng, Engine.load(qdq_cnn) as ref:
        np.testing.assert_allclose(eng.run({"image": X})["logits"], ref.run({"image": X})["logits"], atol=1e-4)
    data = result.side_files[0]
    data.write_bytes(data.read_bytes()[::-1])
    with pytest.raises(Exception, match="external-data file .*ext.cpu.onnx.data does not match"):
        Engine.load(result.artifact)


def test_cli_build_then_run_and_bench(qdq_cnn: Path, digits_split: dict, tmp_path: Path, cli) -> None:
    code, out = cli("build", qdq_cnn, "--target", "ort-cpu", "-o", tmp_path / "m.cpu.onnx")
    assert code == 0, out
    artifact = tmp_path / "m.cpu.onnx"
    assert f"built ort-cpu: {artifact}" in out and f"manifest {artifact}.manifest.json" in out

    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, image=digits_split["X_test"][:5])
    code, out = cli("run", artifact, "--input", feeds, "-o", tmp_path / "out.npz")
    assert code == 0, out
    assert "logits: float32[5, 10]" in out
    with np.load(tmp_path / "out.npz") as saved, Engine.load(qdq_cnn) as src:
        np.testing.assert_allclose(saved["logits"], src.run({"image": digits_split["X_test"][:5]})["logits"], atol=1e-4)
    # the manifest path itself is loadable too
    code, out = cli("bench", f"{artifact}.manifest.json", "--batch", "2", "--runs", "3", "--warmup", "1", "--json")
    assert code == 0, out
    (row,) = json.loads(out)
    assert row["batch"] == 2 and row["runs"] == 3 and row["p50_ms"] > 0


def test_cli_build_errors_are_one_line(qdq_cnn: Path, tmp_path: Path, cli) -> None:
    code, out = cli("build", tmp_path / "missing.onnx", "--target", "ort-cpu")
    assert code == 1 and out.startswith("Error: model file not found")
    code, out = cli("build", qdq_cnn, "--target", "ort-edge", "-o", tmp_path / "x.onnx")
    assert code == 1 and "Error: output" in out and "must end with .ort" in out
    code, out = cli("build", qdq_cnn, "--target", "tensorrt", "--shapes", "image:1x1x8", "-o", tmp_path / "x.engine")
    assert code == 1 and "rank 3" in out
    code, out = cli("build", qdq_cnn, "--target", "ort-cpu", "-o", qdq_cnn)
    assert code == 1 and "is an input of this command" in out
