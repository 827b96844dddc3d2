"""QuantConfig: everything that decides how a float model becomes a QDQ INT8 model."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Union

from ..targets import CPU_CHOICES, TARGETS, TargetProfile, UnknownTargetError, get_profile
from .errors import QuantizationError

Target = Literal["ort-cpu", "tensorrt"]
SmoothQuant = Union[float, Literal["auto"], None]
ACTIVATION_DTYPES: tuple[str, ...] = ("uint8", "int8")
WEIGHT_ROUNDING: tuple[str, ...] = ("gptq", "nearest")
RANGE_SEARCHES: tuple[str, ...] = ("output", "none")
AUTO_ALPHAS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SMOOTHQUANT_SEARCHES: tuple[str, ...] = ("layer", "model")


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize: which ops, which numeric scheme, which backend to fuse for.

    ``smoothquant``: ``None`` (off), an alpha in [0, 1], or ``"auto"`` (alpha chosen per layer
    from ``auto_alphas`` by the measured output error on a few calibration batches);
    ``smoothquant_search``: ``layer`` (auto picks one alpha per activation) or ``model`` (one alpha for
    all, the one with the lowest summed output error); ``auto_outlier_rows``: rows (tokens) with the
    largest |x| always kept in the search's sample; ``auto_float_error``: a layer whose simulated INT8
    relative output error stays above this after the best alpha is left in float (None: never).
    ``target`` and ``cpu`` pick the ``TargetProfile`` (``converter.targets``) that decides the numeric
    scheme and placement; ``cpu`` (ort-cpu: ``auto`` = this machine, ``vnni``, ``avx2``, ``arm64``,
    ``portable``) chooses the scheme that is exact on that CPU family.
    ``activation_dtype``: ``None`` follows the profile (see ``resolved_activation_dtype``).
    ``quantize_attention``: also quantize the activation x activation MatMuls (Q.K^T, P.V);
    ``None`` follows the target (see ``resolved_quantize_attention``).
    ``strip_nan_guards``: remove the ``Where(IsNaN(Softmax(x)), 0, ...)`` guard of exported
    attention (exact for finite inputs: the exported mask uses the finite float32 minimum).
    ``avoid_skip_layernorm`` (ort-cpu): write residual adds as ``Sum`` so ORT does not fuse them
    into its slow CPU ``SkipLayerNormalization`` (see ``converter.passes.ort_cpu``).
    ``quantize_embeddings``: store large ``Gather`` tables as int8, dequantized after the lookup.
    ``bias_correction``: fold the mean output shift that weight rounding causes, ``(W - W_q) . E[x]``,
    into each Conv/Gemm bias, with E[x] per input channel from the calibration table (DFQ's empirical
    bias correction; EfficientNet-Lite0 top-1 agreement 84.5% -> 93%).
    ``weight_rounding``: ``"gptq"`` rounds Conv/Gemm weights so that the layer's *output* error is small,
    from E[x xᵀ] of its input on the first ``rounding_batches`` calibration batches (only when ``quantize``
    gets calibration data; ``quant.weight_rounding``); ``"nearest"``: round to nearest. MatMul weights
    (transformers) are always rounded to nearest.
    ``range_search``: ``"output"`` narrows each Conv feature map's calibrated range where that makes the
    consuming layers' output error smaller, measured on the first ``range_batches`` calibration batches
    (only when ``quantize`` gets calibration data; ``calib.range_search``); ``"none"``: the calibrated ranges.
    """

    smoothquant: SmoothQuant = None
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    per_channel: bool = True
    target: Target = "ort-cpu"
    cpu: str = "auto"
    activation_dtype: str | None = None
    quantize_attention: bool | None = None
    strip_nan_guards: bool = True
    avoid_skip_layernorm: bool = True
    quantize_embeddings: bool = True
    bias_correction: bool = True
    weight_rounding: str = "gptq"
    rounding_batches: int = 16
    range_search: str = "output"
    range_batches: int = 4
    auto_alphas: tuple[float, ...] = AUTO_ALPHAS
    auto_batches: int = 2
    smoothquant_search: str = "layer"
    auto_outlier_rows: int = 0
    auto_float_error: float | None = None
    op_types: tuple[str, ...] = field(default=("MatMul", "Gemm", "Conv"))

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise QuantizationError(f"unknown target '{self.target}'; choose one of {', '.join(TARGETS)}")
        if self.cpu not in CPU_CHOICES:
            raise QuantizationError(f"unknown cpu '{self.cpu}'; choose one of {', '.join(CPU_CHOICES)}")
        sq = self.smoothquant
        if sq is not None and sq != "auto":
            if isinstance(sq, bool) or not isinstance(sq, (int, float)) or not 0.0 <= float(sq) <= 1.0:
                raise QuantizationError(f"smoothquant must be 'auto' or an alpha in [0, 1], got {sq!r}")
        if self.activation_dtype is not None and self.activation_dtype not in ACTIVATION_DTYPES:
            raise QuantizationError(
                f"activation_dtype must be one of {', '.join(ACTIVATION_DTYPES)}, got {self.activation_dtype!r}"
            )
        if self.target == "tensorrt" and self.activation_dtype == "uint8":
            raise QuantizationError("TensorRT supports only symmetric int8 activations (activation_dtype='int8')")
        for pat in self.exclude_patterns:
            try:
                re.compile(pat)
            except re.error as exc:
                raise QuantizationError(f"bad --exclude pattern {pat!r}: {exc}") from None
        if self.weight_rounding not in WEIGHT_ROUNDING:
            raise QuantizationError(f"weight_rounding must be one of {', '.join(WEIGHT_ROUNDING)}, "
                                    f"got {self.weight_rounding!r}")
        if self.range_search not in RANGE_SEARCHES:
            raise QuantizationError(f"range_search must be one of {', '.join(RANGE_SEARCHES)}, "
                                    f"got {self.range_search!r}")
        if self.range_batches < 1:
            raise QuantizationError(f"range_batches must be >= 1, got {self.range_batches}")
        if self.rounding_batches < 1:
            raise QuantizationError(f"rounding_batches must be >= 1, got {self.rounding_batches}")
        if self.smoothquant_search not in SMOOTHQUANT_SEARCHES:
            raise QuantizationError(f"smoothquant_search must be one of {', '.join(SMOOTHQUANT_SEARCHES)}, "
                                    f"got {self.smoothquant_search!r}")
        if any(not 0.0 <= a <= 1.0 for a in self.auto_alphas) or not self.auto_alphas:
            raise QuantizationError(f"auto_alphas must be non-empty values in [0, 1], got {self.auto_alphas}")

    @property
    def profile(self) -> TargetProfile:
        """The target profile this config quantizes for (``cpu='auto'``: the CPU this process runs on)."""
        try:
            return get_profile(self.target, self.cpu)
        except UnknownTargetError as exc:
            raise QuantizationError(str(exc)) from None

    @property
    def resolved_activation_dtype(self) -> str:
        """The profile's activation type unless set explicitly: uint8 (asymmetric) for ORT CPU, int8
        (symmetric) for TensorRT.

        ORT CPU: measured on AVX512-VNNI with ORT 1.32, asymmetric uint8 activations let every
        ``DQ -> MatMul`` fuse into ``MatMulIntegerToFloat`` (MLAS u8s8, the VNNI ``vpdpbusd`` form),
        while with symmetric int8 activations half of them stayed float ``DequantizeLinear + MatMul``
        (~1.25x slower at batch 8) and accuracy dropped (mean cosine 0.984 vs 0.993 without
        SmoothQuant): the zero point buys back a bit on skewed ranges such as GELU outputs.
        TensorRT only takes symmetric int8.
        """
        if self.activation_dtype is not None:
            return self.activation_dtype
        return self.profile.activation_dtype

    @property
    def resolved_quantize_attention(self) -> bool:
        """The profile's choice unless set. ORT CPU: yes. Measured on MiniLM (batch 8, seq 128): Q.K^T
        and P.V as ``MatMulIntegerToFloat`` cut latency ~8% for a mean cosine change of -0.0003.
        TensorRT: no, its fused attention kernels want float (or FP8) inputs unless the graph matches
        its INT8 MHA pattern."""
        if self.quantize_attention is not None:
            return self.quantize_attention
        return self.profile.quantize_attention

    def is_excluded(self, node_name: str, op_type: str) -> bool:
        """True when a node is excluded by name, op type, or regex pattern on its name."""
        if node_name in self.exclude_nodes or op_type in self.exclude_op_types:
            return True
        return any(re.search(p, node_name or "") for p in self.exclude_patterns)
