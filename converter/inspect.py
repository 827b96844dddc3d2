"""Summaries of ONNX model files: inputs, outputs, opset, op histogram, size, Q/DQ count."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelFileError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class ModelSummary:
    path: Path
    opsets: dict[str, int]
    inputs: list[str]
    outputs: list[str]
    op_counts: Counter = field(default_factory=Counter)
    size_bytes: int = 0
    parameters: int = 0
    producer: str = ""
    weight_dtypes: dict[str, int] = field(default_factory=dict)  # weight elements per dtype, largest first
    constant_parameters: int = 0  # of ``parameters``: held by Constant nodes (paddle2onnx stores weights so)
    constant_nodes: int = 0

    @property
    def qdq_count(self) -> int:
        return sum(self.op_counts.get(op, 0) for op in QDQ_OPS)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "opsets": self.opsets,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "op_counts": dict(self.op_counts.most_common()),
            "nodes": sum(self.op_counts.values()),
            "qdq_nodes": self.qdq_count,
            "size_bytes": self.size_bytes,
            "parameters": self.parameters,
            "producer": self.producer,
            "weight_dtypes": self.weight_dtypes,
            "constant_parameters": self.constant_parameters,
            "constant_nodes": self.constant_nodes,
        }


def load_onnx(path: str | os.PathLike[str], load_external_data: bool = True) -> "onnx.ModelProto":  # noqa: F821
    """Load an ONNX file, raising ModelFileError (naming the file) when it is missing or not ONNX."""
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model file not found: {p}")
    if p.stat().st_size == 0:
        raise ModelFileError(f"{p} is empty; expected an ONNX model")
    try:
        model = onnx.load(str(p), load_external_data=load_external_data)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise ModelFileError(f"{p} is not a valid ONNX model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not model.graph.node and not model.graph.output:
        raise ModelFileError(f"{p} is not an ONNX model (no graph found)")
    return model


def _tensor_desc(vi) -> str:  # noqa: ANN001
    import onnx

    t = vi.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
    dims = [d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in t.shape.dim]
    return f"{vi.name}: {dtype}[{', '.join(dims)}]"


def summarize(path: str | os.PathLike[str]) -> ModelSummary:
    """Read a model file (without loading external weights) and summarize it."""
    import onnx

    p = Path(path)
    model = load_onnx(p, load_external_data=False)
    g = model.graph
    init_names = {i.name for i in g.initializer}
    counts: Counter = Counter(n.op_type for n in g.node)
    params = 0
    dtypes: Counter = Counter()
    for init in g.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        params += n
        dtypes[onnx.helper.tensor_dtype_to_np_dtype(init.data_type).name if init.data_type else "?"] += n
    const_params, const_nodes = 0, 0
    for node in g.node:  # weights exporters store as Constant nodes count as parameters too
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.HasField("t"):
                n = int(np.prod(attr.t.dims)) if attr.t.dims else 1
                const_params += n
                const_nodes += 1
                dtypes[onnx.helper.tensor_dtype_to_np_dtype(attr.t.data_type).name if attr.t.data_type else "?"] += n
    params += const_params
    size = p.stat().st_size
    for loc in {e.value for i in g.initializer for e in i.external_data if e.key == "location"}:
        side = p.parent / loc
        if side.is_file():
            size += side.stat().st_size
    return ModelSummary(
        path=p,
        opsets={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        inputs=[_tensor_desc(i) for i in g.input if i.name not in init_names],
        outputs=[_tensor_desc(o) for o in g.output],
        op_counts=counts,
        size_bytes=size,
        parameters=params,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        weight_dtypes=dict(dtypes.most_common()),
        constant_parameters=const_params,
        constant_nodes=const_nodes,
    )
