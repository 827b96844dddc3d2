"""Training: the loss goes down, PEQA moves only scales, and checkpoints resume where they stopped."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from converter.qat import QATError, TrainConfig, distillation_loss, quant_layers, to_peqa, train
from converter.qat.pipeline import epochs

from qat_helpers import forward


def _kd(teacher):
    return distillation_loss(teacher, forward, temperature=2.0)


def test_few_steps_reduce_the_loss(qat_cnn, digits_cnn, digits_batches) -> None:
    loss = _kd(digits_cnn)
    batch = digits_batches[0]
    with torch.no_grad():
        before = loss(qat_cnn, batch).item()
    result = train(qat_cnn, loss, lambda epoch: [batch], TrainConfig(steps=15, lr=5e-4, progress=False))
    with torch.no_grad():
        after = loss(qat_cnn, batch).item()
    assert result.step == 15 and len(result.losses) == 15
    assert after < 0.5 * before, (before, after)


def test_peqa_freezes_integer_weights_and_moves_scales(qat_cnn, digits_cnn, digits_batches) -> None:
    to_peqa(qat_cnn)
    layers = quant_layers(qat_cnn)
    ints = {n: l.weight_int.clone() for n, l in layers.items()}
    scales = {n: l.weight_quant.scale.detach().clone() for n, l in layers.items()}
    trainable = {n for n, p in qat_cnn.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(".scale") for n in trainable)
    assert all(not hasattr(l, "weight") or "weight" not in l._parameters for l in layers.values())

    train(qat_cnn, _kd(digits_cnn), epochs(digits_batches), TrainConfig(steps=5, lr=1e-2, progress=False))
    for n, layer in layers.items():
        assert layer.weight_int.dtype == torch.int8
        assert torch.equal(layer.weight_int, ints[n]), n
        assert not torch.equal(layer.weight_quant.scale.detach(), scales[n]), n
        assert layer.weight_int.abs().max() <= 7


def _state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def test_checkpoint_resume_continues_from_saved_step(qat_cnn, digits_cnn, digits_batches, tmp_path: Path) -> None:
    ckpt = tmp_path / "qat.ckpt"
    data = epochs(digits_batches, seed=1)
    config = dict(steps=8, lr=2e-3, progress=False)
    full_model = copy.deepcopy(qat_cnn)
    full = train(full_model, _kd(digits_cnn), data, TrainConfig(**config))

    # an interrupted run: checkpoints every 2 steps, killed during step 6
    with pytest.raises(KeyboardInterrupt):
        train(copy.deepcopy(qat_cnn), _stops_after(_kd(digits_cnn), 5), data,
              TrainConfig(**config, checkpoint=ckpt, checkpoint_every=2))
    assert ckpt.is_file() and not list(tmp_path.glob(".*.tmp")), "checkpoint missing or temp files left"

    resumed_model = copy.deepcopy(qat_cnn)
    resumed = train(resumed_model, _kd(digits_cnn), data, TrainConfig(**config, checkpoint=ckpt, resume=True))
    assert (resumed.start_step, resumed.step) == (4, 8)
    assert resumed.losses[:4] == full.losses[:4]
    assert resumed.losses[4:] == pytest.approx(full.losses[4:], rel=1e-5)
    want = full_model.state_dict()
    for k, v in resumed_model.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.allclose(v.float(), want[k].float(), atol=1e-6), k


def _stops_after(loss, steps: int):
    calls = {"n": 0}

    def stopping(model, batch):
        calls["n"] += 1
        if calls["n"] > steps:
            raise KeyboardInterrupt
        return loss(model, batch)

    return stopping


def test_resume_refuses_other_settings_and_bad_files(qat_cnn, digits_cnn, digits_batches, tmp_path: Path) -> None:
    ckpt = tmp_path / "c.ckpt"
    train(qat_cnn, _kd(digits_cnn), epochs(digits_batches),
          TrainConfig(steps=2, progress=False, checkpoint=ckpt), meta={"weight_bits": 4})
    with pytest.raises(QATError, match="weight_bits=4"):
        train(qat_cnn, _kd(digits_cnn), epochs(digits_batches),
              TrainConfig(steps=3, progress=False, checkpoint=ckpt, resume=True), meta={"weight_bits": 3})
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(QATError, match="not a readable QAT checkpoint"):
        train(qat_cnn, _kd(digits_cnn), epochs(digits_batches),
              TrainConfig(steps=3, progress=False, checkpoint=bad, resume=True))
    with pytest.raises(QATError, match="checkpoint not found"):
        train(qat_cnn, _kd(digits_cnn), epochs(digits_batches),
              TrainConfig(steps=3, progress=False, checkpoint=tmp_path / "missing.ckpt", resume=True))
