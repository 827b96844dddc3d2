"""ort-edge: ONNX Runtime's ORT format (``.ort``) for ONNX Runtime Mobile and minimal builds.

Uses ONNX Runtime's own converter (``onnxruntime.tools.convert_onnx_models_to_ort``, fixed optimization
style), which also writes the reduced-operators config that a minimal build takes through
``--include_ops_by_config``; it is saved as ``<artifact stem>.required_operators.config`` beside the
``.ort`` file. The default level is the converter's (``all`` minus the x86-only NCHWc layout), so the
file runs on ARM and x86 alike; ``edge_platform="arm"`` allows int8 QDQ kernels meant for ARM.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from .config import BuildConfig, BuildError
from .staging import StagedBuild

log = logging.getLogger(__name__)

_LEVEL_ENV = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"


@contextlib.contextmanager
def _level_env(level: str | None) -> Iterator[None]:
    """The converter reads its optimization level from an environment variable only."""
    if level is None:
        yield
        return
    old = os.environ.get(_LEVEL_ENV)
    os.environ[_LEVEL_ENV] = level
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_LEVEL_ENV, None)
        else:
            os.environ[_LEVEL_ENV] = old


def build_edge(source: Path, staged: Path, config: BuildConfig) -> StagedBuild:
    """Convert ``source`` to ORT format as ``staged`` plus its reduced-operators config beside it."""
    if source.suffix.lower() != ".onnx" or source.name.lower().endswith(".optimized.onnx"):
        raise BuildError(f"ort-edge converts .onnx files (not *.optimized.onnx); rename {source.name}")
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # the tool logs at DEBUG by default
    work = staged.parent / "ort-format"
    printed = io.StringIO()
    try:
        with _level_env(config.opt_level), contextlib.redirect_stdout(printed):
            convert_onnx_models_to_ort(source, output_dir=work, optimization_styles=[OptimizationStyle.Fixed],
                                       target_platform=config.edge_platform,
                                       enable_type_reduction=config.type_reduction)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(f"ONNX Runtime could not convert {source} to ORT format: {first}") from exc
    finally:
        log.debug("ORT-format converter: %s", printed.getvalue().strip())
    ort_files = sorted(work.glob("*.ort"))
    configs = sorted(work.glob("*.config"))
    if len(ort_files) != 1 or len(configs) != 1:
        raise BuildError(f"ORT-format conversion of {source} produced {[p.name for p in work.iterdir()]}, "
                         "expected one .ort and one .config file")
    ort_files[0].replace(staged)
    # "<source stem>.required_operators[_and_types].config" -> "<artifact stem>.required_..."
    config_name = Path(staged.name).stem + configs[0].name[len(source.stem):]
    lines = configs[0].read_text(encoding="utf-8").splitlines()
    # the header lists the models it came from by their (temporary) path: name the artifact instead
    lines = [f"# - {staged.name}" if ln.startswith("# - ") else ln for ln in lines]
    (staged.parent / config_name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    level = config.opt_level or os.environ.get(_LEVEL_ENV, "all")
    return StagedBuild(
        providers=["CPUExecutionProvider"],
        provider_options={k: dict(v) for k, v in config.provider_options.items()},
        side_files={config_name: "reduced-ops-config"},
        build={"optimization_level": level, "edge_platform": config.edge_platform or "portable",
               "type_reduction": config.type_reduction, "required_operators": config_name},
    )
