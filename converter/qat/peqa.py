"""PEQA (Kim et al., 2023): round the weights once, freeze the integers, fine-tune only the scales.

After ``to_peqa`` every quantized layer computes with ``weight_int * scale``; the float weight is
dropped, ``weight_int`` is an int8 buffer (never trained) and the trainable parameters are the
per-channel weight scales, the activation scales and, optionally, the biases. Everything else in
the model is frozen.
"""
from __future__ import annotations

import logging

from torch import nn

from .wrap import quant_layers, require_initialized

log = logging.getLogger(__name__)


def to_peqa(model: nn.Module, *, train_bias: bool = False) -> nn.Module:
    """Freeze ``model`` (already wrapped and initialised) to PEQA form in place; returns it."""
    require_initialized(model, "freezing the integer weights")
    for layer in quant_layers(model).values():
        if not layer.peqa:
            layer.weight_int = layer.integer_weight()
            del layer.weight  # the float weight is gone: only integers x scales remain
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in quant_layers(model).values():
        layer.weight_quant.scale.requires_grad_(True)
        if layer.input_quant is not None:
            layer.input_quant.scale.requires_grad_(True)
        if train_bias and layer.bias is not None:
            layer.bias.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters()) + sum(
        layer.weight_int.numel() for layer in quant_layers(model).values())
    log.info("PEQA: %d trainable values of %d (%.2f%%)", trainable, total, 100.0 * trainable / max(total, 1))
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimizer should update (those with ``requires_grad``)."""
    return [p for p in model.parameters() if p.requires_grad]
