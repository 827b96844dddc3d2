"""Optional load tests: let the target itself try the model.

ort-cpu: ONNX Runtime loads the model on the CPU provider with its QDQ fusions (level ``extended``);
a load failure is a violation, and Q/DQ nodes its optimizer left behind are reported: a Q feeding a DQ
directly (fake quantization in float) and DQ nodes on constant weights (dequantized at run time).
tensorrt: TensorRT's ONNX parser parses the model (needs the ``tensorrt`` package and a GPU).
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .graph import label
from .report import ERROR, NOTE, WARNING, Finding

log = logging.getLogger(__name__)


def ort_cpu_load_test(model_bytes: bytes) -> Iterator[Finding]:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="qdq-check-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(optimized)
        try:
            ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises private exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            yield Finding(ERROR, "load", f"ONNX Runtime {ort.__version__} (CPU) cannot load the model: {first}")
            return
        graph = onnx.load(str(optimized)).graph
    inits = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    pairs = [n for n in graph.node if n.op_type == "DequantizeLinear"
             and producer.get(n.input[0]) is not None and producer[n.input[0]].op_type == "QuantizeLinear"]
    weights = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    fused = sum(1 for n in graph.node if n.op_type.startswith("QLinear") or n.op_type in ("QGemm", "QAttention",
                                                                                          "MatMulNBits"))
    yield Finding(NOTE, "load", f"ONNX Runtime {ort.__version__} loads the model; after its CPU optimizations "
                  f"{fused} quantized kernel(s), {len(pairs)} Q->DQ pair(s) and {len(weights)} weight DQ(s) remain")
    if pairs:
        names = ", ".join(repr(label(n)) for n in pairs[:5]) + (" ..." if len(pairs) > 5 else "")
        yield Finding(WARNING, "unfused-qdq", f"ONNX Runtime left {len(pairs)} Q->DQ pair(s) unfused (fake "
                      f"quantization run in float): {names}")
    if weights:
        names = ", ".join(repr(label(n)) for n in weights[:5]) + (" ..." if len(weights) > 5 else "")
        yield Finding(WARNING, "unfused-weight", f"ONNX Runtime dequantizes {len(weights)} weight(s) at run time "
                      f"(their layers run in float): {names}")


def tensorrt_parse_test(model_bytes: bytes) -> Iterator[Finding]:
    from runtime.errors import BackendUnavailableError
    from runtime.tensorrt import require_tensorrt, trt_logger

    try:
        trt = require_tensorrt()
        logger = trt_logger(trt)
        builder = trt.Builder(logger)
    except (BackendUnavailableError, RuntimeError, TypeError) as exc:
        yield Finding(NOTE, "load", f"TensorRT parse test skipped: {exc}")
        return
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(1 << int(flag) if flag is not None else 0)
    parser = trt.OnnxParser(network, logger)
    if parser.parse(model_bytes):
        yield Finding(NOTE, "load", f"TensorRT {trt.__version__}'s ONNX parser accepts the model")
        return
    for i in range(parser.num_errors):
        yield Finding(ERROR, "load", f"TensorRT {trt.__version__}'s ONNX parser: {parser.get_error(i).desc()}")
