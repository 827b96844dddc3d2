"""INT8 numerics on the CPU under test: exact integer math, and what ONNX Runtime's fused kernels add.

A test of INT8 numerics asserts twice:

1. **exact**: the QDQ model run with ONNX Runtime's graph optimizations off (every DequantizeLinear,
   then float ops: exact integer math up to float rounding) against FP32, within the test's
   quantization tolerance. The same on every CPU.
2. **fused**: the optimized session (MLAS integer kernels) against that exact output, within
   ``FUSED_TOLERANCE`` of the exact output's largest magnitude. Where u8×s8 dot products are exact
   (AVX512-VNNI, AVX-VNNI, AMX, ARM) only requantization rounding separates the two paths: 2%.
   On x86 without VNNI, ``vpmaddubsw`` adds each pair of u8×s8 products in int16 and saturates:
   measured 9.4% (Conv) and 11.5% (attention MatMuls) on the pass tests under an AVX2-only CPU
   (Haswell, emulated by qemu; 0.00% on AVX512-VNNI), so 25% there.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from runtime.cpu import cpu_int8

CPU = cpu_int8()
FUSED_TOLERANCE = 0.25 if CPU.u8s8_saturates else 0.02
FUSED_MIN_CORRELATION = 0.9 if CPU.u8s8_saturates else 0.999  # of fused with exact outputs
# fused SNR against FP32 may be this much below exact: the digits CNN (u8 images into the first Conv)
# measured 45.3 dB exact and 19.9 dB fused under Haswell emulation, 45.1 dB both on AVX512-VNNI
FUSED_SNR_LOSS_DB = 30.0 if CPU.u8s8_saturates else 0.5


def exact_session_options():
    """Session options with every graph optimization off: Q/DQ stay separate, no integer kernels."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return so


def run_exact(model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All outputs of ``model`` with ONNX Runtime's fusions off."""
    from runtime import Engine

    with Engine.load(model, session_options=exact_session_options()) as eng:
        return eng.run(feeds)


def assert_fused_close(fused: np.ndarray, exact: np.ndarray) -> None:
    """The fused path is within ``FUSED_TOLERANCE`` of the exact one on this CPU (stated in the message)."""
    err = float(np.abs(fused.astype(np.float64) - exact).max())
    bound = FUSED_TOLERANCE * float(np.abs(exact).max())
    assert err <= bound, (f"fused INT8 differs from exact integer math by {err:.4g} > {bound:.4g} "
                          f"({FUSED_TOLERANCE:.0%} of max|exact|) on {CPU.describe()}")
