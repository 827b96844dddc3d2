"""Activation-aware weight scaling (AWQ-style, Lin et al. 2023) for one decoder block, before its rounding.

For linear layers reading the same input X (e.g. q/k/v), a per-input-channel factor s multiplies the
weights' columns and divides the input: X Wᵀ = (X / s)(W s)ᵀ. Salient channels (large activations)
get finer rounding steps. s = rms(X)^α, normalised, with α searched on a grid for the least output
error E = W - Q(W s) / s (Q: round to nearest, with the clip search when that is on) measured against
the calibration Hessian: tr(E H Eᵀ) (H = 2XᵀX/n), so no extra forward pass is needed. 1/s is folded into the layer that produced X, keeping the float block
exact:

- a norm (RMSNorm/LayerNorm) whose output is X: its weight (and bias) are divided by s; the exported
  ONNX graph needs the same change (the returned scales; see :mod:`converter.llm.input_scales`);
- a Llama-style MLP's ``up_proj`` for ``down_proj`` (X = act(gate) * up): up's rows are divided by s;
- attention's ``v_proj`` for ``o_proj`` (X = softmax(QKᵀ) V): v's rows, with s tied across the query
  heads that share one key/value head (grouped-query attention).

A group with no producer to fold into keeps s = 1. Folds into a linear layer happen only when that
layer is quantized in the same pass (its levels then come from the scaled weights).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .config import WeightOnlyConfig
from .quantizers import round_groups
from .torch_layers import is_linear
from .torch_layers import set_weight_nk as _set_weight_nk
from .torch_layers import weight_nk as _weight_nk

log = logging.getLogger(__name__)

ALPHA_GRID = tuple(i / 10 for i in range(11))
"""Exponents searched for s = rms(X)^α (0 = no scaling)."""


def _is_norm(module: torch.nn.Module) -> bool:
    return "norm" in type(module).__name__.lower() and isinstance(getattr(module, "weight", None), torch.Tensor)


def rtn_dequantized(w: torch.Tensor, bits: int, group_size: int, symmetric: bool,
                    importance: torch.Tensor | None = None) -> torch.Tensor:
    """W [N, K] rounded to nearest per group (:func:`round_groups`, clip-searched with ``importance``), dequantized."""
    q, scale, zero = round_groups(w, bits, group_size, symmetric, importance)
    k = w.shape[1]
    return (q - zero.repeat_interleave(group_size, 1)[:, :k]) * scale.repeat_interleave(group_size, 1)[:, :k]


def search_scale(w: torch.Tensor, hessian: torch.Tensor, config: WeightOnlyConfig,
                 tie: tuple[int, int, int] | None = None) -> tuple[torch.Tensor, float]:
    """The per-input-channel scale s [K] (and its α) with the least tr(E H Eᵀ) for W [N, K].

    ``tie`` = (kv heads, query heads per kv head, head dim): K's channels are laid out as
    [kv head, repeat, head dim] and each kv channel's repeats share one factor (only [kv heads x head dim]
    distinct factors: v_proj's rows can then take 1/s).
    """
    w = w.to(torch.float64)
    h = hessian.to(torch.float64)
    diag = torch.diag(h)
    rms = torch.sqrt(torch.clamp(diag / 2, min=0))
    if tie is not None:
        kv, rep, d = tie
        rms = rms.reshape(kv, rep, d).mean(1, keepdim=True).expand(kv, rep, d).reshape(-1)
    rms = torch.clamp(rms, min=1e-8)

    def loss(s: torch.Tensor) -> float:
        imp = diag / s**2 if config.clip else None  # the scaled inputs' Hessian diagonal
        e = w - rtn_dequantized(w * s, config.bits, config.group_size, config.symmetric, imp) / s
        return float(((e @ h) * e).sum())

    best_alpha, best_s = 0.0, torch.ones_like(rms)
    best = loss(best_s)
    for alpha in ALPHA_GRID[1:]:
        s = rms**alpha
        s = s / torch.sqrt(s.max() * s.min())
        value = loss(s)
        if value < best:
            best, best_alpha, best_s = value, alpha, s
    return best_s, best_alpha


def _norm_producers(block: torch.nn.Module, run: Any, groups: list[list[str]],
                    modules: Mapping[str, torch.nn.Module]) -> dict[int, torch.nn.Module]:
    """Group index -> the norm whose output is that group's input and is read by no other linear layer.

    One forward of ``run`` with hooks on the block's norms and linear layers (a layer kept in float
    that reads the same norm output would see it scaled: such a norm is not folded into).
    """
    outputs: list[tuple[torch.nn.Module, torch.Tensor]] = []
    readers: dict[int, set[int]] = {}  # norm index in outputs -> ids of the linear layers reading its output

    def on_norm(mod: torch.nn.Module, _inp: tuple, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            outputs.append((mod, out))

    def on_linear(mod: torch.nn.Module, inp: tuple, _out: Any) -> None:
        for i, (_norm, out) in enumerate(outputs):
            if out is inp[0]:
                readers.setdefault(i, set()).add(id(mod))

    handles = [m.register_forward_hook(on_norm) for m in block.modules() if _is_norm(m)]
    handles += [m.register_forward_hook(on_linear) for m in block.modules() if is_linear(m)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    found: dict[int, torch.nn.Module] = {}
    for g, group in enumerate(groups):
        members = {id(modules[name]) for name in group}
        for i, ids in readers.items():
            if ids == members:
                found[g] = outputs[i][0]
    return found


def _linear_producer(block: torch.nn.Module, modules: Mapping[str, torch.nn.Module], group: list[str],
                     stage: set[str]) -> tuple[str, tuple[int, int, int] | None] | None:
    """(name of the layer whose rows take 1/s, tie) for down_proj <- up_proj and o_proj <- v_proj."""
    if len(group) != 1:
        return None
    layer = modules[group[0]]
    for holder in block.modules():
        for consumer, producer in (("down_proj", "up_proj"), ("o_proj", "v_proj")):
            if getattr(holder, consumer, None) is not layer:
                continue
            target = getattr(holder, producer, None)
            name = next((n for n, m in modules.items() if m is target), None)
            if name is None or name not in stage:
                return None
            k = _weight_nk(layer).shape[1]
            n_v = _weight_nk(target).shape[0]
            if producer == "up_proj":
                return (name, None) if n_v == k else None
            d = getattr(holder, "head_dim", None)
            if not d or k % n_v or n_v % d:
                return None
            return name, (n_v // d, k // n_v, d)
    return None


def scale_block(block: torch.nn.Module, modules: Mapping[str, torch.nn.Module], groups: list[list[str]],
                hessians: list[torch.Tensor], config: WeightOnlyConfig, run: Any) -> tuple[list[torch.Tensor], dict[str, np.ndarray]]:
    """Search and fold AWQ scales for ``groups`` of ``block`` (all quantized in this pass), in place.

    ``hessians``: each group's H from float inputs; ``run()`` runs the block on one batch. Returns the
    Hessians of the scaled inputs (H / s sᵀ) and, for each layer whose group was folded into a norm,
    its s (the ONNX graph's norm must be divided by it too).
    """
    norms = _norm_producers(block, run, groups, modules)
    stage = {name for g in groups for name in g}
    out = list(hessians)
    onnx_scales: dict[str, np.ndarray] = {}
    for i in reversed(range(len(groups))):  # later groups fold into earlier layers: those must see it first
        group = groups[i]
        linear = _linear_producer(block, modules, group, stage) if i not in norms else None
        if i not in norms and linear is None:
            continue
        w = torch.cat([_weight_nk(modules[n]).to(torch.float64) for n in group])
        s, alpha = search_scale(w, hessians[i], config, linear[1] if linear else None)
        if alpha == 0.0:
            continue
        for name in group:
            m = modules[name]
            _set_weight_nk(m, _weight_nk(m).to(torch.float64) * s[None, :])
        if linear is None:
            norm = norms[i]
            norm.weight.data.div_(s.to(norm.weight.dtype))
            if isinstance(getattr(norm, "bias", None), torch.Tensor):
                norm.bias.data.div_(s.to(norm.bias.dtype))
            for name in group:
                onnx_scales[name] = s.numpy().astype(np.float32)
        else:
            target = modules[linear[0]]
            rows = s if linear[1] is None else s.reshape(linear[1])[:, 0, :].reshape(-1)
            _set_weight_nk(target, _weight_nk(target).to(torch.float64) / rows[:, None])
            bias = getattr(target, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.data.div_(rows.to(bias.dtype))
        out[i] = hessians[i] / (s[:, None] * s[None, :]).to(hessians[i].dtype)
        log.debug("AWQ %s: alpha %.1f (%s)", "+".join(group), alpha, "norm" if linear is None else linear[0])
    return out, onnx_scales

