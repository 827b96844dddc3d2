"""Export a fake-quantized model to ONNX in the PTQ's QDQ layout, checked against the torch model.

Each quantized layer is swapped for an export form whose buffers are the integers and scales
(``quantized_decomposed`` ops, which the dynamo exporter lowers to Q/DQ):

* weight: int8 initializer (4-bit values in an int8 container at ``weight_bits`` 4) ->
  ``DequantizeLinear(axis = output channel)``, zero point 0 -> ``Conv`` / ``Gemm`` (2-D input) or
  ``MatMul`` on the ``[in, out]`` weight with axis 1 (3-D input), as the PTQ emits them;
* input: ``QuantizeLinear -> DequantizeLinear`` per tensor with the learned scale, int8 (signed
  inputs) or uint8 with zero point 0 (non-negative inputs, e.g. after ReLU);
* Conv and Gemm biases: int32 initializer with scale = input scale x weight scale -> ``DequantizeLinear``
  (MatMul + Add on 3-D inputs keeps a float bias, as the PTQ does).

Storage: int8 containers at opset 20 rather than opset-21 INT4. ONNX Runtime 1.32 CPU does run
INT4 ``DequantizeLinear`` (checked), but opset 20 is what the PTQ and every build target
(ORT >= 1.17, TensorRT 10 per-channel QDQ) take, so QAT models go through ``qdq build`` unchanged;
the cost is 2x the weight bytes at 4 bits.
"""
from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from runtime.atomic import move_into_place, staging_dir
from runtime.cpu import EXACT_NEEDS_VNNI_KEY, PROFILE_KEY

from .errors import QATError
from .fake_quant import FakeQuantizer
from .verify import compare_with_ort, count_qdq
from .wrap import INT32_MAX, INT32_MIN, QuantConv, QuantLayer, quant_layers, require_initialized

log = logging.getLogger(__name__)

DEFAULT_OPSET = 20


def _qd() -> Any:
    import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed

    return torch.ops.quantized_decomposed


class _ActQDQ(nn.Module):
    """QuantizeLinear -> DequantizeLinear with a fixed per-tensor scale (zero point 0)."""

    def __init__(self, q: FakeQuantizer) -> None:
        super().__init__()
        if q.bits != 8:
            raise QATError(f"export needs 8-bit activations (QuantizeLinear saturates to the int8/uint8 "
                           f"range), got {q.bits}-bit")
        self.scale = float(q.effective_scale().detach())
        self.qmin, self.qmax = q.qmin, q.qmax
        self.dtype = torch.int8 if q.signed else torch.uint8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qd = _qd()
        xq = qd.quantize_per_tensor(x, self.scale, 0, self.qmin, self.qmax, self.dtype)
        return qd.dequantize_per_tensor(xq, self.scale, 0, self.qmin, self.qmax, self.dtype)


class _QDQLayer(nn.Module):
    """Integer weight (and bias) + scales as buffers; the forward dequantizes them with ONNX-mappable ops."""

    def __init__(self, layer: QuantLayer) -> None:
        super().__init__()
        wq = layer.weight_quant
        self.register_buffer("weight_q", layer.integer_weight().to(torch.int8))
        self.register_buffer("weight_scale", wq.effective_scale().detach().float().clone())
        self.register_buffer("weight_zp", torch.zeros(self.weight_q.shape[0], dtype=torch.int64))
        self.qmin, self.qmax = wq.qmin, wq.qmax
        self.act = _ActQDQ(layer.input_quant) if layer.input_quant is not None else None
        for name in ("bias_f", "bias_q", "bias_scale", "bias_zp"):
            self.register_buffer(name, None)
        if layer.bias is not None:
            self.bias_f = layer.bias.detach().clone()
            if layer.input_quant is not None:
                bias_scale = (layer.input_quant.effective_scale() * wq.effective_scale()).detach().float()
                q = torch.clamp(torch.round(layer.bias.detach() / bias_scale), INT32_MIN, INT32_MAX)
                self.bias_q, self.bias_scale = q.to(torch.int32), bias_scale.clone()
                self.bias_zp = torch.zeros_like(self.bias_q, dtype=torch.int64)

    def weight(self, axis: int = 0, transpose: bool = False) -> torch.Tensor:
        w = self.weight_q.t() if transpose else self.weight_q
        return _qd().dequantize_per_channel(w, self.weight_scale, self.weight_zp, axis, self.qmin, self.qmax,
                                            torch.int8)

    def int32_bias(self) -> torch.Tensor | None:
        """The int32 bias behind a DequantizeLinear (float bias when the input is not quantized)."""
        if self.bias_q is None:
            return self.bias_f
        return _qd().dequantize_per_channel(self.bias_q, self.bias_scale, self.bias_zp, 0, INT32_MIN, INT32_MAX,
                                            torch.int32)


class _QDQLinear(_QDQLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is not None:
            x = self.act(x)
        if x.dim() == 2:  # Gemm(transB=1): weight axis 0, int32 bias
            return F.linear(x, self.weight(), self.int32_bias())
        y = torch.matmul(x, self.weight(axis=1, transpose=True))  # MatMul on [in, out], axis 1; float bias
        return y + self.bias_f if self.bias_f is not None else y


class _QDQConv(_QDQLayer):
    def __init__(self, layer: QuantConv) -> None:
        super().__init__(layer)
        self.dims, self.stride, self.padding = layer.dims, layer.stride, layer.padding
        self.dilation, self.groups = layer.dilation, layer.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is not None:
            x = self.act(x)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[self.dims]
        return conv(x, self.weight(), self.int32_bias(), self.stride, self.padding, self.dilation, self.groups)


def export_form(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every quantized layer replaced by its Q/DQ export form."""
    layers = quant_layers(model)
    if not layers:
        raise QATError(f"{type(model).__name__} has no fake-quantized layers; wrap it with quantize_model first")
    for name, layer in layers.items():
        if not layer.weight_quant.enabled or (layer.input_quant is not None and not layer.input_quant.enabled):
            raise QATError(f"layer '{name}' has quantization turned off; turn it on before export")
    require_initialized(model, "export")
    out = copy.deepcopy(model)
    for name, layer in quant_layers(out).items():
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, _QDQConv(layer) if isinstance(layer, QuantConv) else _QDQLinear(layer))
    return out.eval()


@dataclass
class QATExportResult:
    """The exported file and how closely ONNX Runtime reproduces the fake-quant torch model.

    ``max_abs_diff``: the graph as written (ORT optimizations off: Q/DQ compute the fake
    quantization). ``mismatch``: share of output values beyond ``atol + rtol*|ref|``. They are not
    all zero because a float op before a QuantizeLinear (ORT's Conv sums in another order than
    torch's) can move a value that sits on a rounding tie to the other side: that activation is then
    one step off, and so are the outputs downstream of it. ``fused_max_abs_diff``: with ORT's default
    optimizations, which fuse Q/DQ into integer kernels (QLinearConv, QGemm) that requantize in
    fixed point.
    """

    path: Path
    opset: int
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    mismatch: dict[str, float] = field(default_factory=dict)
    fused_max_abs_diff: dict[str, float] = field(default_factory=dict)
    num_quantize: int = 0
    num_dequantize: int = 0


def export_qat(model: nn.Module, example_inputs: Mapping[str, Any], output: str | os.PathLike[str], *,
               output_names: Sequence[str] | None = None,
               dynamic_axes: Mapping[str, Mapping[int, str]] | None = None, opset: int = DEFAULT_OPSET,
               check_inputs: Mapping[str, Any] | None = None, atol: float = 1e-4, rtol: float = 1e-3,
               max_mismatch: float = 0.01, metadata: Mapping[str, str] | None = None) -> QATExportResult:
    """Export fake-quantized ``model`` (called as ``model(*inputs.values())``) to QDQ ONNX at ``output``.

    ONNX Runtime (optimizations off) must reproduce the fake-quant torch model on ``check_inputs``
    (default: the example inputs) within ``atol + rtol*|ref|`` for all but ``max_mismatch`` of the
    output values (rounding ties, see QATExportResult), or ExportError is raised and no file is left.
    """
    from ..export import export_module

    output = Path(output)
    model = model.eval()
    metadata = {**int8_metadata(model), **(metadata or {})}
    form = export_form(model)
    feeds = check_inputs if check_inputs is not None else example_inputs
    with staging_dir(output) as tmpdir:
        staged = tmpdir / output.name
        exported = export_module(form, example_inputs, staged, metadata=metadata, output_names=output_names,
                                 dynamic_axes=dynamic_axes, opset=opset, check=False)
        names = exported.output_names
        diffs, mismatch = compare_with_ort(model, staged, feeds, names, optimize=False, atol=atol, rtol=rtol,
                                           max_mismatch=max_mismatch)
        fused, _ = compare_with_ort(model, staged, feeds, names, optimize=True)
        nq, ndq = count_qdq(staged)
        move_into_place(tmpdir, output)
    log.info("exported %s: %d QuantizeLinear, %d DequantizeLinear; max |ORT - torch| %s (fused kernels %s), "
             "share beyond tolerance %s", output, nq, ndq, _fmt(diffs), _fmt(fused), _fmt(mismatch))
    return QATExportResult(output, opset, diffs, mismatch, fused, nq, ndq)


def int8_metadata(model: nn.Module) -> dict[str, str]:
    """What ``Engine.load`` reads to warn on CPUs that would saturate this model: ONNX Runtime's x86
    kernels run QAT's int8 activations as u8 x s8, exact without VNNI only for weights of at most 7 bits."""
    bits = [layer.weight_quant.bits for layer in quant_layers(model).values() if layer.input_quant is not None]
    if not bits:
        return {}
    widest = max(bits)
    return {PROFILE_KEY: f"qat W{widest}A8", EXACT_NEEDS_VNNI_KEY: "1" if widest > 7 else "0"}


def _fmt(diffs: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in diffs.items())
