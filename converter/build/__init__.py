"""`qdq build`: turn a QDQ ONNX model into a deployable artifact plus a manifest `Engine.load` reads.

    from converter.build import BuildConfig, build
    result = build("model.int8.onnx", "ort-cpu", "out/model.cpu.onnx", BuildConfig())

Targets: ort-cpu, ort-cuda, ort-trt (ONNX Runtime-optimized .onnx), ort-edge (.ort + reduced-ops
config), tensorrt (serialized TensorRT engine, .engine/.plan). Every build is staged in a hidden folder
beside the output, verified, and moved into place only when complete.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.manifest import TARGETS, manifest_path_for

from ..targets.build import UnknownBuildTarget, build_target

from .config import BuildConfig, BuildError, ShapeRange
from .profiles import parse_shapes

log = logging.getLogger(__name__)

__all__ = ["BuildConfig", "BuildError", "BuildResult", "ShapeRange", "TARGETS", "build", "parse_shapes", "output_path"]

@dataclass(frozen=True)
class BuildResult:
    """What a build wrote."""

    target: str
    artifact: Path
    manifest: Path
    side_files: tuple[Path, ...]
    seconds: float
    precision: str = "fp32"
    fusions: tuple[tuple[str, int], ...] = ()

    def describe(self) -> str:
        lines = [f"built {self.target}: {self.artifact} ({self.artifact.stat().st_size / 1e6:.1f} MB, "
                 f"{self.seconds:.1f} s, {self.precision})"]
        if self.fusions:
            lines.append("  fused: " + ", ".join(f"{op} {n}" for op, n in self.fusions))
        lines += [f"  with {p}" for p in self.side_files]
        lines.append(f"manifest {self.manifest}")
        return "\n".join(lines)


def output_path(model: Path, target: str, output: str | os.PathLike[str] | None) -> Path:
    """The artifact path for ``output``: a file path with the target's suffix, or a folder to put it in
    (an existing folder or a suffix-less path; the artifact is then named after the model)."""
    spec = build_target(target)
    stem = model.name[: -len(model.suffix)] if model.suffix else model.name
    if output is None or Path(output).is_dir() or not Path(output).suffix:
        folder = Path(output) if output is not None else model.parent
        return folder / f"{stem}{spec.suffix}"
    out = Path(output)
    if out.suffix.lower() not in spec.suffixes:
        raise BuildError(f"output {out} for target {target} must end with {' or '.join(spec.suffixes)} "
                         "(Engine.load picks the backend from it)")
    return out


def build(model_path: str | os.PathLike[str], target: str, output: str | os.PathLike[str] | None = None,
          config: BuildConfig | None = None) -> BuildResult:
    """Build ``model_path`` (a QDQ ONNX file) for ``target`` into ``output`` and write its manifest."""
    from runtime.atomic import staging_dir
    from runtime.ort import OrtEngine
    from runtime.outputs import check_output

    from ..inspect import load_onnx
    from .io_specs import onnx_io_specs
    from .manifest import write_manifest
    from .staging import commit

    config = config or BuildConfig()
    try:
        spec = build_target(target)
    except UnknownBuildTarget as exc:
        raise BuildError(str(exc)) from None
    source = Path(model_path)
    model = load_onnx(source, load_external_data=False)
    out = output_path(source, target, output)
    check_output(out, inputs=[source])  # before the build: writable, not the source model
    inputs, outputs = onnx_io_specs(model)
    precision = config.resolved_precision(target)
    if target == "ort-cuda":
        from .cuda import refuse_qdq

        refuse_qdq(model, source)  # before anything is staged
    start = time.perf_counter()
    with staging_dir(out) as staging:
        staged = staging / out.name
        if target == "tensorrt":
            from .tensorrt import build_tensorrt

            result = build_tensorrt(source, staged, config, inputs)
        elif target == "ort-edge":
            from .edge import build_edge

            result = build_edge(source, staged, config)
        elif target == "ort-cuda":
            from .cuda import build_cuda

            result = build_cuda(source, staged, config, model, inputs, precision)
        else:
            from .ort import build_ort

            result = build_ort(source, staged, target, config, model, inputs)
        result.build.update(_profile_facts(model, target, config))
        result.build["precision"] = precision
        if spec.backend == "onnxruntime":
            # the artifact must load before it replaces anything; its specs are what Engine.load will report
            with OrtEngine(staged) as check:
                inputs, outputs = check.input_specs, check.output_specs
        write_manifest(target, staged, source, result, inputs, outputs)
        side = commit(staging, out, list(result.side_files))[:-1]
    seconds = time.perf_counter() - start
    log.info("built %s for %s in %.1f s", out, target, seconds)
    return BuildResult(target, out, manifest_path_for(out), tuple(side), seconds, precision,
                       tuple(result.build.get("fusions", {}).items()))


def _profile_facts(model, target: str, config: BuildConfig) -> dict[str, str]:  # noqa: ANN001
    """The quantization profile the model records and, for CPU targets, the CPU family it is built for;
    a warning when the model's INT8 scheme saturates on that family."""
    from ..targets import METADATA_KEYS, PROFILES, get_profile

    meta = {p.key: p.value for p in model.metadata_props}
    facts = {}
    recorded = meta.get(METADATA_KEYS["profile"])
    if recorded:
        facts["quant_profile"] = recorded
        facts["int8_exact_needs_vnni"] = meta.get(METADATA_KEYS["exact_needs_vnni"], "0")
    if build_target(target).for_cpu:
        cpu = get_profile("ort-cpu", config.cpu)  # a family without VNNI has a scheme that needs none
        facts["cpu"] = cpu.cpu
        if recorded in PROFILES and PROFILES[recorded].exact_needs_vnni and not cpu.exact_needs_vnni:
            log.warning("the model was quantized for %s, whose u8xs8 products saturate on %s CPUs; "
                        "re-quantize with --cpu %s", recorded, cpu.cpu, cpu.cpu)
    return facts
