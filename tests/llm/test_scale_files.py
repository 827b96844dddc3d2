"""Large-model paths on a tiny LM: external data past a (lowered) threshold in every LLM writer, and the
one-line memory error before any work."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from converter.cli import main
from converter.llm.config import WeightOnlyConfig
from converter.llm.export import export_causal_lm
from converter.llm.kv_int8 import quantize_kv_cache
from converter.llm.weight_only import quantize_weights
from converter.onnx_files import THRESHOLD_ENV
from runtime import Engine

RTN = WeightOnlyConfig(bits=4, group_size=32, algo="rtn")


def _feeds(past: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(3, 256, (2, 4)), "attention_mask": np.ones((2, past + 4), np.int64),
             "position_ids": np.tile(np.arange(past, past + 4), (2, 1))}
    for layer in range(2):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{layer}.{kind}"] = rng.standard_normal((2, 2, past, 16)).astype(np.float32)
    return feeds


def _run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with Engine.load(path) as eng:
        return eng.run(feeds)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def external_lm(tiny_llama, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama exported with a 4 kB threshold: the path a > 2 GB model takes."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(THRESHOLD_ENV, "4096")
        return export_causal_lm(tiny_llama, tmp_path_factory.mktemp("external") / "tiny.onnx").path


def test_export_writes_external_data_that_ort_loads(external_lm: Path, tiny_llama_onnx: Path) -> None:
    import onnx

    data = external_lm.with_name("tiny.onnx.data")
    assert data.is_file() and data.stat().st_mode & 0o777 == external_lm.stat().st_mode & 0o777
    proto = onnx.load(str(external_lm), load_external_data=False)
    inline = [t.name for t in proto.graph.initializer
              if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) > 1024]
    assert not inline  # every large weight lies in the data file
    assert data.stat().st_size > 250_000
    assert not list(external_lm.parent.glob(".*"))  # no staging left behind
    got, ref = _run(external_lm, _feeds()), _run(tiny_llama_onnx, _feeds())
    for name, value in ref.items():
        np.testing.assert_array_equal(got[name], value)


@pytest.mark.parametrize("writer", ["weights", "kv"])
def test_writers_keep_external_data_and_leave_the_input(external_lm: Path, tiny_llama_onnx: Path,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        writer: str) -> None:
    """A lazily loaded external-data input gives an output with its own data file and the same outputs as the
    inline path; the input and its data are untouched (same folder, so a shared data name would clash)."""
    before = {p.name: _digest(p) for p in external_lm.parent.iterdir()}
    out_ext = external_lm.with_name(f"tiny.{writer}.onnx")
    out_inline = tmp_path / f"inline.{writer}.onnx"
    monkeypatch.setenv(THRESHOLD_ENV, "4096")
    if writer == "weights":
        quantize_weights(external_lm, out_ext, RTN)
        monkeypatch.delenv(THRESHOLD_ENV)
        quantize_weights(tiny_llama_onnx, out_inline, RTN)
    else:
        quantize_kv_cache(external_lm, out_ext)
        monkeypatch.delenv(THRESHOLD_ENV)
        quantize_kv_cache(tiny_llama_onnx, out_inline)
    assert out_ext.with_name(out_ext.name + ".data").is_file()
    assert not out_inline.with_name(out_inline.name + ".data").exists()
    with Engine.load(out_inline) as eng:
        feeds = {s.name: _feeds()[s.name] for s in eng.input_specs if s.name in _feeds()}
        if writer == "kv":
            for s in eng.input_specs:
                if s.name.endswith("_scale"):
                    feeds[s.name] = np.full((2, 2, 3, 1), 0.01, np.float32)
                elif s.name.startswith("past_"):
                    feeds[s.name] = np.zeros((2, 2, 3, 16), np.int8) + 5
        ref = eng.run(feeds)
    got = _run(out_ext, feeds)
    for name, value in ref.items():
        np.testing.assert_array_equal(got[name], value)
    assert {p.name: _digest(p) for p in external_lm.parent.iterdir() if p.name in before} == before


def test_small_output_of_an_external_input_is_inlined(external_lm: Path, tmp_path: Path) -> None:
    """Below the threshold the output holds its weights itself: it must not point at the input's data file."""
    out = tmp_path / "elsewhere" / "tiny.int4.onnx"
    quantize_weights(external_lm, out, RTN)
    assert [p.name for p in out.parent.iterdir()] == ["tiny.int4.onnx"]
    assert _run(out, _feeds())["logits"].shape == (2, 4, 256)


@pytest.mark.parametrize("args", [
    ["quantize-weights", "{model}", "-o", "{out}", "--weights", "int4", "--group-size", "32"],
    ["quantize-kv", "{model}", "-o", "{out}"],
    ["quantize-w8a8", "{model}", "-o", "{out}", "--data", "builtin:corpus"],
])
def test_memory_error_before_any_work(tiny_llama_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      args: list[str]) -> None:
    monkeypatch.setenv("QDQ_MEMORY_LIMIT", "1M")
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(main, [a.format(model=tiny_llama_onnx, out=out) for a in args])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith("Error: qdq ") and "needs about" in line, line
    assert "0.0 GB is allowed by QDQ_MEMORY_LIMIT" in line and "smaller model" in line
    assert not list(tmp_path.iterdir())


def test_export_memory_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from converter.llm.memory_budget import hf_float32_bytes

    folder = Path(__file__).resolve().parents[2] / "tools" / "reference_lm"
    monkeypatch.setenv("QDQ_MEMORY_LIMIT", "0.5G")
    result = CliRunner().invoke(main, ["export-lm", "--model", str(folder), "-o", str(tmp_path / "lm.onnx")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert f"({hf_float32_bytes(folder) / 1e9:.2f} GB of float32 weights" in result.output
    assert not list(tmp_path.iterdir())


def test_memory_limit_must_be_a_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from converter.llm.memory_budget import MemoryBudgetError, check_memory

    monkeypatch.setenv("QDQ_MEMORY_LIMIT", "lots")
    with pytest.raises(MemoryBudgetError, match="QDQ_MEMORY_LIMIT must be a size"):
        check_memory("quantize-kv", 1e6)
    monkeypatch.setenv("QDQ_MEMORY_LIMIT", "64G")
    assert check_memory("quantize-kv", 1e9) == pytest.approx(3.5e9 + 1e9)  # one file
    assert check_memory("quantize-kv", 4e9) == pytest.approx(1.2 * 4e9 + 1e9)  # external data


def test_w8a8_runs_a_large_model_from_disk(reference_lm_onnx: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration and SmoothQuant's capture run a large model from a disk copy (no proto/bytes copies):
    the same quantized model as from bytes (up to float rounding: that session packs no weights, so its
    sums run in another order), written with external data."""
    import onnx

    from converter.llm.data import training_text
    from converter.llm.w8a8 import W8A8Config, quantize_w8a8

    config = W8A8Config(num_samples=8, seq_len=32, batch=4)
    inline = quantize_w8a8(reference_lm_onnx, tmp_path / "inline.onnx", config, text=training_text())
    monkeypatch.setenv(THRESHOLD_ENV, "4096")
    large = quantize_w8a8(reference_lm_onnx, tmp_path / "large.onnx", config, text=training_text())
    assert (tmp_path / "large.onnx.data").is_file() and not (tmp_path / "inline.onnx.data").exists()
    assert (large.quantized_matmuls, large.float_matmuls) == (inline.quantized_matmuls, inline.float_matmuls)
    a, b = onnx.load(str(inline.path)), onnx.load(str(large.path))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in a.graph.initializer}
    assert {t.name for t in b.graph.initializer} == set(weights)
    for t in b.graph.initializer:
        got, want = onnx.numpy_helper.to_array(t), weights[t.name]
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        else:  # a level on a rounding boundary may move by one
            diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, t.name
