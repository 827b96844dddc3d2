"""Token models (3-D activations, as in an LM): MatMul layout, table matching through transposed
weights, weight-only PEQA export, LM losses and data-free samples."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from converter.qat import (
    QATConfig, check_layout, distillation_loss, export_qat, initialize, lm_loss, onnx_input_names, quant_layers,
    quantize_model, sample_from_teacher, to_peqa,
)

VOCAB = 40


class TinyLM(torch.nn.Module):
    """Embedding -> Linear -> GELU -> Linear(vocab): logits [batch, sequence, vocab]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 16)
        self.up = torch.nn.Linear(16, 32)
        self.head = torch.nn.Linear(32, VOCAB, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(torch.nn.functional.gelu(self.up(self.embed(input_ids))))


def _forward(model, batch):
    return model(torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["attention_mask"]))


@pytest.fixture(scope="module")
def tiny() -> TinyLM:
    torch.manual_seed(0)
    return TinyLM().eval()


@pytest.fixture(scope="module")
def batches() -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(3):
        ids = rng.integers(0, VOCAB, (4, 10)).astype(np.int64)
        out.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return out


AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}


def test_matmul_layout_and_round_trip(tiny, batches, tmp_path: Path) -> None:
    model = quantize_model(tiny, QATConfig(weight_bits=4, act_bits=8))
    initialize(model, batches=batches, forward=_forward)
    other = {k: v[:2, :7] for k, v in batches[1].items()}  # another batch and sequence length
    res = export_qat(model, batches[0], tmp_path / "t.onnx", output_names=["logits"], dynamic_axes=AXES,
                     check_inputs=other)
    assert res.max_abs_diff["logits"] < 1e-4
    assert check_layout(res.path) == {"weight_dq": 2, "bias_dq": 0, "activation_qdq": 2}
    graph = onnx.load(str(res.path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == 2
    for mm, (k, n) in zip(matmuls, [(16, 32), (32, VOCAB)]):
        w_dq = producers[mm.input[1]]
        assert w_dq.op_type == "DequantizeLinear"  # directly, no Transpose in between
        assert inits[w_dq.input[0]].shape == (k, n) and inits[w_dq.input[0]].dtype == np.int8
        assert next(a.i for a in w_dq.attribute if a.name == "axis") == 1
        assert producers[producers[mm.input[0]].input[0]].op_type == "QuantizeLinear"


def test_table_names_found_through_transposed_weights(tiny, tmp_path: Path) -> None:
    from converter.export import export_module

    ids = np.zeros((2, 5), np.int64)
    fp32 = export_module(tiny, {"input_ids": ids, "attention_mask": np.ones_like(ids)}, tmp_path / "fp32.onnx",
                         output_names=["logits"], dynamic_axes=AXES).path
    names = onnx_input_names(quantize_model(tiny, QATConfig()), fp32)
    graph = onnx.load(str(fp32)).graph
    matmul_inputs = [n.input[0] for n in graph.node if n.op_type == "MatMul"]
    assert set(names) == {"up", "head"} and sorted(names.values()) == sorted(matmul_inputs)


def test_weight_only_peqa_export(tiny, batches, tmp_path: Path) -> None:
    model = quantize_model(tiny, QATConfig(weight_bits=4, act_bits=None))
    initialize(model)
    to_peqa(model, train_bias=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"up.weight_quant.scale", "head.weight_quant.scale", "up.bias"}
    res = export_qat(model, batches[0], tmp_path / "w.onnx", output_names=["logits"], dynamic_axes=AXES)
    assert check_layout(res.path) == {"weight_dq": 2, "bias_dq": 0, "activation_qdq": 0}
    assert res.max_abs_diff["logits"] < 1e-4
    assert all(layer.weight_int.abs().max() <= 7 for layer in quant_layers(model).values())


def test_lm_losses_and_teacher_samples(tiny, batches) -> None:
    model = quantize_model(tiny, QATConfig(weight_bits=4, act_bits=None))
    initialize(model)
    batch = dict(batches[0])
    batch["attention_mask"] = batch["attention_mask"].copy()
    batch["attention_mask"][:, -3:] = 0  # padding must not count
    kd = distillation_loss(tiny, _forward)(model, batch)
    assert kd.item() > 0 and kd.requires_grad
    assert distillation_loss(tiny, _forward)(tiny, batch).item() == pytest.approx(0.0, abs=1e-6)
    ce = lm_loss(_forward)(tiny, batch)
    logits = _forward(tiny, batch)[:, :-1][:, :6]  # positions whose targets are unpadded
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), torch.as_tensor(batch["input_ids"])[:, 1:7].reshape(-1))
    assert ce.item() == pytest.approx(ref.item(), rel=1e-5)

    ids = sample_from_teacher(tiny, num_sequences=3, length=8, vocab_size=VOCAB, seed=1)
    assert ids.shape == (3, 8) and ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < VOCAB
    with torch.no_grad():  # the greedy prefix follows the teacher's top-1
        assert (_forward(tiny, {"input_ids": ids[:, :1], "attention_mask": ids[:, :1]})[:, -1].argmax(-1).numpy()
                == ids[:, 1]).all()
    np.testing.assert_array_equal(ids, sample_from_teacher(tiny, 3, 8, VOCAB, seed=1))
