"""Corrupt, truncated or mismatched artifacts and manifests get clear errors; failed builds leave nothing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converter.build import BuildConfig, BuildError, build
from converter.errors import ModelFileError
from runtime import BackendUnavailableError, Engine, EngineError
from runtime.manifest import manifest_path_for, read_manifest


@pytest.fixture()
def built(qdq_cnn: Path, tmp_path: Path) -> Path:
    return build(qdq_cnn, "ort-cpu", tmp_path / "m.cpu.onnx").artifact


def test_truncated_artifact_is_caught_by_its_manifest(built: Path) -> None:
    built.write_bytes(built.read_bytes()[:5000])
    with pytest.raises(EngineError, match=r"m\.cpu\.onnx does not match its manifest .*m\.cpu\.onnx\.manifest\.json.*bytes"):
        Engine.load(built)


def test_modified_artifact_of_same_size_is_caught(built: Path) -> None:
    data = bytearray(built.read_bytes())
    data[-10] ^= 0xFF
    built.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="sha256 .* on disk, .* recorded"):
        Engine.load(built)


def test_corrupt_artifact_without_manifest(built: Path) -> None:
    manifest_path_for(built).unlink()
    built.write_bytes(built.read_bytes()[:5000])
    with pytest.raises(EngineError, match=r"ONNX Runtime could not load .*m\.cpu\.onnx"):
        Engine.load(built)


@pytest.mark.parametrize("edit, message", [
    (lambda m: "{not json", "is not valid JSON"),
    (lambda m: json.dumps({**m, "schema": "other/1"}), "is not a qdq build manifest"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "artifact_sha256"}), "missing field 'artifact_sha256'"),
    (lambda m: json.dumps({**m, "target": "gpu"}), "unknown target 'gpu'"),
    (lambda m: json.dumps({**m, "artifact": "other.onnx"}), "describes 'other.onnx', not 'm.cpu.onnx'"),
    (lambda m: json.dumps({**m, "target": "tensorrt"}), "says target tensorrt .* but .*m.cpu.onnx is a .onnx file"),
])
def test_bad_manifest_names_the_problem(built: Path, edit, message: str) -> None:
    mpath = manifest_path_for(built)
    mpath.write_text(edit(json.loads(mpath.read_text())))
    with pytest.raises(EngineError, match=message):
        Engine.load(built)


def test_manifest_path_loads_its_artifact(built: Path, digits_split: dict) -> None:
    with Engine.load(manifest_path_for(built)) as eng:
        assert eng.run({"image": digits_split["X_test"][:2]})["logits"].shape == (2, 10)
    missing = built.with_name("gone.onnx.manifest.json")
    missing.write_text(manifest_path_for(built).read_text().replace('"m.cpu.onnx"', '"gone.onnx"'))
    with pytest.raises(EngineError, match="names .*gone.onnx, which does not exist"):
        Engine.load(missing)


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelFileError, match="bad.onnx is not a valid ONNX model"):
        build(bad, "ort-cpu", out / "bad.cpu.onnx")
    # a valid ONNX model ONNX Runtime cannot run: a custom-domain op with no kernel
    node = helper.make_node("Mystery", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    custom = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.example", 1)]),
              str(custom))
    for target in ("ort-cpu", "ort-edge"):
        with pytest.raises(BuildError, match="could not (optimize|convert)"):
            build(custom, target, out)
    assert list(out.iterdir()) == []  # no artifact, manifest, config or staging folder


def test_failed_rebuild_keeps_the_previous_artifact(built: Path, digits_split: dict, tmp_path: Path) -> None:
    before = built.read_bytes(), manifest_path_for(built).read_text()
    bad = tmp_path / "empty.onnx"
    bad.touch()
    with pytest.raises(ModelFileError, match="empty"):
        build(bad, "ort-cpu", built)
    assert (built.read_bytes(), manifest_path_for(built).read_text()) == before
    Engine.load(built).run({"image": digits_split["X_test"][:1]})
    assert sorted(p.name for p in built.parent.iterdir()) == ["empty.onnx", "m.cpu.onnx", "m.cpu.onnx.manifest.json"]


def test_rebuild_replaces_artifact_and_manifest_together(qdq_cnn: Path, qdq_cnn_sym: Path, built: Path) -> None:
    build(qdq_cnn_sym, "ort-cpu", built)
    m = read_manifest(manifest_path_for(built))
    assert m.source_name == qdq_cnn_sym.name
    Engine.load(built)  # hashes agree


def test_options_are_validated(qdq_cnn: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="unknown target 'gpu'"):
        build(qdq_cnn, "gpu", tmp_path)
    with pytest.raises(BuildError, match="must end with .engine or .plan"):
        build(qdq_cnn, "tensorrt", tmp_path / "x.onnx")
    with pytest.raises(BuildError, match="optimization level 'max'"):
        BuildConfig(opt_level="max")
    with pytest.raises(BuildError, match="workspace must be positive"):
        BuildConfig(workspace_gb=0)


def test_engine_file_goes_to_tensorrt_and_its_manifest_is_checked(qdq_cnn: Path, tmp_path: Path) -> None:
    """A .engine artifact (any bytes will do: it never reaches TensorRT here) with a manifest."""
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed; this test covers its absence")
    except ImportError:
        pass
    from converter.build.io_specs import onnx_io_specs
    from converter.build.manifest import write_manifest
    from converter.build.staging import StagedBuild

    engine = tmp_path / "m.engine"
    engine.write_bytes(np.random.default_rng(0).bytes(4096))
    inputs, outputs = onnx_io_specs(onnx.load(str(qdq_cnn)))
    write_manifest("tensorrt", engine, qdq_cnn, StagedBuild(providers=[], build={"tensorrt_version": "10.0"}),
                   inputs, outputs)
    assert read_manifest(manifest_path_for(engine)).backend == "tensorrt"
    with pytest.raises(BackendUnavailableError, match=r"install qdq\[tensorrt\] on a machine with an NVIDIA GPU"):
        Engine.load(engine)  # manifest checks passed; the backend is what is missing
    engine.write_bytes(engine.read_bytes()[:100])
    with pytest.raises(EngineError, match="does not match its manifest"):
        Engine.load(engine)
