"""Accuracy tooling: compare a quantized model with its FP32 reference."""
from .compare import CompareError, CompareReport, LayerError, compare_models
from .metrics import ErrorStats, cosine, mean_pool
from .pairs import TensorPair, match_quantized_tensors, with_outputs

__all__ = ["CompareError", "CompareReport", "LayerError", "compare_models", "ErrorStats", "cosine", "mean_pool",
           "TensorPair", "match_quantized_tensors", "with_outputs"]
