"""Small onnx-ir helpers shared by the passes: running passes, constants, initializers, unique names."""
from __future__ import annotations

import itertools

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import PassError, PassManager


def run_passes(passes: list, model: ir.Model) -> ir.Model:
    """Run passes in order; errors raised inside a pass surface as themselves, not as PassError."""
    try:
        return PassManager(passes)(model).model
    except PassError as exc:
        cause = exc
        while isinstance(cause, PassError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if cause is exc:
            raise
        raise cause from None


def const_tensor(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The tensor of a constant input (initializer or Constant node), else None; its dtype and
    shape are known without reading the data (weights in external files stay on disk)."""
    if value is None:
        return None
    tensor = value.const_value
    if tensor is None:
        producer = value.producer()
        if producer is not None and producer.op_type == "Constant" and producer.domain == "":
            attr = producer.attributes.get("value")
            if attr is not None:
                tensor = attr.as_tensor()
    return tensor


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy value of a constant input (initializer or Constant node), else None."""
    tensor = const_tensor(value)
    return None if tensor is None else tensor.numpy()


def shape_of(value: ir.Value) -> ir.Shape | None:
    """A copy of a value's shape (None when unknown), for a new value that has the same shape."""
    return None if value.shape is None else value.shape.copy()


def is_float32(value: ir.Value | None) -> bool:
    return value is not None and value.dtype == ir.DataType.FLOAT


def unique_name(graph: ir.Graph, base: str, taken: set[str] | None = None) -> str:
    """A value name not used in ``graph`` (checks inputs, initializers and node outputs)."""
    if taken is None:
        taken = used_names(graph)
    if base not in taken:
        taken.add(base)
        return base
    for i in itertools.count(1):
        cand = f"{base}_{i}"
        if cand not in taken:
            taken.add(cand)
            return cand
    raise AssertionError("unreachable")


def used_names(graph: ir.Graph) -> set[str]:
    names = {v.name for v in graph.inputs if v.name}
    names.update(graph.initializers.keys())
    for node in graph:
        names.update(o.name for o in node.outputs if o.name)
    return names


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray, taken: set[str] | None = None) -> ir.Value:
    """Register ``array`` as a new initializer under a unique name derived from ``name``."""
    name = unique_name(graph, name, taken)
    value = ir.Value(name=name, const_value=ir.tensor(np.asarray(array, order="C"), name=name))
    value.shape = ir.Shape(array.shape)
    value.dtype = value.const_value.dtype
    graph.register_initializer(value)
    return value


def replace_initializer_for(node: ir.Node, index: int, graph: ir.Graph, array: np.ndarray,
                            taken: set[str] | None = None) -> ir.Value:
    """Give ``node.inputs[index]`` a new constant value ``array``.

    Overwrites the initializer in place when this node is its only user; otherwise adds a new one,
    so that other users keep the original.
    """
    old = node.inputs[index]
    assert old is not None
    if old.is_initializer() and len(old.uses()) == 1 and not old.is_graph_input():
        old.const_value = ir.tensor(np.asarray(array.astype(old.const_value.numpy().dtype), order="C"), name=old.name)
        return old
    base = old.name or f"{node.name}_input{index}"
    new = add_initializer(graph, base, array.astype(const_array(old).dtype), taken)
    node.replace_input_with(index, new)
    return new
