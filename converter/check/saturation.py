"""u8xs8 layers and int16 saturation: the weight range a CPU profile needs, and the risk on this CPU.

ONNX Runtime's u8xs8 kernels on x86 without VNNI add each pair of products in int16: exact only
while 255 x (|w1| + |w2|) fits, i.e. with weights on 7 bits (|q| <= 63). The rules find every layer
whose activation is dequantized from uint8 and whose weight is constant int8, and its largest |q|.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..quant.rules import is_depthwise
from .graph import GraphIndex, QdqNode
from .report import ERROR, WARNING, Finding

if TYPE_CHECKING:
    from runtime.cpu import CpuInt8

    from ..targets import TargetProfile

SEVEN_BIT_QMAX = 63
_LAYERS = ("MatMul", "Gemm", "Conv", "ConvTranspose")


def u8s8_layers(index: GraphIndex, qdq: list[QdqNode]) -> list[tuple[str, int, bool]]:
    """(layer label, largest |weight q|, depthwise) of every layer fed uint8 activations and constant int8
    weights. Depthwise Convs run on a kernel that widens to int16 first: they never saturate."""
    dq_by_output = {q.node.output[0]: q for q in qdq if not q.is_q}
    layers = []
    for node in index.graph.node:
        if node.op_type not in _LAYERS or len(node.input) < 2:
            continue
        x, w = dq_by_output.get(node.input[0]), dq_by_output.get(node.input[1])
        if x is None or w is None or x.qtype != "uint8" or w.qtype != "int8" or not w.x_const:
            continue
        q = index.const(w.x)
        if q is not None and q.size:
            group = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
            layers.append((node.name or node.output[0], int(np.abs(q.astype(np.int32)).max()),
                           is_depthwise(node.op_type, group, q.shape)))
    return layers


def weight_range_findings(layers: list[tuple[str, int, bool]], profile: "TargetProfile") -> Iterator[Finding]:
    """Errors for weights wider than the profile's grid (e.g. 8-bit weights for a 7-bit profile)."""
    wide = [(name, m) for name, m, dw in layers if m > profile.layer_weight_qmax(dw)]
    if wide:
        name, m = max(wide, key=lambda t: t[1])
        yield Finding(ERROR, "weight-range", f"{len(wide)} layer(s) have weights beyond the {profile.weight_bits}-bit grid "
                      f"of {profile.key} (|q| <= {profile.weight_qmax}; largest {m} in {name}): they saturate on the "
                      f"CPUs this profile is for; re-quantize with --cpu {profile.cpu}", name)


def saturation_findings(layers: list[tuple[str, int, bool]], cpu: "CpuInt8 | None" = None) -> Iterator[Finding]:
    """A warning when the u8xs8 kernels of ``cpu`` (default: this machine's) would saturate layers of this model."""
    from runtime.cpu import cpu_int8

    cpu = cpu or cpu_int8()
    risky = [(name, m) for name, m, dw in layers if m > SEVEN_BIT_QMAX and not dw]
    if cpu.u8s8_saturates and risky:
        name, m = max(risky, key=lambda t: t[1])
        yield Finding(WARNING, "saturation", f"{len(risky)} layer(s) multiply uint8 activations by 8-bit weights "
                      f"(largest |q| {m} in {name}); this CPU ({cpu.describe()}) can saturate them: "
                      "re-quantize with --cpu avx2 (or portable) for exact results here", name)
