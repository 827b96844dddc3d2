"""Target profiles: each deploy target as one frozen ``TargetProfile``, in one registry.

    from converter.targets import get_profile
    profile = get_profile("ort-cpu", cpu="auto")   # the CPU this process runs on
    profile.weight_bits, profile.activation_dtype, profile.key   # 7, 'uint8', 'ort-cpu/avx2'

Quantization (placement, insertion), ``qdq check``, ``qdq build`` and the CLI read the same profile,
so ``quantize --target X`` writes what ``check --target X`` accepts. Adding a target is one module
with a ``PROFILES`` tuple, listed in ``_MODULES``, plus its test. What ``qdq build`` writes for each
build target (suffix, providers, precision, which profile's INT8 it runs) is ``converter.targets.build``.
"""
from __future__ import annotations

from runtime.cpu import EXACT_NEEDS_VNNI_KEY, PROFILE_KEY

from . import ort_cpu, tensorrt
from .profile import TargetProfile

_MODULES = (ort_cpu, tensorrt)
PROFILES: dict[str, TargetProfile] = {p.key: p for m in _MODULES for p in m.PROFILES}
TARGETS: tuple[str, ...] = tuple(dict.fromkeys(p.name for p in PROFILES.values()))
CPU_CHOICES: tuple[str, ...] = ("auto",) + tuple(p.cpu for p in PROFILES.values() if p.cpu)
METADATA_KEYS = {"target": "qdq.target", "profile": PROFILE_KEY, "exact_needs_vnni": EXACT_NEEDS_VNNI_KEY}
"""ONNX metadata a quantized model records; ``runtime.cpu`` (which reads them at load) owns the keys it reads."""


class UnknownTargetError(ValueError):
    """A target or CPU family that has no profile."""


def host_cpu_family() -> str:
    """The ort-cpu family of the CPU this process runs on (``runtime.cpu`` reads CPUID via numpy)."""
    from runtime.cpu import cpu_int8

    cpu = cpu_int8()
    if cpu.arch == "arm64":
        return "arm64"
    if cpu.arch == "x86_64":
        return "avx2" if cpu.u8s8_saturates else "vnni"
    return "portable"


def get_profile(target: str, cpu: str | None = "auto") -> TargetProfile:
    """The profile of ``target``; for targets with CPU families, of ``cpu`` (``auto``: this machine)."""
    if target not in TARGETS:
        raise UnknownTargetError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    families = [p for p in PROFILES.values() if p.name == target and p.cpu]
    if not families:
        return PROFILES[target]
    cpu = host_cpu_family() if cpu in (None, "auto") else cpu
    key = f"{target}/{cpu}"
    if key not in PROFILES:
        raise UnknownTargetError(f"unknown --cpu {cpu!r} for {target}; choose one of "
                                 f"{', '.join(['auto'] + [p.cpu for p in families])}")
    return PROFILES[key]


def profile_metadata(profile: TargetProfile) -> dict[str, str]:
    """What a quantized model records about the profile it was made for."""
    return {METADATA_KEYS["target"]: profile.name, METADATA_KEYS["profile"]: profile.key,
            METADATA_KEYS["exact_needs_vnni"]: "1" if profile.exact_needs_vnni else "0"}


__all__ = ["CPU_CHOICES", "METADATA_KEYS", "PROFILES", "TARGETS", "TargetProfile", "UnknownTargetError",
           "get_profile", "host_cpu_family", "profile_metadata"]
