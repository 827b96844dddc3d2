"""Options for `qdq build` (one frozen dataclass shared by every target)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConverterError

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
"""(min, opt, max) shape of one input for a TensorRT optimization profile."""


class BuildError(ConverterError):
    """A build could not produce its artifact (bad options, unsupported model, backend failure)."""


@dataclass(frozen=True)
class BuildConfig:
    """How to build. Fields a target does not use are ignored (and logged at debug level).

    opt_level: ONNX Runtime graph optimization level for ort-* targets: ``basic``, ``extended`` or ``all``
        (default: ``extended`` for ort-cpu, ``basic`` for ort-cuda / ort-trt; ort-edge uses the ORT-format
        converter's default, ``all`` without the x86-only NCHWc layout).
    shapes: input name -> (min, opt, max) shapes for dynamic axes (tensorrt; ort-trt profile options).
        Inputs not named take their dims from same-named symbolic dims of named inputs, else the defaults.
    default_batch / default_dim: (min, opt, max) for a dynamic batch axis / any other dynamic axis.
    fp16: also allow FP16 kernels for the non-quantized layers (tensorrt 10 / ort-trt).
    workspace_gb: TensorRT workspace memory pool limit.
    timing_cache: TensorRT timing cache file, read if it exists and written back after the build.
    device_id: CUDA device for ort-cuda / ort-trt provider options.
    provider_options: extra ONNX Runtime provider options, merged over the defaults the target records.
    edge_platform: ort-edge only: ``arm`` (allow int8 QDQ kernels) or ``amd64``; default portable.
    type_reduction: ort-edge only: also record per-op types in the reduced-ops config.
    precision: ``fp16`` or ``fp32`` for the float layers (None: the target's default,
        ``converter.targets.build``):
        ort-cuda converts the fused model to FP16; ort-trt / tensorrt enable TensorRT's FP16 kernels;
        ort-cpu / ort-edge run FP32 only. Recorded in the manifest.
    cpu: ort-cpu / ort-edge: the CPU family the artifact is for (``auto``: this machine), recorded in the
        manifest; a warning when the model's INT8 scheme saturates there (``converter.targets``).
    """

    opt_level: str | None = None
    shapes: dict[str, ShapeRange] = field(default_factory=dict)
    default_batch: tuple[int, int, int] = (1, 1, 32)
    default_dim: tuple[int, int, int] = (1, 128, 512)
    fp16: bool = False
    workspace_gb: float | None = None
    timing_cache: Path | None = None
    device_id: int = 0
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)
    edge_platform: str | None = None
    type_reduction: bool = False
    cpu: str = "auto"
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.opt_level is not None and self.opt_level not in ("basic", "extended", "all"):
            raise BuildError(f"unknown optimization level {self.opt_level!r}; use basic, extended or all")
        if self.precision not in (None, "fp16", "fp32"):
            raise BuildError(f"unknown precision {self.precision!r}; use fp16 or fp32")
        if self.workspace_gb is not None and self.workspace_gb <= 0:
            raise BuildError(f"workspace must be positive, got {self.workspace_gb} GB")
        if self.edge_platform not in (None, "arm", "amd64"):
            raise BuildError(f"unknown edge platform {self.edge_platform!r}; use arm or amd64")
        for name, triple in (("default_batch", self.default_batch), ("default_dim", self.default_dim)):
            if len(triple) != 3 or not 1 <= triple[0] <= triple[1] <= triple[2]:
                raise BuildError(f"{name} must be (min, opt, max) with 1 <= min <= opt <= max, got {triple}")

    def resolved_precision(self, target: str) -> str:
        """``fp16`` or ``fp32`` for ``target``: ``precision``, else ``--fp16``, else the target's default."""
        if self.precision == "fp32" and self.fp16:
            raise BuildError("--fp16 and --precision fp32 contradict each other; give one")
        from ..targets.build import build_target

        spec = build_target(target)
        precision = self.precision or ("fp16" if self.fp16 else spec.precision)
        if precision == "fp16" and not spec.fp16:
            raise BuildError(f"{target} runs FP32 (or the model's INT8); --precision fp16 is for ort-cuda, ort-trt "
                             "and tensorrt")
        return precision
