"""Swap ``nn.Linear`` / ``nn.ConvNd`` (and transformers' ``Conv1D``) for fake-quantized layers.

Each quantized layer holds a per-output-channel weight quantizer and, unless weight-only, a
per-tensor quantizer on its input: the same places the PTQ puts Q/DQ (weights -> int8
initializer + DequantizeLinear, activation inputs -> QuantizeLinear -> DequantizeLinear). Conv
and Gemm biases sit on the int32 grid ``input scale x weight scale``, as the PTQ stores them.
"""
from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from .config import QATConfig
from .errors import QATError
from .fake_quant import FakeQuantizer

log = logging.getLogger(__name__)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class QuantLayer(nn.Module):
    """Common part of the fake-quantized layers: weight (or frozen integer weight) and quantizers."""

    weight_int: torch.Tensor | None

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, config: QATConfig) -> None:
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.weight_quant = FakeQuantizer(config.weight_bits, signed=True, narrow=True, axis=0,
                                          channels=weight.shape[0], lsq_grad_scale=config.lsq_grad_scale)
        self.input_quant = (FakeQuantizer(config.act_bits, signed=True, lsq_grad_scale=config.lsq_grad_scale)
                            if config.act_bits is not None else None)
        self.register_buffer("weight_int", None)

    @property
    def peqa(self) -> bool:
        """True once the integer weights are frozen (``converter.qat.peqa``)."""
        return self.weight_int is not None

    def quantized_weight(self) -> torch.Tensor:
        """The weight the layer computes with: fake-quantized, or frozen integers x learned scales."""
        if self.weight_int is not None:
            return self.weight_int.float() * self.weight_quant.shaped_scale(self.weight_int.dim())
        return self.weight_quant(self.weight)

    def integer_weight(self) -> torch.Tensor:
        """The int8 codes of the weight (the values export stores)."""
        if self.weight_int is not None:
            return self.weight_int.clone()
        return self.weight_quant.quantize(self.weight.detach())

    def quantized_bias(self) -> torch.Tensor | None:
        """Bias rounded to the int32 grid ``input scale x weight scale`` (straight-through for the bias)."""
        if self.bias is None or self.input_quant is None or not self.input_quant.enabled:
            return self.bias
        bias_scale = (self.input_quant.effective_scale() * self.weight_quant.effective_scale()).detach()
        q = torch.clamp(torch.round(self.bias / bias_scale), INT32_MIN, INT32_MAX)
        return self.bias + (q * bias_scale - self.bias).detach()

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.input_quant(x) if self.input_quant is not None else x


class QuantLinear(QuantLayer):
    """``nn.Linear`` with fake-quantized weight and input; on 2-D inputs (ONNX ``Gemm``) the bias
    is on the int32 grid, as the PTQ stores Gemm biases. On 3-D inputs it exports as MatMul + Add
    with a float bias."""

    def __init__(self, linear: nn.Linear, config: QATConfig) -> None:
        super().__init__(linear.weight, linear.bias, config)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.quantized_bias() if x.dim() == 2 else self.bias
        return F.linear(self.quantize_input(x), self.quantized_weight(), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, peqa={self.peqa}"


class QuantConv(QuantLayer):
    """``nn.Conv1d/2d/3d`` (zero padding) with fake-quantized weight and input, and an int32-grid bias."""

    def __init__(self, conv: nn.modules.conv._ConvNd, config: QATConfig) -> None:
        super().__init__(conv.weight, conv.bias, config)
        self.dims = conv.weight.dim() - 2
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _CONV_FNS[self.dims](self.quantize_input(x), self.quantized_weight(), self.quantized_bias(),
                                    self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"conv{self.dims}d, stride={self.stride}, padding={self.padding}, peqa={self.peqa}"


def _hf_conv1d_type() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return None
    return Conv1D


def _quantized(module: nn.Module, config: QATConfig, name: str) -> QuantLayer | None:
    if isinstance(module, nn.Linear):
        return QuantLinear(module, config)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if module.padding_mode != "zeros":
            log.warning("not quantizing %s: padding_mode=%r (only zero padding maps to ONNX Conv)",
                        name, module.padding_mode)
            return None
        return QuantConv(module, config)
    conv1d = _hf_conv1d_type()
    if conv1d is not None and isinstance(module, conv1d):  # GPT-2 style: weight is [in, out]
        linear = nn.Linear(module.weight.shape[0], module.weight.shape[1], bias=module.bias is not None,
                           device="meta")
        linear.weight = nn.Parameter(module.weight.detach().t().contiguous())
        linear.bias = module.bias
        return QuantLinear(linear, config)
    return None


def quantize_model(model: nn.Module, config: QATConfig | None = None, *, inplace: bool = False) -> nn.Module:
    """Return ``model`` (a deep copy unless ``inplace``) with its Linear/Conv layers fake-quantized.

    Scales start at 1: initialise them with ``converter.qat.init`` before training.
    Raises QATError when no layer was quantized.
    """
    config = config or QATConfig()
    model = model if inplace else copy.deepcopy(model)
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, QuantLayer) or config.skipped(full):
                continue
            q = _quantized(child, config, full)
            if q is not None:
                setattr(module, child_name, q)
                count += 1
    if count == 0:
        raise QATError(f"{type(model).__name__} has no Linear or Conv layer to quantize "
                       f"(skip patterns: {list(config.skip) or 'none'})")
    log.info("fake-quantized %d layers (W%d%s)", count, config.weight_bits,
             f"A{config.act_bits}" if config.act_bits else " weight-only")
    return model


def quant_layers(model: nn.Module) -> dict[str, QuantLayer]:
    """The fake-quantized layers of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLayer)}


def require_initialized(model: nn.Module, what: str) -> None:
    """Raise QATError naming the first layer whose scales were never initialised."""
    for name, layer in quant_layers(model).items():
        for q in (layer.weight_quant, layer.input_quant):
            if q is not None and not q.initialized:
                raise QATError(f"layer '{name}' has uninitialised scales; call converter.qat.initialize "
                               f"before {what}")


def set_quantization(model: nn.Module, enabled: bool) -> None:
    """Turn every quantizer on or off (off: the model computes in float, e.g. to observe ranges)."""
    for m in model.modules():
        if isinstance(m, FakeQuantizer):
            m.enabled = enabled
