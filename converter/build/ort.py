"""ort-cpu / ort-cuda / ort-trt: an ONNX Runtime-optimized model saved for one execution provider.

ONNX Runtime optimizes offline through ``SessionOptions.optimized_model_filepath``. ort-cpu is optimized
on the CPU provider at ``extended`` by default: Q/DQ groups become QLinearConv / QLinearMatMul / QGemm
and the transformer fusions apply, all portable across CPUs (``all`` adds the NCHWc layout, which ONNX
Runtime itself warns is tied to the machine that optimized it). ort-cuda and ort-trt cannot be optimized
here for their provider (that needs the provider and a GPU), and the ``extended`` rewrites are assigned
to the CPU provider, so they are saved at ``basic``: provider-independent rewrites (constant folding,
redundant-node removal) that keep every Q/DQ node for the GPU provider to fuse when the model loads.
The provider list and provider options (TensorRT EP: INT8/FP16, engine and timing caches, profiles)
go into the manifest, which ``Engine.load`` applies.
"""
from __future__ import annotations

import logging
from pathlib import Path

from runtime.specs import TensorSpec

from ..targets.build import CUDA, TRT_EP, build_target
from .config import BuildConfig, BuildError
from .profiles import ort_profile_options, resolve_profiles
from .staging import StagedBuild

log = logging.getLogger(__name__)



def _level(name: str) -> "onnxruntime.GraphOptimizationLevel":  # noqa: F821
    import onnxruntime as ort

    return {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[name]


def uses_external_data(model: "onnx.ModelProto") -> bool:  # noqa: F821
    from onnx.external_data_helper import uses_external_data as uses

    return any(uses(t) for t in model.graph.initializer)


def optimize(source: Path, dest: Path, level: str, external_data: str | None = None) -> None:
    """Run ONNX Runtime's offline optimizer on the CPU provider and save the result to ``dest``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = _level(level)
    so.optimized_model_filepath = str(dest)
    if external_data:
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", external_data)
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    try:
        ort.InferenceSession(str(source), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises private exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(f"ONNX Runtime could not optimize {source}: {first}") from exc
    if not dest.is_file():
        raise BuildError(f"ONNX Runtime did not write the optimized model for {source}")


def provider_options(target: str, config: BuildConfig, inputs: list[TensorSpec], stem: str) -> dict[str, dict[str, str]]:
    """Provider options recorded for ``target``; relative ``*_path`` values are relative to the artifact."""
    dev = str(config.device_id)
    opts: dict[str, dict[str, str]] = {}
    providers = build_target(target).providers
    if CUDA in providers:
        opts[CUDA] = {"device_id": dev}
    if TRT_EP in providers:
        cache = f"{stem}.trt_cache"
        trt = {
            "device_id": dev,
            # INT8 kernels from the model's Q/DQ scales (explicit quantization; no calibration table)
            "trt_int8_enable": "True",
            "trt_fp16_enable": str(config.resolved_precision(target) == "fp16"),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": "True",
            # the EP names the timing-cache file itself: --timing-cache is its folder here
            "trt_timing_cache_path": str(config.timing_cache) if config.timing_cache else cache,
        }
        if config.workspace_gb:
            trt["trt_max_workspace_size"] = str(int(config.workspace_gb * (1 << 30)))
        if config.shapes:  # otherwise the EP derives profiles from the shapes it sees
            trt.update(ort_profile_options(resolve_profiles(inputs, config.shapes, config.default_batch,
                                                            config.default_dim)))
        opts[TRT_EP] = trt
    for provider, extra in config.provider_options.items():
        opts.setdefault(provider, {}).update({str(k): str(v) for k, v in extra.items()})
    return opts


def build_ort(source: Path, staged: Path, target: str, config: BuildConfig, model: "onnx.ModelProto",  # noqa: F821
              inputs: list[TensorSpec]) -> StagedBuild:
    """Optimize ``source`` for ``target`` into ``staged`` (a path in the staging folder)."""
    spec = build_target(target)
    level = config.opt_level or spec.opt_level
    if not spec.for_cpu and level != "basic":
        log.warning("%s: optimization level %s applies CPU-provider rewrites; the model may not run fully "
                    "on the %s provider", target, level, spec.providers[0])
    if target == "ort-cpu" and level == "all":
        log.warning("ort-cpu at level all includes the NCHWc layout, tied to this machine's CPU")
    external = f"{staged.name}.data" if uses_external_data(model) else None
    log.info("optimizing %s for %s at level %s", source, target, level)
    optimize(source, staged, level, external)
    side = {external: "external-data"} if external and (staged.parent / external).is_file() else {}
    return StagedBuild(
        providers=list(spec.providers),
        provider_options=provider_options(target, config, inputs, Path(staged.name).stem),
        side_files=side,
        build={"optimization_level": level, "optimized_with": "onnxruntime " + _ort_version()},
    )


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__
