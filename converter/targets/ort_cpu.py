"""ONNX Runtime on CPUs: one profile per CPU family, each with the INT8 scheme that is exact there.

ONNX Runtime's CPU kernels (MLAS) multiply uint8 activations by int8 weights. With AVX512-VNNI,
AVX-VNNI or AMX (``vpdpbusd``) and on ARM (sdot/udot, smmla) the dot products are exact. On x86
without VNNI (AVX2-only, AVX-512 without VNNI) ``vpmaddubsw`` adds each pair of u8xs8 products in
int16 and saturates: 2 x 255 x 127 = 64770 does not fit. With 7-bit weights (|w| <= 63, ONNX
Runtime's ``reduce_range``) a pair is at most 2 x 255 x 63 = 32130 < 32767: exact, with the same
graph, the same fused kernels and the same speed; the price is one bit of weight resolution.
Depthwise Convs keep 8 bits: MLAS's depthwise kernel widens to int16 before it multiplies (measured
exact with 8-bit weights under an emulated AVX2-only CPU, where pointwise and full Convs saturated by
5% and 3% of their output range), and 7-bit depthwise weights cost EfficientNet-Lite0 6 points of top-1.
"""
from __future__ import annotations

from .profile import TargetProfile

# ops the CPU QDQ optimizer turns into QLinear* / int8 kernels, or drops Q/DQ around (data movement)
FUSES = frozenset("""
Conv ConvTranspose MatMul Gemm Add Mul AveragePool GlobalAveragePool MaxPool LeakyRelu Sigmoid Softmax
Concat Where Gather GatherElements Reshape Transpose Squeeze Unsqueeze Flatten Resize Slice Split Pad
ArgMax InstanceNormalization Relu Clip Identity DepthToSpace SpaceToDepth Tile Expand
""".split())

_COMMON = dict(name="ort-cpu", label="ONNX Runtime (CPU)", backend="onnxruntime", activation_dtype="uint8",
               quantize_attention=True, quantize_outputs=True, residual_sum=True,
               hard_activations_as_conv=True, reduce_mean_as_pool=True, fuses=FUSES)

PROFILES = (
    TargetProfile(cpu="vnni", weight_bits=8, exact_needs_vnni=True, **_COMMON,
                  description="x86 with AVX512-VNNI, AVX-VNNI or AMX: uint8 activations x 8-bit weights"),
    TargetProfile(cpu="avx2", weight_bits=7, depthwise_weight_bits=8, **_COMMON,
                  description="x86 without VNNI: uint8 activations x 7-bit weights (no int16 saturation)"),
    TargetProfile(cpu="arm64", weight_bits=8, exact_needs_vnni=True, **_COMMON,
                  description="ARM64 (exact integer dot products): uint8 activations x 8-bit weights"),
    TargetProfile(cpu="portable", weight_bits=7, depthwise_weight_bits=8, **_COMMON,
                  description="any CPU, exact everywhere: uint8 activations x 7-bit weights"),
)
