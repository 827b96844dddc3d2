"""TensorRT (explicit quantization from Q/DQ nodes): symmetric int8 only, constant scales."""
from __future__ import annotations

from .profile import ERROR, TargetProfile

# ops whose Q/DQ-quantized inputs or outputs TensorRT fuses into INT8 kernels, or moves Q/DQ across
FUSES = frozenset("""
Conv ConvTranspose MatMul Gemm Add Concat MaxPool AveragePool GlobalAveragePool GlobalMaxPool Relu
LeakyRelu Clip Reshape Transpose Flatten Squeeze Unsqueeze Slice Pad Resize Gather Split Identity
""".split())

PROFILES = (
    TargetProfile(
        name="tensorrt", label="TensorRT", backend="tensorrt", activation_dtype="int8", weight_bits=8, int32_bias=False,
        # biases stay float (TensorRT takes no int32 DequantizeLinear); Q.K^T and P.V stay float:
        # its fused attention wants float (or FP8) inputs
        quantize_attention=False, quantize_outputs=False, residual_sum=False,
        embeddings="weight-only",  # a per-channel DequantizeLinear after Gather is a per-channel activation
        description="TensorRT explicit quantization: symmetric int8 activations and weights",
        check_symmetric_only=True, check_constant_qparams=True, check_strict_weight_axis=True,
        check_activation_per_tensor=True, check_dangling_q=ERROR, check_weight_only_ok=True, fuses=FUSES,
    ),
)
