"""Quantization-aware training: LSQ fake quantization with learned scales, PEQA, distillation,
and export to the same QDQ ONNX layout the PTQ produces.

    from converter.qat import QATConfig, quantize_model, initialize, train, TrainConfig, export_qat
    qmodel = quantize_model(fp32_model, QATConfig(weight_bits=4, act_bits=8))
    initialize(qmodel, table=CalibrationTable.load("calib.json"), onnx_path="fp32.onnx")
    train(qmodel, distillation_loss(fp32_model, forward), lambda: batches, TrainConfig(steps=200))
    export_qat(qmodel, {"image": x}, "model.qat.onnx", output_names=["logits"])
"""
from __future__ import annotations

from .config import QATConfig
from .distill import distillation_loss, hidden_mse, kd_loss, lm_loss, sample_from_teacher
from .errors import QATError
from .export import QATExportResult, export_form, export_qat
from .fake_quant import FakeQuantizer, lsq_fake_quant, quant_range
from .init import init_from_data, init_from_table, init_weight_scales, initialize, onnx_input_names
from .peqa import to_peqa, trainable_parameters
from .verify import check_layout, compare_with_ort, count_qdq
from .train import TrainConfig, TrainResult, load_checkpoint, save_checkpoint, train
from .wrap import QuantConv, QuantLayer, QuantLinear, quant_layers, quantize_model, set_quantization

__all__ = [
    "FakeQuantizer", "QATConfig", "QATError", "QATExportResult", "QuantConv", "QuantLayer", "QuantLinear",
    "TrainConfig", "TrainResult", "check_layout", "compare_with_ort", "count_qdq", "distillation_loss", "export_form", "export_qat",
    "hidden_mse", "init_from_data", "init_from_table", "init_weight_scales", "initialize", "kd_loss",
    "lm_loss", "load_checkpoint", "lsq_fake_quant", "onnx_input_names", "quant_layers", "quant_range",
    "quantize_model", "sample_from_teacher", "save_checkpoint", "set_quantization", "to_peqa",
    "trainable_parameters", "train",
]
