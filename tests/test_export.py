"""Export to ONNX: real models, checked against PyTorch; failures leave nothing behind."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from converter.errors import ExportError, ModelNotFoundError
from converter.export import export_hf, export_module
from converter.reference_models import accuracy
from runtime import Engine


def _embed_torch(model_dir: Path, texts: list[str]) -> tuple[dict, np.ndarray]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).last_hidden_state.numpy()
    return {k: v.numpy() for k, v in enc.items()}, ref


def test_minilm_export_matches_pytorch(minilm_onnx: Path, minilm_dir: Path) -> None:
    texts = ["The quick brown fox.", "Quantization makes models smaller and faster on CPUs.",
             "A third, rather longer sentence checks that batch and sequence axes are both dynamic."]
    feeds, ref = _embed_torch(minilm_dir, texts)
    with Engine.load(minilm_onnx) as eng:
        assert [s.shape for s in eng.input_specs] == [("batch", "sequence")] * 3
        got = eng.run(feeds)["last_hidden_state"]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4


def test_minilm_export_opset_and_dynamic_axes(minilm_onnx: Path) -> None:
    model = onnx.load(str(minilm_onnx), load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}[""] == 20
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]


def test_digits_cnn_keeps_accuracy(digits_cnn, digits_cnn_onnx: Path, digits_split: dict) -> None:
    X, y = digits_split["X_test"], digits_split["y_test"]
    with torch.no_grad():
        torch_acc = accuracy(digits_cnn(torch.from_numpy(X)).numpy(), y)
    with Engine.load(digits_cnn_onnx) as eng:
        onnx_acc = accuracy(eng.run({"image": X})["logits"], y)
    assert torch_acc > 0.95
    assert onnx_acc == pytest.approx(torch_acc, abs=1e-9)


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        export_hf(tmp_path / "nope", tmp_path / "out.onnx")
    with pytest.raises(ModelNotFoundError, match="config.json"):
        export_hf(tmp_path, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


class _Unexportable(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x)  # no ONNX function for this op


def test_failed_export_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="_Unexportable failed.*bessel_j0"):
        export_module(_Unexportable(), {"x": np.ones((2, 3), np.float32)}, out)
    assert os.listdir(tmp_path) == []


class _Drifting(torch.nn.Module):
    """Exports fine, but the exported graph computes something else than eager torch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.01 if torch.compiler.is_exporting() else x


def test_mismatch_beyond_tolerance_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "drift.onnx"
    with pytest.raises(ExportError, match="differs from torch"):
        export_module(_Drifting(), {"x": np.ones((2, 3), np.float32)}, out)
    assert not out.exists()
    assert [p for p in tmp_path.iterdir()] == []
