"""TargetProfile: everything quantization, check and build need to know about one deploy target."""
from __future__ import annotations

from dataclasses import dataclass, field

ERROR, WARNING = "error", "warning"  # check severities (converter.check.report), kept here without importing check


@dataclass(frozen=True)
class TargetProfile:
    """One deploy target as data. Placement, insertion, ``qdq check`` and ``qdq build`` read it.

    Numeric scheme: activations ``activation_dtype`` (uint8 asymmetric or int8 symmetric), weights
    symmetric per channel on ``weight_bits`` bits (7 = ONNX Runtime's ``reduce_range``; depthwise Convs
    on ``depthwise_weight_bits`` where set), biases int32
    (``int32_bias``) or float. ``exact_needs_vnni``: ONNX Runtime's fused kernels for this scheme are
    exact only where u8xs8 dot products are (VNNI, AMX, ARM); on other x86 CPUs they saturate.
    Placement: ``quantize_attention`` (activation x activation MatMuls), ``quantize_outputs``
    (weighted ops' outputs, so ORT runs QLinear* kernels end to end), ``residual_sum`` (residual
    adds written as Sum: ORT's CPU SkipLayerNormalization is slow), ``hard_activations_as_conv``
    (HardSwish/HardSigmoid on Conv feature maps written as depthwise Conv + Clip + Mul, which have integer
    kernels: ``passes.hard_activations``), ``reduce_mean_as_pool`` (spatial ReduceMean on 4-D maps written as
    GlobalAveragePool, which has an integer kernel: ``passes.global_pool``), ``embeddings`` (int8 tables
    dequantized after the lookup, per channel, or before it as a constant). The ``check_*`` fields say what
    ``qdq check`` enforces.
    """

    name: str  # the --target name
    label: str
    backend: str  # "onnxruntime" or "tensorrt": which checker and runtime
    cpu: str | None = None  # ort-cpu: the CPU family the scheme is chosen for
    description: str = ""
    activation_dtype: str = "uint8"
    weight_bits: int = 8
    depthwise_weight_bits: int | None = None  # depthwise Conv weights, when their kernel allows more bits
    int32_bias: bool = True
    exact_needs_vnni: bool = False
    quantize_attention: bool = True
    quantize_outputs: bool = False
    residual_sum: bool = False
    hard_activations_as_conv: bool = False
    reduce_mean_as_pool: bool = False
    embeddings: str = "after-lookup"  # int8 tables dequantized after the Gather, or "weight-only" before it
    # what `qdq check` enforces
    check_symmetric_only: bool = False  # every zero point must be 0
    check_constant_qparams: bool = False  # scales and zero points must be build-time constants
    check_strict_weight_axis: bool = False  # a per-channel weight axis other than the output channel is a violation
    check_activation_per_tensor: bool = False  # per-channel activation scales are a violation
    check_dangling_q: str = WARNING  # severity of a QuantizeLinear not followed by DequantizeLinear
    check_weight_only_ok: bool = False  # DQ(weight) -> MatMul/Gemm with a float activation has a kernel
    fuses: frozenset[str] = field(default_factory=frozenset)  # ops the backend runs in INT8 after Q/DQ

    def __post_init__(self) -> None:
        if self.activation_dtype not in ("uint8", "int8"):
            raise ValueError(f"{self.name}: activation_dtype must be uint8 or int8")
        if not all(2 <= b <= 8 for b in (self.weight_bits, self.depthwise_weight_bits or 8)):
            raise ValueError(f"{self.name}: weight bits must be in [2, 8]")
        if self.embeddings not in ("after-lookup", "weight-only"):
            raise ValueError(f"{self.name}: embeddings must be after-lookup or weight-only")
        if self.check_dangling_q not in (ERROR, WARNING):
            raise ValueError(f"{self.name}: check_dangling_q must be {ERROR!r} or {WARNING!r}")

    @property
    def key(self) -> str:
        """``ort-cpu/avx2`` for CPU families, else the target name."""
        return f"{self.name}/{self.cpu}" if self.cpu else self.name

    @property
    def weight_qmax(self) -> int:
        """Largest weight magnitude on the integer grid: 127 for 8 bits, 63 for 7 (reduce range)."""
        return self.layer_weight_qmax(depthwise=False)

    def layer_weight_qmax(self, depthwise: bool) -> int:
        """The grid of one layer's weights: depthwise Convs may have their own (``depthwise_weight_bits``)."""
        bits = self.depthwise_weight_bits if depthwise and self.depthwise_weight_bits else self.weight_bits
        return 2 ** (bits - 1) - 1

    @property
    def symmetric_activations(self) -> bool:
        return self.activation_dtype == "int8"
