"""ZeroQuant-style dynamic activation quantization on top of group-wise quantized weights.

What ONNX Runtime runs fast on CPU: ``MatMulNBits`` with ``accuracy_level=4``. MLAS then quantizes
the float activations to int8 on the fly, per row (token) and per block of ``block_size`` input
features (symmetric, one scale each — finer than ZeroQuant's per-token scale) and computes
int8 x int4/int8 dot products, scaling back with the weight group scales. No calibration is needed.

ONNX Runtime's standard-op alternatives do not fit group-wise weights: ``DynamicQuantizeLinear`` is
per-tensor and ``DynamicQuantizeMatMul`` takes one weight scale per column. Note that ONNX
Runtime's graph optimizer fuses block-wise ``DequantizeLinear -> MatMul`` (the ``qdq`` format) into
MatMulNBits with the accuracy level of the session option ``session.qdq_matmulnbits_accuracy_level``,
whose default is 4: QDQ weight-only models get int8 activation compute unless that option is 0.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx_ir as ir

from ..onnx_files import write_onnx
from .config import WeightQuantError
from .matmulnbits import MS_DOMAIN
from .weight_only import load_model

INT8_COMPUTE = 4
QDQ_ACCURACY_KEY = "session.qdq_matmulnbits_accuracy_level"


def set_accuracy_level(model: ir.Model, level: int = INT8_COMPUTE) -> int:
    """Set ``accuracy_level`` on every MatMulNBits node (4: dynamic int8 activations); return how many."""
    if level not in (0, 1, 2, 3, 4):
        raise WeightQuantError(f"accuracy level must be 0-4, got {level}")
    count = 0
    for node in model.graph:
        if node.op_type == "MatMulNBits" and node.domain == MS_DOMAIN:
            node.attributes["accuracy_level"] = ir.AttrInt64("accuracy_level", level)
            count += 1
    if not count:
        raise WeightQuantError("the model has no MatMulNBits nodes; quantize its weights first")
    return count


def dynamic_activations(
    model: str | os.PathLike[str] | ir.Model, output: str | os.PathLike[str], level: int = INT8_COMPUTE
) -> Path:
    """Write a copy of a MatMulNBits model whose MatMuls quantize activations dynamically (int8 compute)."""
    ir_model = load_model(model)
    set_accuracy_level(ir_model, level)
    return write_onnx(ir_model, output)


def session_options(qdq_accuracy_level: int = 0, threads: int | None = None):  # -> ort.SessionOptions
    """ONNX Runtime session options fixing the accuracy level ORT uses when it fuses block-wise DQ -> MatMul."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry(QDQ_ACCURACY_KEY, str(qdq_accuracy_level))
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return opts
