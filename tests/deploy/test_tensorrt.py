"""The TensorRT path: profile options (run everywhere), the guarded errors where TensorRT is missing, and
real engine builds and runs where the tensorrt package and an NVIDIA GPU exist (skipped otherwise)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.build import BuildConfig, BuildError, build, parse_shapes
from converter.build.profiles import ort_profile_options, resolve_profiles
from runtime import BackendUnavailableError, Engine, EngineError, InputError, TensorSpec


def _tensorrt_reason() -> str | None:
    """Why the real TensorRT tests cannot run here, or None when they can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (pip install 'qdq[tensorrt]' on a machine with an NVIDIA GPU)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch (TensorRT engines need an NVIDIA GPU and a CUDA build of torch)"
    return None


NO_TENSORRT = _tensorrt_reason()
needs_tensorrt = pytest.mark.skipif(NO_TENSORRT is not None, reason=str(NO_TENSORRT))

BERT_INPUTS = [TensorSpec(n, np.dtype("int64"), ("batch", "sequence"))
               for n in ("input_ids", "attention_mask", "token_type_ids")]


def test_parse_shapes() -> None:
    assert parse_shapes(["input_ids:1x1,8x128,32x512"]) == {"input_ids": ((1, 1), (8, 128), (32, 512))}
    assert parse_shapes(["a:2x3 b:1x1,1x4,1x8", "c:5"]) == {
        "a": ((2, 3), (2, 3), (2, 3)), "b": ((1, 1), (1, 4), (1, 8)), "c": ((5,), (5,), (5,))}
    for bad, message in [("ids", "expected NAME:MIN,OPT,MAX"), ("ids:1x1,8x128", "one shape or three"),
                         ("ids:1xa", "bad shape '1xa'"), ("ids:1 ids:2", "gives input 'ids' twice")]:
        with pytest.raises(BuildError, match=message):
            parse_shapes([bad])


def test_profiles_share_symbolic_dims_and_check_ranges() -> None:
    profiles = resolve_profiles(BERT_INPUTS, parse_shapes(["input_ids:1x1,4x64,8x256"]))
    assert set(profiles) == {"input_ids", "attention_mask", "token_type_ids"}
    assert profiles["attention_mask"] == ((1, 1), (4, 64), (8, 256))  # same dims as input_ids
    assert ort_profile_options({"input_ids": profiles["input_ids"]}) == {
        "trt_profile_min_shapes": "input_ids:1x1", "trt_profile_opt_shapes": "input_ids:4x64",
        "trt_profile_max_shapes": "input_ids:8x256"}
    # defaults: batch axis and other dynamic axes; fixed axes stay fixed
    image = TensorSpec("image", np.dtype("float32"), ("batch", 1, 8, 8))
    assert resolve_profiles([image], {}) == {"image": ((1, 1, 8, 8), (1, 1, 8, 8), (32, 1, 8, 8))}
    assert resolve_profiles(BERT_INPUTS, {}, default_batch=(1, 2, 4), default_dim=(1, 16, 64))["input_ids"] == (
        (1, 1), (2, 16), (4, 64))
    for given, message in [
        ({"pixels": ((1,), (1,), (1,))}, "'pixels', which is not an input"),
        ({"image": ((1, 3, 8, 8),) * 3}, "axis 1 is fixed at 1"),
        ({"image": ((4, 1, 8, 8), (2, 1, 8, 8), (8, 1, 8, 8))}, "min <= opt <= max"),
    ]:
        with pytest.raises(BuildError, match=message):
            resolve_profiles([image], given)
    with pytest.raises(BuildError, match="dim 'sequence' two ranges"):
        resolve_profiles(BERT_INPUTS, parse_shapes(["input_ids:1x1,1x8,1x8", "attention_mask:1x2,1x8,1x8"]))


@pytest.mark.skipif(NO_TENSORRT is None, reason="TensorRT and a GPU are available here")
def test_missing_tensorrt_gives_one_clear_error(qdq_cnn_sym: Path, tmp_path: Path, cli) -> None:
    with pytest.raises(BackendUnavailableError, match=r"install qdq\[tensorrt\] on a machine with an NVIDIA GPU"):
        build(qdq_cnn_sym, "tensorrt", tmp_path / "cnn.engine")
    assert list(tmp_path.iterdir()) == []
    fake = tmp_path / "cnn.plan"
    fake.write_bytes(b"\0" * 64)
    with pytest.raises(BackendUnavailableError, match=r"qdq\[tensorrt\]"):
        Engine.load(fake)
    code, out = cli("build", qdq_cnn_sym, "--target", "tensorrt", "-o", tmp_path / "x.engine")
    assert code == 1 and out.startswith("Error: ") and "qdq[tensorrt]" in out and len(out.strip().splitlines()) == 1
    code, out = cli("run", fake, "--synthetic")
    assert code == 1 and "qdq[tensorrt]" in out


@needs_tensorrt
def test_tensorrt_engine_digits(qdq_cnn_sym: Path, digits_split: dict, tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    config = BuildConfig(shapes=parse_shapes(["image:1x1x8x8,16x1x8x8,64x1x8x8"]), workspace_gb=1, timing_cache=cache)
    result = build(qdq_cnn_sym, "tensorrt", tmp_path / "cnn.engine", config)
    assert cache.is_file() and cache.stat().st_size > 0
    X = digits_split["X_test"][:64]
    with Engine.load(result.artifact) as eng, Engine.load(qdq_cnn_sym) as ref:
        assert eng.backend == "tensorrt"
        assert [(s.name, s.shape) for s in eng.input_specs] == [("image", ("batch", 1, 8, 8))]
        got, want = eng.run({"image": X})["logits"], ref.run({"image": X})["logits"]
        assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95
        np.testing.assert_allclose(got, want, atol=0.1 * np.abs(want).max())
        with pytest.raises(InputError, match="optimization profile allows 1..64"):
            eng.run({"image": np.zeros((65, 1, 8, 8), np.float32)})
    build(qdq_cnn_sym, "tensorrt", tmp_path / "again.engine", config)  # reuses the timing cache
    broken = tmp_path / "broken.engine"
    broken.write_bytes(result.artifact.read_bytes()[: result.artifact.stat().st_size // 2])
    with pytest.raises(EngineError, match="could not deserialize"):
        Engine.load(broken)


@needs_tensorrt
def test_tensorrt_engine_minilm_dynamic_shapes(qdq_minilm: Path, minilm_feeds, tmp_path: Path, cli) -> None:
    code, out = cli("build", qdq_minilm, "--target", "tensorrt", "-o", tmp_path / "minilm.plan",
                    "--shapes", "input_ids:1x1,2x16,4x64")
    assert code == 0, out
    with Engine.load(tmp_path / "minilm.plan") as eng, Engine.load(qdq_minilm) as ref:
        for batch, seq in [(1, 5), (4, 64)]:
            feeds = minilm_feeds(batch, seq)
            got, want = eng.run(feeds), ref.run(feeds)
            for name in want:
                cos = np.dot(got[name].ravel(), want[name].ravel()) / (
                    np.linalg.norm(got[name]) * np.linalg.norm(want[name]))
                assert cos > 0.99
    code, out = cli("bench", tmp_path / "minilm.plan", "--batch", "2", "--sequence", "16", "--runs", "3")
    assert code == 0, out
