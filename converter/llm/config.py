"""Settings for weight-only quantization of MatMul weights."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConverterError

ALGOS = ("rtn", "gptq")
FORMATS = ("matmulnbits", "qdq")


class WeightQuantError(ConverterError):
    """Weight-only quantization cannot be done as asked (bad settings, no weights, shapes that do not fit)."""


@dataclass(frozen=True)
class WeightOnlyConfig:
    """How to quantize MatMul weights.

    bits: 4 or 8. group_size: weights along K share one scale (and zero point) per group; a power of
    two >= 16 (when it does not divide K, the last group is shorter: padded, as MatMulNBits allows). algo: ``rtn`` (round to nearest) or ``gptq``
    (second-order, block-wise error compensation with H = 2XXᵀ from calibration data).
    symmetric: zero point fixed at 2^(bits-1) (else one per group). act_order: GPTQ visits columns by
    decreasing Hessian diagonal (group scales stay tied to the original column groups; the default,
    chosen by measurement on SmolLM2; RTN ignores it). damp: added
    to H's diagonal as a fraction of its mean. block_size: GPTQ columns updated per lazy batch.
    format: ``matmulnbits`` (com.microsoft MatMulNBits) or ``qdq`` (opset-21 block-wise
    DequantizeLinear -> MatMul). accuracy_level: MatMulNBits compute type; 4 = int8 compute with
    activations quantized dynamically per row and block (ZeroQuant-style). exclude: MatMul node or
    weight names kept in float. hera: refine the levels by heuristic element replacement against the
    calibration Hessian (after RTN or GPTQ). sequential: take each layer's Hessian from the inputs the
    already-quantized earlier blocks produce (on the torch model the LM was exported from); False uses
    the float model's inputs (the old behaviour, kept for comparison). awq: before rounding, scale each
    input channel by a per-channel factor searched on the calibration activations (AWQ-style) and fold
    its inverse into the preceding norm or linear layer. clip: search each group's range (shrunk
    symmetric, or asymmetric low/high) for the least activation-weighted rounding error.
    """

    bits: int = 4
    group_size: int = 128
    algo: str = "rtn"
    symmetric: bool = True
    act_order: bool = True
    damp: float = 0.01
    block_size: int = 128
    format: str = "matmulnbits"
    accuracy_level: int = 0
    exclude: tuple[str, ...] = ()
    hera: bool = False
    sequential: bool = True
    awq: bool = False
    clip: bool = False

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise WeightQuantError(f"bits must be 4 or 8, got {self.bits}")
        g = self.group_size
        if g < 16 or g & (g - 1):
            raise WeightQuantError(f"group size must be a power of two >= 16 (e.g. 32, 64, 128), got {g}")
        if self.algo not in ALGOS:
            raise WeightQuantError(f"unknown algorithm {self.algo!r}; choose one of {', '.join(ALGOS)}")
        if self.format not in FORMATS:
            raise WeightQuantError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if not 0.0 <= self.damp < 1.0:
            raise WeightQuantError(f"damp must be in [0, 1), got {self.damp}")
        if self.block_size < 1:
            raise WeightQuantError(f"block size must be positive, got {self.block_size}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise WeightQuantError(f"accuracy level must be 0-4, got {self.accuracy_level}")
        if self.accuracy_level and self.format != "matmulnbits":
            raise WeightQuantError("accuracy_level applies to the matmulnbits format only")
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @property
    def label(self) -> str:
        """Short description, e.g. ``int4 g128 gptq sym``."""
        parts = [f"int{self.bits}", f"g{self.group_size}", self.algo, "sym" if self.symmetric else "asym"]
        if self.act_order and self.algo == "gptq":
            parts.append("act-order")
        if self.awq:
            parts.append("awq")
        if self.clip:
            parts.append("clip")
        if self.hera:
            parts.append("hera")
        if self.accuracy_level:
            parts.append(f"acc{self.accuracy_level}")
        return " ".join(parts)


DEFAULT_INT4 = WeightOnlyConfig(bits=4, group_size=128, algo="gptq", clip=True)
"""The recipe ``qdq quantize-weights --algo gptq`` uses (chosen on the tuning split of tools/bench_llm.py)."""
