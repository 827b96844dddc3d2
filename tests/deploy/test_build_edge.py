"""`qdq build --target ort-edge`: ORT-format models plus the reduced-operators config."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from int8_numerics import FUSED_MIN_CORRELATION, assert_fused_close, run_exact

from converter.build import BuildConfig, build
from runtime import Engine
from runtime.manifest import read_manifest


def test_edge_digits_end_to_end(qdq_cnn: Path, digits_split: dict, tmp_path: Path, cli) -> None:
    result = build(qdq_cnn, "ort-edge", tmp_path / "digits.ort")
    config = tmp_path / "digits.required_operators.config"
    assert result.side_files == (config,)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "digits.ort", "digits.ort.manifest.json", "digits.required_operators.config"]
    assert result.artifact.read_bytes()[4:8] == b"ORTM"  # the ORT-format flatbuffer identifier
    text = config.read_text()
    assert "# - digits.ort" in text and str(tmp_path) not in text  # no staging paths leak into it
    ops = {op for line in text.splitlines() if not line.startswith("#") for op in line.split(";")[2].split(",")}
    assert {"QLinearConv", "QuantizeLinear", "DequantizeLinear"} <= ops

    m = read_manifest(result.manifest)
    assert (m.target, m.providers) == ("ort-edge", ("CPUExecutionProvider",))
    assert [(f.name, f.role) for f in m.files] == [(config.name, "reduced-ops-config")]

    X = digits_split["X_test"][:64]
    with Engine.load(result.artifact) as eng, Engine.load(qdq_cnn) as src:
        assert eng.input_specs == src.input_specs
        np.testing.assert_allclose(eng.run({"image": X})["logits"], src.run({"image": X})["logits"], atol=1e-4)

    code, out = cli("run", result.artifact, "--synthetic", "--batch", "3")
    assert code == 0 and "logits: float32[3, 10]" in out, out
    code, out = cli("bench", result.artifact, "--runs", "3", "--warmup", "1")
    assert code == 0 and "batch   1" in out, out


def test_edge_minilm_with_type_reduction(qdq_minilm: Path, minilm_feeds, tmp_path: Path) -> None:
    result = build(qdq_minilm, "ort-edge", tmp_path, BuildConfig(type_reduction=True, edge_platform="arm"))
    assert result.artifact.name == "minilm.int8.ort"
    (config,) = result.side_files
    assert config.name == "minilm.int8.required_operators_and_types.config"
    assert "QLinearMatMul" in config.read_text() and "{" in config.read_text()  # per-op type lists
    assert read_manifest(result.manifest).build["edge_platform"] == "arm"
    feeds = minilm_feeds(batch=1, sequence=9, seed=3)
    with Engine.load(result.artifact) as eng:
        got = eng.run(feeds)
    exact = run_exact(qdq_minilm, feeds)  # the source model, fusions off: exact integer math
    for name in exact:  # the .ort artifact runs ONNX Runtime's fused INT8 kernels of this CPU
        assert_fused_close(got[name], exact[name])
        assert np.corrcoef(got[name].ravel(), exact[name].ravel())[0, 1] > FUSED_MIN_CORRELATION
