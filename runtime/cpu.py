"""The integer dot-product features of the CPU this process runs on, as ONNX Runtime's kernels see them.

ONNX Runtime (MLAS) picks its u8×s8 GEMM kernel from CPUID. On x86 without any VNNI (AVX2-only, or
AVX-512 without VNNI) it multiplies with ``vpmaddubsw``, which adds each pair of u8×s8 products in
int16 and saturates; with AVX512-VNNI, AVX-VNNI or AMX, and on ARM (sdot/udot, smmla, or widening
int16 math), the dot products are exact.

Detection uses numpy's runtime dispatch table, which reads CPUID itself (as ONNX Runtime does, so it
stays right under emulators and in VMs whose ``/proc/cpuinfo`` differs), and py-cpuinfo for the names
numpy does not track (AVX-VNNI, AMX-INT8, ARM i8mm).
"""
from __future__ import annotations

import functools
import logging
import platform
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

# canonical name -> numpy's name (None: numpy does not track it, py-cpuinfo's flag decides)
INT8_FEATURES: dict[str, str | None] = {
    "avx2": "AVX2",
    "avx512_vnni": "AVX512VNNI",
    "avx_vnni": None,
    "amx_int8": None,
    "dotprod": "ASIMDDP",
    "i8mm": None,
}
_CPUINFO_FLAGS = {"avx_vnni": ("avx_vnni", "avxvnni"), "amx_int8": ("amx_int8",), "i8mm": ("i8mm",)}
_EXACT_X86 = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@dataclass(frozen=True)
class CpuInt8:
    """Architecture and integer dot-product features of a CPU."""

    arch: str  # "x86_64", "arm64" or what platform.machine() says
    features: frozenset[str]

    @property
    def u8s8_saturates(self) -> bool:
        """Whether ONNX Runtime's u8×s8 kernels add pairs of products in int16 (x86 without VNNI)."""
        return self.arch == "x86_64" and not self.features & _EXACT_X86

    def describe(self) -> str:
        """One line: arch, features, and what that means for INT8 on ONNX Runtime."""
        names = ", ".join(f for f in INT8_FEATURES if f in self.features) or "none"
        verdict = ("u8s8 kernels saturate pairs of products at int16 (x86 without VNNI)"
                   if self.u8s8_saturates else "u8s8 integer dot products are exact")
        return f"{self.arch} [{names}]: {verdict}"


def _numpy_features() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__  # type: ignore[no-redef]
    return dict(__cpu_features__)


def _cpuinfo_flags() -> set[str]:
    try:
        import cpuinfo

        return set(cpuinfo.get_cpu_info().get("flags", ()))
    except Exception as exc:  # py-cpuinfo probes in a subprocess; a failure only loses the extra names
        log.debug("py-cpuinfo failed: %s", exc)
        return set()


def _arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)


@functools.cache
def cpu_int8() -> CpuInt8:
    """The CPU this process runs on (computed once per process)."""
    numpy_has = _numpy_features()
    flags: set[str] | None = None
    found = set()
    for name, numpy_name in INT8_FEATURES.items():
        if numpy_name is not None:
            if numpy_has.get(numpy_name):
                found.add(name)
            continue
        if flags is None:
            flags = _cpuinfo_flags()
        if flags & set(_CPUINFO_FLAGS[name]):
            found.add(name)
    return CpuInt8(_arch(), frozenset(found))


# ONNX metadata `qdq quantize` writes (converter.targets.METADATA_KEYS uses these) and Engine.load reads
EXACT_NEEDS_VNNI_KEY = "qdq.int8.exact_needs_vnni"
PROFILE_KEY = "qdq.profile"


def saturation_warning(metadata: Mapping[str, str], label: str, cpu: CpuInt8 | None = None) -> str | None:
    """One line when a model made for CPUs with exact u8xs8 dot products runs on one (default: this
    process's CPU) that saturates."""
    if metadata.get(EXACT_NEEDS_VNNI_KEY) != "1" or not (cpu or cpu_int8()).u8s8_saturates:
        return None
    return (f"{label} was quantized for {metadata.get(PROFILE_KEY, 'VNNI CPUs')}: this CPU has no VNNI and its "
            "u8xs8 kernels saturate, so results differ from exact INT8; re-quantize with --cpu avx2 (or portable; "
            "QAT: --weight-bits 7)")


__all__ = ["EXACT_NEEDS_VNNI_KEY", "INT8_FEATURES", "PROFILE_KEY", "CpuInt8", "cpu_int8", "saturation_warning"]
