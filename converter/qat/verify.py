"""Checks of an exported QAT model: ONNX Runtime against the fake-quant torch model, and the QDQ layout."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ExportError


def compare_with_ort(model: nn.Module, path: str | os.PathLike[str], inputs: Mapping[str, Any],
                     output_names: Sequence[str], *, optimize: bool = False, atol: float = 1e-4,
                     rtol: float = 1e-3, max_mismatch: float | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """(max |ORT - torch|, share of values beyond ``atol + rtol*|ref|``) per output.

    With ``max_mismatch``, raise ExportError when a larger share is beyond tolerance.
    ``optimize=False`` runs the graph exactly as written (no fusion into integer kernels).
    """
    import onnxruntime as ort

    from runtime import Engine

    args = tuple(torch.as_tensor(np.asarray(v)) for v in inputs.values())
    with torch.no_grad():
        ref = model(*args)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with Engine.load(path, session_options=options) as engine:
        got = engine.run({k: np.asarray(v) for k, v in inputs.items()})
    diffs: dict[str, float] = {}
    shares: dict[str, float] = {}
    for name, r in zip(output_names, refs):
        r_np = r.detach().float().numpy()
        g = got[name].astype(np.float64)
        if g.shape != r_np.shape:
            raise ExportError(f"output {name!r}: ONNX shape {g.shape} differs from torch shape {r_np.shape}")
        diff = np.abs(g - r_np)
        diffs[name] = float(diff.max()) if diff.size else 0.0
        shares[name] = float(np.mean(diff > atol + rtol * np.abs(r_np))) if diff.size else 0.0
        if max_mismatch is not None and shares[name] > max_mismatch:
            raise ExportError(f"output {name!r} of the QDQ export differs from the fake-quant torch model in "
                              f"{shares[name]:.1%} of its values (allowed {max_mismatch:.1%}), by up to "
                              f"{diffs[name]:.3g} (tolerance {atol:g} + {rtol:g}*|ref|)")
    return diffs, shares


def count_qdq(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(QuantizeLinear, DequantizeLinear) node counts."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    return (sum(n.op_type == "QuantizeLinear" for n in nodes), sum(n.op_type == "DequantizeLinear" for n in nodes))


def check_layout(path: str | os.PathLike[str]) -> dict[str, int]:
    """Counts that describe the QDQ layout; raises ExportError if a weight DequantizeLinear reads a
    float initializer or an activation Q has no matching DQ."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    counts = {"weight_dq": 0, "bias_dq": 0, "activation_qdq": 0}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            arr = numpy_helper.to_array(inits[n.input[0]])
            if arr.dtype == np.int8:
                counts["weight_dq"] += 1
            elif arr.dtype == np.int32:
                counts["bias_dq"] += 1
            else:
                raise ExportError(f"DequantizeLinear '{n.name}' reads a {arr.dtype} initializer")
        elif n.op_type == "QuantizeLinear":
            if not all(c.op_type == "DequantizeLinear" for c in consumers.get(n.output[0], [])):
                raise ExportError(f"QuantizeLinear '{n.name}' feeds something other than DequantizeLinear")
            counts["activation_qdq"] += 1
    return counts
