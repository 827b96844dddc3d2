"""`qdq build --target ort-cuda`: FP16 after transformer fusions (attention included), built and checked on CPU.

No GPU here: the fused graph is compared with the unfused one on ONNX Runtime's CPU provider (Attention and
MultiHeadAttention have CPU kernels), the FP16 artifact runs there with --allow-fallback, and loading it
without that flag is the one-line error naming what to install.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from converter.build import BuildConfig, BuildError, build
from converter.build.attention import fuse_attention
from runtime import BackendUnavailableError, Engine
from runtime.manifest import read_manifest


def _cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT (hidden 64, 4 heads), saved with save_pretrained."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64)
    folder = tmp_path_factory.mktemp("tiny-bert") / "bert"
    transformers.BertModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert_onnx(tiny_bert_dir: Path) -> Path:
    """The tiny BERT exported by the default (dynamo) exporter."""
    from converter.export import export_hf

    return export_hf(tiny_bert_dir, tiny_bert_dir.parent / "bert.onnx").path


def _feeds(batch: int = 3, sequence: int = 24, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, sequence), np.int64)
    mask[1, sequence // 2:] = 0  # a padded sentence
    mask[2, 5:] = 0
    return {"input_ids": rng.integers(5, 900, (batch, sequence)).astype(np.int64),
            "token_type_ids": np.zeros((batch, sequence), np.int64), "attention_mask": mask}


def _ops(path: Path) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node))


def _float_weights(path: Path) -> dict[str, int]:
    """Parameters per float dtype among the initializers."""
    out: dict[str, int] = {}
    for t in onnx.load(str(path)).graph.initializer:
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            name = "float16" if t.data_type == onnx.TensorProto.FLOAT16 else "float32"
            out[name] = out.get(name, 0) + int(np.prod(t.dims))
    return out


def _inspect(cli, path: Path) -> dict:
    code, out = cli("inspect", path, "--json")
    assert code == 0, out
    return json.loads(out)


@pytest.mark.parametrize("which, layers", [("tiny", 2), ("minilm", 6)])
def test_ort_cuda_is_fp16_with_fused_attention(which: str, layers: int, tiny_bert_onnx: Path, minilm_onnx: Path,
                                               tmp_path: Path, cli) -> None:
    source = tiny_bert_onnx if which == "tiny" else minilm_onnx
    code, out = cli("build", source, "--target", "ort-cuda", "-o", tmp_path)
    assert code == 0, out
    artifact = tmp_path / f"{source.stem}.cuda.onnx"
    assert f"built ort-cuda: {artifact}" in out and "fp16" in out and f"Attention {layers}" in out
    summary = _inspect(cli, artifact)
    ops = summary["op_counts"]
    assert ops["Attention"] == layers and ops["SkipLayerNormalization"] == 2 * layers and ops["BiasGelu"] == layers
    assert "Softmax" not in ops and "IsNaN" not in ops  # the exported attention is gone
    weights = _float_weights(artifact)
    assert weights["float16"] > 50 * weights.get("float32", 0), weights  # the float32 rest: LayerNorm params
    assert summary["weight_dtypes"]["float16"] == weights["float16"]
    m = read_manifest(artifact.with_name(artifact.name + ".manifest.json"))
    assert m.build["precision"] == "fp16" and m.build["fusions"]["Attention"] == layers
    assert m.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    # inputs and outputs stay float32 / int64 (keep_io_types): the same specs as the source
    with Engine.load(source) as src, Engine.load(artifact, allow_fallback=True) as eng:
        assert eng.input_specs == src.input_specs and eng.output_specs == src.output_specs
        feeds = _feeds()
        want, got = src.run(feeds), eng.run(feeds)
    for name in want:  # FP16 weights and activations: within 2% of each output's range
        scale = float(np.abs(want[name]).max())
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], atol=0.02 * scale)


def test_fused_fp32_graph_matches_the_unfused_one(tiny_bert_onnx: Path, minilm_onnx: Path, tmp_path: Path) -> None:
    for source in (tiny_bert_onnx, minilm_onnx):
        result = build(source, "ort-cuda", tmp_path / f"{source.stem}.cuda.onnx", BuildConfig(precision="fp32"))
        ops = _ops(result.artifact)
        assert result.precision == "fp32" and ops["Attention"] >= 2 and "Softmax" not in ops
        assert "float16" not in _float_weights(result.artifact)
        assert read_manifest(result.manifest).build["precision"] == "fp32"
        with Engine.load(source) as src, Engine.load(result.artifact, providers=["cpu"]) as eng:
            feeds = _feeds()
            want, got = src.run(feeds), eng.run(feeds)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-4 * float(np.abs(want[name]).max()))


def test_cross_attention_fuses_into_multi_head_attention(tmp_path: Path) -> None:
    """Q from one tensor, K and V from another: no packed QKV, so MultiHeadAttention on the projections."""
    import torch

    from converter.export import export_module

    class Cross(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = (torch.nn.Linear(32, 32) for _ in range(3))

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            def heads(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(t.shape[0], t.shape[1], 4, 8).transpose(1, 2)

            o = torch.nn.functional.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(y)), heads(self.v(y)))
            return o.transpose(1, 2).reshape(x.shape[0], x.shape[1], 32)

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 5, 32)).astype(np.float32), rng.standard_normal((2, 7, 32)).astype(np.float32)
    src = export_module(Cross().eval(), {"x": x, "y": y}, tmp_path / "cross.onnx", output_names=["out"],
                        dynamic_axes={"x": {0: "batch", 1: "sq"}, "y": {0: "batch", 1: "skv"}}).path
    model = onnx.load(str(src))
    assert fuse_attention(model) == {"MultiHeadAttention": 1}
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with Engine.load(src) as ref:
        want = ref.run({"x": x, "y": y})["out"]
    np.testing.assert_allclose(sess.run(None, {"x": x, "y": y})[0], want, atol=1e-5)


def test_the_legacy_exporters_attention_fuses_too(tiny_bert_dir: Path, tmp_path: Path) -> None:
    """The TorchScript exporter spells attention differently (K transposed by one Transpose); same result."""
    import onnxruntime as ort

    from converter.export import export_hf

    src = export_hf(tiny_bert_dir, tmp_path / "legacy.onnx", exporter="legacy").path
    model = onnx.load(str(src))
    assert fuse_attention(model) == {"Attention": 2}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = _feeds()
    with Engine.load(src) as ref:
        want = ref.run(feeds)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-4 * float(np.abs(want[name]).max()))


def test_a_product_that_is_not_attention_is_left_alone(tmp_path: Path) -> None:
    """softmax(Q @ R) where R is the key projection merely reshaped to [B, N, H, S] (no transpose): not
    attention over heads, so nothing is fused and the graph is unchanged."""
    import torch

    from converter.export import export_module

    class NotAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = (torch.nn.Linear(32, 32) for _ in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, s = x.shape[0], x.shape[1]
            q = self.q(x).reshape(b, s, 4, 8).transpose(1, 2)
            r = self.k(x).reshape(b, 4, 8, s)
            v = self.v(x).reshape(b, s, 4, 8).transpose(1, 2)
            return (torch.softmax(q @ r, dim=-1) @ v).transpose(1, 2).reshape(b, s, 32)

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((2, 6, 32)).astype(np.float32)
    src = export_module(NotAttention().eval(), {"x": x}, tmp_path / "not.onnx", output_names=["out"],
                        dynamic_axes={"x": {0: "batch", 1: "seq"}}).path
    model = onnx.load(str(src))
    before = model.SerializeToString()
    assert fuse_attention(model) == {} and model.SerializeToString() == before


def _zoo_models():
    from tool_modules import load_tool

    return load_tool("zoo_models")


@pytest.mark.parametrize("name, op", [("t5-encoder", "Attention"), ("gpt2", "MultiHeadAttention"),
                                      ("deberta-v2", "MultiHeadAttention")])
def test_attention_cores_beyond_bert_fuse(name: str, op: str, tmp_path: Path) -> None:
    """The families the fast subset leaves out, each a different core: T5 (relative-position bias plus mask,
    two additive terms, no scaling), GPT-2 (Q/K/V split from one packed Gemm, heads merged to [B*S, D] after),
    DeBERTa-v2 (masked fill instead of an additive mask, scores with batch and heads merged, disentangled
    relative terms added to them). One fused op per layer, and the fused FP32 graph computes the model."""
    from converter.export import export_module

    zoo = _zoo_models()
    spec = zoo.MODELS[name]
    src = export_module(spec.build("tiny"), spec.feeds(2, seed=1000, size="tiny"), tmp_path / f"{name}.onnx",
                        output_names=[spec.output], dynamic_axes=spec.axes()).path
    result = build(src, "ort-cuda", tmp_path / "out" / f"{name}.cuda.onnx", BuildConfig(precision="fp32"))
    ops = _ops(result.artifact)
    assert ops.get(op) == zoo.LAYERS and "Softmax" not in ops, ops
    feeds = spec.feeds(3, seed=5, size="tiny")
    feeds["attention_mask"][1, 6:] = 0  # a padded sentence
    with Engine.load(src) as ref, Engine.load(result.artifact, providers=["cpu"]) as eng:
        want, got = ref.run(feeds)[spec.output], eng.run(feeds)[spec.output]
    np.testing.assert_allclose(got, want, atol=1e-4 * float(np.abs(want).max()))


def test_int8_qdq_model_is_refused_in_one_line(qdq_minilm: Path, tmp_path: Path, cli) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out = cli("build", qdq_minilm, "--target", "ort-cuda", "-o", out_dir)
    assert code == 1, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    assert "CUDA provider has no INT8 kernels" in lines[0] and "--target ort-trt" in lines[0]
    assert "--target tensorrt" in lines[0]
    assert list(out_dir.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(BuildError, match="no INT8 kernels"):
        build(qdq_minilm, "ort-cuda", out_dir / "m.cuda.onnx", BuildConfig(precision="fp32"))
    assert list(out_dir.iterdir()) == []


def test_loading_needs_cuda_unless_fallback_is_allowed(tiny_bert_onnx: Path, tmp_path: Path, cli) -> None:
    if _cuda_available():
        pytest.skip("CUDAExecutionProvider is available here; this test covers its absence")
    result = build(tiny_bert_onnx, "ort-cuda", tmp_path)
    with pytest.raises(BackendUnavailableError, match=r"CUDAExecutionProvider.*onnxruntime-gpu.*CUDA 13.*--allow-fallback"):
        Engine.load(result.artifact)
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, **_feeds())
    code, out = cli("run", result.artifact, "--input", feeds)
    assert code == 1 and out.startswith("Error: ") and "onnxruntime-gpu" in out and len(out.strip().splitlines()) == 1
    code, out = cli("run", result.artifact, "--input", feeds, "--allow-fallback")
    assert code == 0 and "last_hidden_state: float32[3, 24, 64]" in out, out
    with Engine.load(result.artifact, allow_fallback=True) as eng:
        assert eng.session.get_providers() == ["CPUExecutionProvider"]


def test_cnn_builds_fp16_without_attention(digits_cnn_onnx: Path, digits_split: dict, tmp_path: Path) -> None:
    result = build(digits_cnn_onnx, "ort-cuda", tmp_path)
    ops = _ops(result.artifact)
    assert "Attention" not in ops and "Conv" in ops and result.precision == "fp16"
    assert "float32" not in _float_weights(result.artifact)
    X = digits_split["X_test"][:64]
    with Engine.load(digits_cnn_onnx) as src, Engine.load(result.artifact, allow_fallback=True) as eng:
        want, got = src.run({"image": X})["logits"], eng.run({"image": X})["logits"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=0.01 * float(np.abs(want).max()))
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.98


def test_external_data_model_builds(digits_cnn_onnx: Path, digits_split: dict, tmp_path: Path) -> None:
    """Weights in a side file (models past 2 GB): the artifact keeps them in its own side file."""
    src = tmp_path / "src" / "ext.onnx"
    src.parent.mkdir()
    onnx.save(onnx.load(str(digits_cnn_onnx)), str(src), save_as_external_data=True, location="ext.onnx.weights",
              size_threshold=256)
    result = build(src, "ort-cuda", tmp_path / "out" / "ext.cuda.onnx")
    assert [p.name for p in result.side_files] == ["ext.cuda.onnx.data"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ext.cuda.onnx", "ext.cuda.onnx.data", "ext.cuda.onnx.manifest.json"]
    X = digits_split["X_test"][:16]
    with Engine.load(digits_cnn_onnx) as ref, Engine.load(result.artifact, allow_fallback=True) as eng:
        want, got = ref.run({"image": X})["logits"], eng.run({"image": X})["logits"]
    np.testing.assert_allclose(got, want, atol=0.01 * float(np.abs(want).max()))


def test_precision_choices(qdq_cnn: Path, tmp_path: Path, cli) -> None:
    code, out = cli("build", qdq_cnn, "--target", "ort-cpu", "--precision", "fp16", "-o", tmp_path)
    assert code == 1 and "ort-cpu runs FP32" in out and list(tmp_path.iterdir()) == []
    code, out = cli("build", qdq_cnn, "--target", "ort-cpu", "--precision", "fp32", "--fp16", "-o", tmp_path)
    assert code == 1 and "contradict" in out
    code, out = cli("build", qdq_cnn, "--target", "ort-cuda", "--precision", "bf16")
    assert code == 2 and "Usage:" in out
    # ort-trt: TensorRT's FP16 kernels for the float layers by default, off with --precision fp32
    for precision, enabled in ((None, "True"), ("fp32", "False")):
        result = build(qdq_cnn, "ort-trt", tmp_path / f"{precision}.trt.onnx", BuildConfig(precision=precision))
        m = read_manifest(result.manifest)
        assert m.provider_options["TensorrtExecutionProvider"]["trt_fp16_enable"] == enabled
        assert m.build["precision"] == (precision or "fp16")
    assert read_manifest(build(qdq_cnn, "ort-cpu", tmp_path / "c.cpu.onnx").manifest).build["precision"] == "fp32"


def test_small_vocabulary_model_builds(tmp_path: Path) -> None:
    """The build's check feeds token ids below the smallest table the inputs index (a 200-token vocabulary
    failed with 'indices element out of data bounds' when ids went up to 1000)."""
    import torch
    import transformers

    from converter.build import build
    from converter.export import export_hf

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)
    transformers.BertModel(config).eval().save_pretrained(tmp_path / "bert")
    fp32 = export_hf(tmp_path / "bert", tmp_path / "bert.onnx").path
    result = build(fp32, "ort-cuda", tmp_path / "bert.cuda.onnx")
    assert dict(result.fusions).get("Attention") == 1 and result.precision == "fp16"
