"""LSQ fake quantization: ``round(clip(x / s, qmin, qmax)) * s`` with a learnable scale ``s``.

Gradients (Esser et al., "Learned Step Size Quantization", 2020), with ``v = x / s``:

* input: straight-through, ``1`` where ``qmin <= v <= qmax``, ``0`` outside the clip range;
* scale: ``round(v) - v`` inside the range, ``qmin`` / ``qmax`` where clipped, summed over the
  elements the scale covers and multiplied by ``g = 1 / sqrt(N * qmax)``, where ``N`` is the number
  of elements per scale: per output channel for weights, per sample (``numel / batch``) for activations.

Rounding is half-to-even and the division is ``x / s``, as ONNX ``QuantizeLinear`` computes it,
so the exported Q/DQ graph reproduces this module's forward.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .errors import QATError

SCALE_EPS = 1e-8
"""Scales are used as ``max(|s|, SCALE_EPS)`` so an optimizer step can never make them zero or negative."""


def quant_range(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Integer range for ``bits``: signed ``[-2^(b-1), 2^(b-1)-1]`` (``narrow``: symmetric
    ``[-(2^(b-1)-1), 2^(b-1)-1]``, as weights use), unsigned ``[0, 2^b-1]``."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 8:
        raise QATError(f"bits must be an integer in [2, 8], got {bits!r}")
    if not signed:
        return 0, 2**bits - 1
    half = 2 ** (bits - 1)
    return (-(half - 1) if narrow else -half), half - 1


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``grad`` over the axes where ``shape`` broadcast (size 1 or missing)."""
    lead = grad.dim() - len(shape)
    if lead:
        grad = grad.sum(dim=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(dim=axes, keepdim=True) if axes else grad


class LSQFunction(torch.autograd.Function):
    """Autograd function of LSQ fake quantization (see the module docstring for the gradients)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int,
                grad_scale: float) -> torch.Tensor:
        v = x / scale
        q = torch.clamp(torch.round(v), qmin, qmax)
        ctx.save_for_backward(v, q)
        ctx.scale_shape = scale.shape
        ctx.qmin, ctx.qmax, ctx.grad_scale = qmin, qmax, grad_scale
        return q * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        v, q = ctx.saved_tensors
        inside = (v >= ctx.qmin) & (v <= ctx.qmax)
        grad_x = grad * inside if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            dq_ds = torch.where(inside, q - v, q)
            grad_s = _sum_to(grad * dq_ds, ctx.scale_shape) * ctx.grad_scale
        return grad_x, grad_s, None, None, None


def lsq_fake_quant(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int,
                   grad_scale: float = 1.0) -> torch.Tensor:
    """Fake-quantize ``x`` with ``scale`` (broadcastable to ``x``) onto ``[qmin, qmax]`` (LSQ gradients)."""
    return LSQFunction.apply(x, scale, qmin, qmax, grad_scale)


class FakeQuantizer(nn.Module):
    """A learnable-scale quantizer: per tensor (``axis=None``) or per channel along ``axis``.

    ``signed``/``narrow`` choose the integer range (see ``quant_range``); zero point is always 0.
    ``enabled=False`` makes it the identity (used while observing float ranges).
    """

    def __init__(self, bits: int, *, signed: bool = True, narrow: bool = False, axis: int | None = None,
                 channels: int = 1, lsq_grad_scale: bool = True) -> None:
        super().__init__()
        quant_range(bits, signed, narrow)  # validates bits
        self.bits, self.signed, self.narrow, self.axis = bits, signed, narrow, axis
        self.lsq_grad_scale = lsq_grad_scale
        self.enabled = True
        self.initialized = False  # set by init_scale (or a loaded state): scales of 1 are meaningless
        self.scale = nn.Parameter(torch.ones(channels if axis is not None else ()))

    @property
    def qmin(self) -> int:
        return quant_range(self.bits, self.signed, self.narrow)[0]

    @property
    def qmax(self) -> int:
        return quant_range(self.bits, self.signed, self.narrow)[1]

    def effective_scale(self) -> torch.Tensor:
        """The scale used in the forward (and written to the exported ONNX): ``max(|s|, eps)``."""
        return self.scale.abs().clamp_min(SCALE_EPS)

    def shaped_scale(self, ndim: int) -> torch.Tensor:
        """The effective scale, shaped to broadcast against a tensor of rank ``ndim``."""
        s = self.effective_scale()
        if self.axis is None:
            return s
        shape = [1] * ndim
        shape[self.axis % ndim] = -1
        return s.reshape(shape)

    def grad_scale(self, x: torch.Tensor) -> float:
        """LSQ's ``1 / sqrt(N * qmax)``; N = elements per channel (weights) or per sample (activations)."""
        if not self.lsq_grad_scale:
            return 1.0
        if self.axis is not None:
            n = x.numel() // max(x.shape[self.axis], 1)
        else:
            n = x.numel() // max(x.shape[0], 1) if x.dim() > 1 else x.numel()
        return 1.0 / math.sqrt(max(n, 1) * self.qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return lsq_fake_quant(x, self.shaped_scale(x.dim()), self.qmin, self.qmax, self.grad_scale(x))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes ``clamp(round(x / s), qmin, qmax)`` as int8 (or uint8 when unsigned)."""
        with torch.no_grad():
            q = torch.clamp(torch.round(x / self.shaped_scale(x.dim())), self.qmin, self.qmax)
        return q.to(torch.int8 if self.signed else torch.uint8)

    def init_scale(self, amax: torch.Tensor | float) -> None:
        """Set the scale to ``amax / qmax`` (the PTQ rule), per channel when ``amax`` is a vector."""
        amax_t = torch.as_tensor(amax, dtype=torch.float32).detach()
        if amax_t.shape != self.scale.shape:
            raise QATError(f"scale init needs shape {tuple(self.scale.shape)}, got {tuple(amax_t.shape)}")
        with torch.no_grad():
            self.scale.copy_(torch.clamp(amax_t / self.qmax, min=SCALE_EPS))
        self.initialized = True

    def get_extra_state(self) -> dict[str, Any]:
        return {"bits": self.bits, "signed": self.signed, "narrow": self.narrow, "initialized": self.initialized}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.bits, self.signed, self.narrow = int(state["bits"]), bool(state["signed"]), bool(state["narrow"])
        self.initialized = bool(state.get("initialized", True))

    def extra_repr(self) -> str:
        kind = "per-tensor" if self.axis is None else f"per-channel(axis={self.axis})"
        return f"bits={self.bits}, range=[{self.qmin}, {self.qmax}], {kind}"
