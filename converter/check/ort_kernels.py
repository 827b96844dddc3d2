"""ONNX Runtime's CPU kernel registry, read from the installed onnxruntime (which ops and types at
which opset versions have a CPU kernel). What the CPU optimizer fuses is in converter.targets.ort_cpu."""
from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)


Kernels = dict[tuple[str, str], list[tuple[int, int, frozenset[str]]]]


@functools.lru_cache(maxsize=1)
def cpu_kernels() -> Kernels | None:
    """``{(domain, op): [(first version, last version, type names)]}``, or None if not readable."""
    try:
        from onnxruntime.capi import _pybind_state as C

        defs = C.get_all_opkernel_def()
    except (ImportError, AttributeError) as exc:
        log.debug("ONNX Runtime's kernel registry is not readable: %s", exc)
        return None
    out: Kernels = {}
    for k in defs:
        if k.provider != "CPUExecutionProvider":
            continue
        types = frozenset(t.removeprefix("tensor(").removesuffix(")") for ts in k.type_constraints.values() for t in ts)
        lo, hi = k.version_range
        out.setdefault((k.domain, k.op_name), []).append((lo, hi, types))
    return out


def ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def max_onnx_opset(kernels: Kernels) -> int:
    """The newest ONNX opset version any CPU kernel starts at (a floor on what this ORT supports)."""
    return max(lo for (domain, _), ranges in kernels.items() if domain == "" for lo, _, _ in ranges)


def kernel_types(kernels: Kernels, domain: str, op: str, version: int) -> frozenset[str] | None:
    """Type names the CPU kernels of ``op`` at schema ``version`` accept, or None when there is none."""
    found = [types for lo, hi, types in kernels.get((domain, op), []) if lo <= version <= hi]
    if not found:
        return None
    return frozenset().union(*found)
