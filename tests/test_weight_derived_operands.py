"""Models whose MatMul operands are computed from weights (and input shapes) calibrate and quantize."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from converter.calibrate import calibrate
from converter.export import export_hf
from converter.quant.config import QuantConfig
from converter.quantize import quantize
from runtime import Engine


def test_deberta_v2_relative_position_projections(tmp_path: Path) -> None:
    """DeBERTa-v2 projects its relative-position embeddings (weights, sliced by the input length): no
    calibrated range exists for them, so those MatMuls stay float instead of failing the quantization."""
    from transformers import DebertaV2Config, DebertaV2Model

    torch.manual_seed(0)
    config = DebertaV2Config(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=128, max_position_embeddings=64, relative_attention=True,
                             pos_att_type=["p2c", "c2p"], max_relative_positions=32)
    DebertaV2Model(config).eval().save_pretrained(tmp_path / "deberta")
    path = export_hf(tmp_path / "deberta", tmp_path / "deberta.onnx").path
    names = {i.name for i in onnx.load(str(path)).graph.input}
    rng = np.random.default_rng(0)
    feeds = [{k: v for k, v in {"input_ids": rng.integers(0, 300, (4, 12)), "attention_mask": np.ones((4, 12), np.int64),
                                "token_type_ids": np.zeros((4, 12), np.int64)}.items() if k in names} for _ in range(2)]
    q = quantize(path, calibrate(path, feeds, progress=False), QuantConfig())
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) > 0
    with Engine.load(path) as ref, Engine.load(q) as eng:
        a, b = ref.run(feeds[0])["last_hidden_state"], eng.run(feeds[0])["last_hidden_state"]
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.mean() > 0.99
