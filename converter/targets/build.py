"""Build targets as data: what ``qdq build --target X`` makes and how the backend runs it.

The quantization profiles (``TargetProfile``) say how a model is quantized for a backend; a
``BuildTarget`` says what artifact a build writes for it (suffix, execution providers, optimization
level, float precision) and which profile's INT8 it runs. Which runtime backend loads each artifact,
and from which file suffixes, is the runtime's own knowledge (``runtime.manifest.TARGETS``).
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.manifest import TARGETS as ARTIFACTS

CUDA, TRT_EP, CPU = "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"


@dataclass(frozen=True)
class BuildTarget:
    """One ``qdq build`` target.

    ``providers``: ONNX Runtime execution providers in order (empty: native TensorRT);
    ``opt_level``: the level of ONNX Runtime's offline optimization (None: the builder's own);
    ``precision``: float precision when ``--precision`` is not given, ``fp16``: whether FP16 is possible;
    ``int8_profile``: the quantize target whose Q/DQ INT8 the backend fuses into integer kernels (None: the
    backend has none, so an INT8 QDQ model is refused).
    """

    name: str
    suffix: str
    providers: tuple[str, ...] = ()
    opt_level: str | None = None
    precision: str = "fp32"
    fp16: bool = False
    int8_profile: str | None = None

    @property
    def backend(self) -> str:
        """The runtime backend that loads the artifact (``onnxruntime`` or ``tensorrt``)."""
        return ARTIFACTS[self.name][0]

    @property
    def suffixes(self) -> tuple[str, ...]:
        """File suffixes the artifact may have (``Engine.load`` picks the backend from them)."""
        return ARTIFACTS[self.name][1]

    @property
    def for_cpu(self) -> bool:
        """Runs on the CPU, so the artifact is for one CPU family (``--cpu``)."""
        return self.int8_profile == "ort-cpu"


BUILD_TARGETS: dict[str, BuildTarget] = {t.name: t for t in (
    BuildTarget("ort-cpu", ".cpu.onnx", (CPU,), "extended", int8_profile="ort-cpu"),
    BuildTarget("ort-cuda", ".cuda.onnx", (CUDA, CPU), "basic", precision="fp16", fp16=True),
    BuildTarget("ort-trt", ".trt.onnx", (TRT_EP, CUDA, CPU), "basic", precision="fp16", fp16=True,
                int8_profile="tensorrt"),
    BuildTarget("ort-edge", ".ort", int8_profile="ort-cpu"),
    BuildTarget("tensorrt", ".engine", fp16=True, int8_profile="tensorrt"),
)}


def build_target(name: str) -> BuildTarget:
    """The build target called ``name``; ``UnknownBuildTarget`` names the choices otherwise."""
    try:
        return BUILD_TARGETS[name]
    except KeyError:
        raise UnknownBuildTarget(f"unknown target {name!r}; choose one of {', '.join(BUILD_TARGETS)}") from None


class UnknownBuildTarget(ValueError):
    """A build target that has no entry in ``BUILD_TARGETS``."""
