"""runtime.Engine on real models: specs, runs, feed validation and load errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime import BackendUnavailableError, Engine, EngineError, InputError, synthetic_feeds
from runtime.bench import benchmark


def test_specs_and_run(digits_cnn_onnx: Path, digits_split: dict) -> None:
    with Engine.load(digits_cnn_onnx) as eng:
        (spec,) = eng.input_specs
        assert (spec.name, spec.dtype, spec.shape) == ("image", np.dtype("float32"), ("batch", 1, 8, 8))
        assert [o.name for o in eng.output_specs] == ["logits"]
        out = eng.run({"image": digits_split["X_test"][:5]})
        assert out["logits"].shape == (5, 10)
        only = eng.run({"image": digits_split["X_test"][:2]}, outputs=["logits"])
        assert list(only) == ["logits"]


def test_load_from_bytes_and_proto(digits_cnn_onnx: Path) -> None:
    import onnx

    proto = onnx.load(str(digits_cnn_onnx))
    x = np.zeros((1, 1, 8, 8), np.float32)
    a = Engine.load(digits_cnn_onnx.read_bytes()).run({"image": x})["logits"]
    b = Engine.load(proto).run({"image": x})["logits"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({"img": np.zeros((1, 1, 8, 8), np.float32)}, "unknown input 'img'.*image"),
        ({}, "missing input 'image'"),
        ({"image": np.zeros((1, 1, 8, 8), np.float64)}, "'image' has dtype float64; expected float32"),
        ({"image": np.zeros((1, 8, 8), np.float32)}, "'image' has rank 3.*expected rank 4"),
        ({"image": np.zeros((1, 3, 8, 8), np.float32)}, "'image' has size 3 on axis 1; expected 1"),
    ],
)
def test_bad_feeds_name_the_input(digits_cnn_onnx: Path, feeds: dict, message: str) -> None:
    with Engine.load(digits_cnn_onnx) as eng, pytest.raises(InputError, match=message):
        eng.run(feeds)


def test_corrupt_and_foreign_files(tmp_path: Path, digits_cnn_onnx: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(digits_cnn_onnx.read_bytes()[:3000])
    text = tmp_path / "notes.onnx"
    text.write_text("{\"not\": \"a model\"}")
    empty = tmp_path / "empty.onnx"
    empty.touch()
    for path, message in [(truncated, "could not load .*truncated.onnx"), (text, "not an ONNX model"),
                          (empty, "empty"), (tmp_path / "missing.onnx", "not found"), (tmp_path, "folder")]:
        with pytest.raises(EngineError, match=message):
            Engine.load(path)


def test_absent_provider_names_what_to_install(digits_cnn_onnx: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        Engine.load(digits_cnn_onnx, providers=["cuda"])


def test_synthetic_feeds_and_benchmark(minilm_onnx: Path) -> None:
    with Engine.load(minilm_onnx) as eng:
        feeds = synthetic_feeds(eng.input_specs, batch=2, sequence=16)
        assert {k: v.shape for k, v in feeds.items()} == {s.name: (2, 16) for s in eng.input_specs}
        r = benchmark(eng, batch=2, sequence=16, runs=3, warmup=1)
    assert r.runs == 3 and r.p50 > 0 and r.throughput > 0


def test_staging_dir_moves_files_into_place_or_leaves_nothing(tmp_path: Path) -> None:
    from runtime.atomic import move_into_place, staging_dir

    out = tmp_path / "m.onnx"
    with staging_dir(out) as stage:
        (stage / "m.onnx").write_bytes(b"model")
        (stage / "m.onnx.data").write_bytes(b"weights")
        moved = move_into_place(stage, out)
    assert moved == [tmp_path / "m.onnx.data", out] and out.read_bytes() == b"model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    with pytest.raises(RuntimeError), staging_dir(tmp_path / "n.onnx") as stage:
        (stage / "n.onnx").write_bytes(b"half")
        raise RuntimeError("build failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_scalar_input_keeps_rank_zero() -> None:
    """A rank-0 feed passes validation and reaches ONNX Runtime as rank 0 (not reshaped to (1,))."""
    import numpy as np
    from onnx import TensorProto, helper

    from runtime import Engine

    graph = helper.make_graph([helper.make_node("Identity", ["s"], ["y"])], "g",
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    with Engine.load(model) as eng:
        out = eng.run({"s": np.float32(3.0)})["y"]
    assert out.shape == () and out == 3.0
