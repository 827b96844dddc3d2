"""LSQ fake quantization: forward math and straight-through gradients, checked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from converter.qat import FakeQuantizer, QATConfig, QATError, lsq_fake_quant, quant_range, quantize_model
from converter.qat.init import init_weight_scales
from converter.quant.scheme import activation_qparams, fake_quantize, weight_qparams


def test_quant_ranges() -> None:
    assert quant_range(8, signed=True) == (-128, 127)
    assert quant_range(8, signed=True, narrow=True) == (-127, 127)
    assert quant_range(4, signed=True, narrow=True) == (-7, 7)
    assert quant_range(8, signed=False) == (0, 255)
    with pytest.raises(QATError, match="bits"):
        quant_range(1, signed=True)


def test_forward_and_gradients_by_hand() -> None:
    # s = 0.5 on the signed 2-bit grid [-2, 1]: v = x/s = [-2.8, -0.6, 0.4, 0.8, 1.8]
    x = torch.tensor([-1.4, -0.3, 0.2, 0.4, 0.9], requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    y = lsq_fake_quant(x, s, -2, 1, grad_scale=1.0)
    assert torch.allclose(y, torch.tensor([-1.0, -0.5, 0.0, 0.5, 0.5]))
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    y.backward(upstream)
    # input: straight through inside [-2, 1], zero where clipped (first and last)
    assert torch.equal(x.grad, torch.tensor([0.0, 2.0, 3.0, 4.0, 0.0]))
    # scale: qmin | round(v)-v | round(v)-v | round(v)-v | qmax, weighted by the upstream gradient
    expected = -2 * 1 + (-1 + 0.6) * 2 + (0 - 0.4) * 3 + (1 - 0.8) * 4 + 1 * 5
    assert s.grad.item() == pytest.approx(expected, abs=1e-5)


def test_gradient_zero_outside_clip_range() -> None:
    q = FakeQuantizer(8, signed=False)
    q.init_scale(1.0 * 255)  # scale 1: range [0, 255]
    x = torch.tensor([-5.0, -0.6, 0.0, 100.2, 255.0, 255.6, 300.0], requires_grad=True)
    q(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]))


def test_lsq_grad_scale_per_tensor_and_per_channel() -> None:
    act = FakeQuantizer(8, signed=True)
    x = torch.randn(4, 3, 5)
    assert act.grad_scale(x) == pytest.approx(1 / math.sqrt(15 * 127))  # N = features per sample
    w = FakeQuantizer(4, signed=True, narrow=True, axis=0, channels=6)
    assert w.grad_scale(torch.randn(6, 3, 2, 2)) == pytest.approx(1 / math.sqrt(12 * 7))

    # the scale gradient is the summed elementwise term times g
    w.init_scale(torch.full((6,), 0.7))
    wt = torch.randn(6, 3, 2, 2)
    w(wt).sum().backward()
    s = w.effective_scale().detach().reshape(-1, 1, 1, 1)
    v = wt / s
    inside = (v >= -7) & (v <= 7)
    term = torch.where(inside, torch.round(v) - v, torch.clamp(torch.round(v), -7, 7))
    expected = term.sum(dim=(1, 2, 3)) / math.sqrt(12 * 7)
    assert torch.allclose(w.scale.grad, expected, atol=1e-5)


def test_weight_fake_quant_equals_ptq_quantize_dequantize() -> None:
    """8-bit weights initialised by abs-max reproduce the PTQ's own quantize -> dequantize."""
    torch.manual_seed(0)
    model = quantize_model(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 4)),
                           QATConfig(weight_bits=8, act_bits=8))
    init_weight_scales(model)
    for layer in (model[0], model[2]):
        w = layer.weight.detach().numpy()
        ref = fake_quantize(w, weight_qparams(w, axis=0))
        np.testing.assert_allclose(layer.quantized_weight().detach().numpy(), ref, rtol=0, atol=1e-7)
        codes = layer.integer_weight().numpy()
        assert codes.dtype == np.int8 and np.abs(codes).max() == 127


def test_activation_fake_quant_equals_ptq_uint8() -> None:
    x = np.random.default_rng(0).uniform(0, 3.0, size=(4, 50)).astype(np.float32)
    hi = float(x.max())
    q = FakeQuantizer(8, signed=False)
    q.init_scale(hi)
    ref = fake_quantize(x, activation_qparams(0.0, hi, "uint8"))
    np.testing.assert_allclose(q(torch.from_numpy(x)).detach().numpy(), ref, rtol=0, atol=1e-6)


def test_scale_stays_positive() -> None:
    q = FakeQuantizer(8)
    with torch.no_grad():
        q.scale.fill_(-0.1)
    assert q.effective_scale().item() == pytest.approx(0.1)
    with torch.no_grad():
        q.scale.zero_()
    assert q.effective_scale().item() > 0
