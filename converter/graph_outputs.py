"""Expose intermediate tensors of an ONNX model as extra graph outputs (to read them at run time)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import onnx


def add_outputs(proto: onnx.ModelProto, names: Iterable[str], elem_types: Mapping[str, int] | None = None) -> onnx.ModelProto:
    """Append ``names`` to ``proto``'s graph outputs in place (float unless ``elem_types`` says otherwise)."""
    present = {o.name for o in proto.graph.output}
    for name in names:
        if name not in present:
            elem = (elem_types or {}).get(name, onnx.TensorProto.FLOAT)
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
            present.add(name)
    return proto
