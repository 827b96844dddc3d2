"""What each target supports: quantized types, zero points, axes, ops, opsets, and what it fuses."""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import ort_kernels, trt_ops
from .graph import GraphIndex, QdqNode, iter_nodes, label
from .report import ERROR, WARNING, Finding

if TYPE_CHECKING:
    from ..targets import TargetProfile


class Target:
    """A backend's checks, parameterised by a ``TargetProfile`` (what it enforces, what it fuses)."""

    def __init__(self, profile: TargetProfile) -> None:
        self.profile = profile
        self.name = profile.name
        self.label = profile.label
        self.symmetric_only = profile.check_symmetric_only  # every zero point must be 0
        self.constant_qparams = profile.check_constant_qparams  # scales/zero points are build-time constants
        self.strict_weight_axis = profile.check_strict_weight_axis  # per-channel weight axis off the output channel
        self.strict_activation_per_tensor = profile.check_activation_per_tensor  # per-channel activations
        self.dangling_q = profile.check_dangling_q  # severity of a QuantizeLinear not followed by DequantizeLinear
        self.weight_only_ok = profile.check_weight_only_ok  # DQ(weight) -> MatMul with a float activation
        self.fuses = profile.fuses

    def qdq_type_problem(self, q: QdqNode, index: GraphIndex) -> str | None:
        """Why ``q``'s quantized type is unsupported, or None."""
        raise NotImplementedError

    def op_findings(self, index: GraphIndex) -> Iterator[Finding]:
        raise NotImplementedError

    def opset_findings(self, index: GraphIndex) -> Iterator[Finding]:
        raise NotImplementedError


class TensorRT(Target):
    def qdq_type_problem(self, q: QdqNode, index: GraphIndex) -> str | None:
        allowed = trt_ops.QUANTIZE_TYPES if q.is_q else trt_ops.DEQUANTIZE_TYPES
        if q.qtype not in allowed:
            hint = ""
            if q.qtype == "int32":
                hint = "; keep biases in float (onnxruntime quantize_static: extra_options QuantizeBias=False)"
            elif q.qtype == "uint8":
                hint = "; re-quantize with int8 (TensorRT takes uint8 only as a network input/output type)"
            return f"{q.node.op_type} type {q.qtype} is not supported by TensorRT (it takes {', '.join(sorted(allowed))}){hint}"
        if q.qtype in trt_ops.WEIGHT_ONLY_TYPES and not q.x_const:
            return f"{q.qtype} is supported by TensorRT only for weights (a constant DequantizeLinear input)"
        return None

    def op_findings(self, index: GraphIndex) -> Iterator[Finding]:
        for node in iter_nodes(index.graph):
            if node.domain not in ("", "ai.onnx"):
                yield Finding(ERROR, "op-support", f"{node.domain}.{node.op_type} is a custom-domain op: TensorRT's "
                              "ONNX parser needs a plugin for it (was the model optimized by ONNX Runtime first?)",
                              label(node))
            elif node.op_type not in trt_ops.SUPPORTED:
                yield Finding(ERROR, "op-support", f"{node.op_type} has no importer in TensorRT's ONNX parser "
                              f"(support matrix of TensorRT {trt_ops.MATRIX_VERSION})", label(node))

    def opset_findings(self, index: GraphIndex) -> Iterator[Finding]:
        v = index.opset
        if v < trt_ops.OPSET_MIN:
            yield Finding(ERROR, "opset", f"opset {v} is older than TensorRT's ONNX parser supports "
                          f"({trt_ops.OPSET_MIN}-{trt_ops.OPSET_MAX}); re-export with a newer opset")
        elif v > trt_ops.OPSET_MAX:
            yield Finding(WARNING, "opset", f"opset {v} is newer than TensorRT {trt_ops.MATRIX_VERSION}'s parser "
                          f"documents ({trt_ops.OPSET_MIN}-{trt_ops.OPSET_MAX}); older TensorRT releases reject it")


class OrtCpu(Target):
    def _since(self, index: GraphIndex, domain: str, op: str) -> tuple[int | None, bool]:
        """(schema version the node resolves to, whether the schema has a function body ORT can expand)."""
        import onnx.defs

        version = index.opsets.get(domain)
        if version is None:
            return None, False
        try:
            schema = onnx.defs.get_schema(op, version, domain)
        except onnx.defs.SchemaError:
            return (version if domain else None), False  # non-ONNX domains: the domain's opset version
        return schema.since_version, bool(schema.has_function or schema.has_context_dependent_function)

    def qdq_type_problem(self, q: QdqNode, index: GraphIndex) -> str | None:
        kernels = ort_kernels.cpu_kernels()
        if kernels is None:
            return None
        version, _ = self._since(index, "", q.node.op_type)
        types = ort_kernels.kernel_types(kernels, "", q.node.op_type, version or 0)
        if types is not None and q.qtype not in types:
            return (f"{q.node.op_type} (opset {version}) has no CPU kernel for {q.qtype} in ONNX Runtime "
                    f"{ort_kernels.ort_version()}")
        return None

    def op_findings(self, index: GraphIndex) -> Iterator[Finding]:
        kernels = ort_kernels.cpu_kernels()
        if kernels is None:
            yield Finding("note", "op-support", "ONNX Runtime's kernel registry is not readable here; "
                          "use --load-test to check op support")
            return
        seen: set[tuple[str, str]] = set()
        for node in iter_nodes(index.graph):
            domain = "" if node.domain == "ai.onnx" else node.domain
            if (domain, node.op_type) in seen or (not domain and node.op_type == "Constant"):
                continue
            seen.add((domain, node.op_type))
            version, expandable = self._since(index, domain, node.op_type)
            if version is None and not domain:
                yield Finding(ERROR, "op-support", f"{node.op_type} is not an ONNX op at opset {index.opset}",
                              label(node))
            elif ort_kernels.kernel_types(kernels, domain, node.op_type, version or 0) is None and not expandable:
                where = f"{domain}." if domain else ""
                yield Finding(ERROR, "op-support", f"{where}{node.op_type} (version {version}) has no CPU kernel in "
                              f"ONNX Runtime {ort_kernels.ort_version()}", label(node))

    def opset_findings(self, index: GraphIndex) -> Iterator[Finding]:
        v = index.opset
        kernels = ort_kernels.cpu_kernels()
        if v < 7:
            yield Finding(ERROR, "opset", f"opset {v} is older than ONNX Runtime supports (7+)")
        elif kernels is not None and v > ort_kernels.max_onnx_opset(kernels):
            yield Finding(WARNING, "opset", f"opset {v} is newer than any CPU kernel of ONNX Runtime "
                          f"{ort_kernels.ort_version()} (up to {ort_kernels.max_onnx_opset(kernels)}); --load-test tells")


CHECKERS: dict[str, type[Target]] = {"tensorrt": TensorRT, "onnxruntime": OrtCpu}


def checker_for(profile: TargetProfile) -> Target:
    """The checks of ``profile``'s backend, enforcing what the profile says."""
    return CHECKERS[profile.backend](profile)
