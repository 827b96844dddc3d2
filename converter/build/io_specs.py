"""Input/output specs read from an ONNX graph (no session needed)."""
from __future__ import annotations

import numpy as np

from runtime.errors import EngineError
from runtime.specs import Dim, TensorSpec

from .config import BuildError


def _spec(vi: "onnx.ValueInfoProto") -> TensorSpec:  # noqa: F821
    import onnx

    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not t.elem_type:
        raise BuildError(f"graph input/output {vi.name!r} is not a typed tensor")
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
    except (KeyError, TypeError, EngineError) as exc:
        raise BuildError(f"graph input/output {vi.name!r} has an unsupported element type ({exc})") from None
    dims: list[Dim] = []
    for d in t.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return TensorSpec(vi.name, dtype, tuple(dims))


def onnx_io_specs(model: "onnx.ModelProto") -> tuple[list[TensorSpec], list[TensorSpec]]:  # noqa: F821
    """(inputs, outputs) of ``model``'s graph; initializers listed as inputs are skipped."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [_spec(vi) for vi in model.graph.input if vi.name not in inits]
    outputs = [_spec(vi) for vi in model.graph.output]
    return inputs, outputs
