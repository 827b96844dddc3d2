"""Accuracy tooling on top of quantization: sensitivity analysis and mixed precision to a target."""
from .evaluate import METRICS, AccuracyTargetError, Evaluator, Target, score
from .mixed_precision import Decision, MixedPrecisionResult, reach_target
from .sensitivity import LayerSensitivity, SensitivityReport, analyze, quantized_layers, table_quantizer

__all__ = ["METRICS", "AccuracyTargetError", "Evaluator", "Target", "score", "Decision", "MixedPrecisionResult",
           "reach_target", "LayerSensitivity", "SensitivityReport", "analyze", "quantized_layers", "table_quantizer"]
