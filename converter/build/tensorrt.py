"""tensorrt: a native TensorRT 10/11 engine built from a QDQ model by explicit quantization.

TensorRT takes the INT8 scales from the model's Q/DQ nodes (implicit INT8 calibration is gone in
TensorRT 11 and deprecated in 10). The network is strongly typed, so every tensor keeps the type the
ONNX graph gives it and Q/DQ pairs decide where INT8 runs; TensorRT 11 only builds strongly typed
networks. ``fp16`` (TensorRT 10 only) instead builds a weakly typed network with the INT8 and FP16
builder flags so the non-quantized layers may also run in FP16; on TensorRT 11 convert the model to
mixed precision first (e.g. ModelOpt AutoCast). Each dynamic input gets one optimization profile
(min/opt/max from ``--shapes`` or the defaults); a timing cache is loaded before and saved after the
build; the serialized engine is written into the staging folder and committed atomically.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from runtime.atomic import atomic_write
from runtime.errors import BackendUnavailableError
from runtime.specs import TensorSpec
from runtime.tensorrt import INSTALL_HINT, require_tensorrt, trt_logger

from .config import BuildConfig, BuildError, ShapeRange
from .profiles import format_shape, resolve_profiles
from .staging import StagedBuild

log = logging.getLogger(__name__)


def _has_weak_typing(trt: Any) -> bool:
    """TensorRT 10 still has precision builder flags; TensorRT 11 removed them."""
    return hasattr(trt.BuilderFlag, "INT8") and hasattr(trt.BuilderFlag, "FP16")


def _network(trt: Any, builder: Any, config: BuildConfig) -> tuple[Any, bool]:
    """Create the network definition; returns (network, strongly_typed)."""
    strongly_typed_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if config.resolved_precision("tensorrt") == "fp16":
        if not _has_weak_typing(trt):
            raise BuildError(f"TensorRT {trt.__version__} removed the FP16 builder flag (strongly typed networks only): "
                             "convert the model to mixed precision first (e.g. ModelOpt AutoCast) and build without --fp16 / --precision fp16")
        return builder.create_network(0), False
    if strongly_typed_flag is not None and _has_weak_typing(trt):
        return builder.create_network(1 << int(strongly_typed_flag)), True
    return builder.create_network(0), True  # TensorRT 11: always strongly typed


def _parse(trt: Any, network: Any, logger: Any, source: Path) -> Any:
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(source)):
        return parser
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        where = f" (node {err.node_name()}, {op})" if hasattr(err, "node_name") and err.node_name() else ""
        errors.append(f"{err.desc()}{where}")
    detail = errors[0] if errors else "no detail given"
    more = f" (+{len(errors) - 1} more; -v shows all)" if len(errors) > 1 else ""
    for e in errors:
        log.debug("TensorRT ONNX parser: %s", e)
    raise BuildError(f"TensorRT's ONNX parser rejected {source}: {detail}{more}; "
                     f"`qdq check {source} --target tensorrt` lists what TensorRT does not support")


def _add_profile(trt: Any, builder: Any, bconfig: Any, network: Any, profiles: dict[str, ShapeRange]) -> None:
    if not profiles:
        return
    profile = builder.create_optimization_profile()
    network_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for name, (lo, opt, hi) in profiles.items():
        if name not in network_inputs:
            raise BuildError(f"profile input {name!r} is not an input of the TensorRT network")
        profile.set_shape(name, lo, opt, hi)
        log.info("profile %s: min %s opt %s max %s", name, format_shape(lo), format_shape(opt), format_shape(hi))
    if bconfig.add_optimization_profile(profile) < 0:
        raise BuildError("TensorRT rejected the optimization profile (see the log with -v)")


def _timing_cache(bconfig: Any, path: Path | None) -> Any:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    if data:
        log.info("timing cache: %s (%d bytes)", path, len(data))
    cache = bconfig.create_timing_cache(data)
    if cache is None or not bconfig.set_timing_cache(cache, False):
        raise BuildError(f"TensorRT could not use the timing cache {path} (corrupt, or from another TensorRT/GPU); "
                         "delete it and build again")
    return cache


def _device_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - informational only
        return None


def build_tensorrt(source: Path, staged: Path, config: BuildConfig, inputs: list[TensorSpec]) -> StagedBuild:
    """Build a serialized TensorRT engine from the QDQ model ``source`` into ``staged``."""
    profiles = resolve_profiles(inputs, config.shapes, config.default_batch, config.default_dim)
    trt = require_tensorrt()
    logger = trt_logger(trt)
    try:
        builder = trt.Builder(logger)
    except (RuntimeError, TypeError) as exc:
        raise BackendUnavailableError(f"TensorRT could not start a builder ({exc}): no usable NVIDIA GPU / CUDA "
                                      f"driver; {INSTALL_HINT}") from None
    if builder is None:
        raise BackendUnavailableError(f"TensorRT could not start a builder (no usable NVIDIA GPU / CUDA driver); "
                                      f"{INSTALL_HINT}")
    network, strongly_typed = _network(trt, builder, config)
    parser = _parse(trt, network, logger, source)  # keep the parser alive until the build is done
    bconfig = builder.create_builder_config()
    if config.workspace_gb:
        bconfig.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_gb * (1 << 30)))
    if not strongly_typed:
        bconfig.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the Q/DQ nodes
        bconfig.set_flag(trt.BuilderFlag.FP16)
    _add_profile(trt, builder, bconfig, network, profiles)
    _timing_cache(bconfig, config.timing_cache)
    log.info("building TensorRT %s engine from %s (this takes a while)", trt.__version__, source)
    serialized = builder.build_serialized_network(network, bconfig)
    if serialized is None:
        detail = f": {logger.errors[-1]}" if logger.errors else ""
        raise BuildError(f"TensorRT failed to build an engine from {source}{detail}")
    with staged.open("wb") as fh:
        fh.write(serialized)
    if config.timing_cache is not None:
        data = bytes(memoryview(bconfig.get_timing_cache().serialize()))
        atomic_write(config.timing_cache, lambda tmp: tmp.write_bytes(data))
        log.info("saved timing cache %s", config.timing_cache)
    del parser
    return StagedBuild(
        providers=[],
        build={
            "tensorrt_version": trt.__version__,
            "strongly_typed": strongly_typed,
            "fp16": config.resolved_precision("tensorrt") == "fp16",
            "workspace_gb": config.workspace_gb,
            "profiles": {n: [format_shape(s) for s in rng] for n, rng in profiles.items()},
            "timing_cache": str(config.timing_cache) if config.timing_cache else None,
            "device": _device_name(),
        },
    )
