"""Export a PyTorch module or a local Hugging Face folder to ONNX, checked against the framework.

Exporter choice: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter) is the
default. It is the exporter torch maintains (the TorchScript one is deprecated), emits clean
opset-20+ graphs with the fused ``LayerNormalization`` and ``Gelu`` ops that ONNX Runtime and
TensorRT kernels pick up, and records dynamic axes as named symbolic dims. ``exporter="legacy"``
remains for modules torch.export cannot trace; the default ``"auto"`` tries dynamo and falls back to
the legacy exporter when dynamo fails, saying so in a warning. Optimum's task-aware exporter is not used: it pins
transformers<4.58, incompatible with current model packages.
"""
from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic import move_into_place, staging_dir

from .errors import ExportError
from .models import BUILTIN_MODELS, SOURCE_KEY, resolve_model

log = logging.getLogger(__name__)

DEFAULT_OPSET = 20
"""Opset 20: LayerNormalization (17) and Gelu (20) as single ops; ORT 1.17+ and TensorRT 10 run it."""



@dataclass
class ExportResult:
    """What an export produced and how well it matched the framework."""

    path: Path
    opset: int
    input_names: list[str]
    output_names: list[str]
    seconds: float
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    external_data: bool = False
    output_scale: dict[str, float] = field(default_factory=dict)
    """Per checked output, the scale its tolerance is relative to (largest |torch value|, at least 1)."""
    exporter: str = "dynamo"
    """The exporter that produced the file (``legacy`` after an ``auto`` fallback)."""

    @property
    def worst_diff(self) -> float:
        return max(self.max_abs_diff.values(), default=0.0)

    @property
    def worst_relative_diff(self) -> float:
        """Largest max-abs-diff divided by its output's scale (what the check's ``atol`` bounds)."""
        return max((d / self.output_scale.get(k, 1.0) for k, d in self.max_abs_diff.items()), default=0.0)


def _hf_wrapper(model: Any, input_names: Sequence[str], output_names: Sequence[str]) -> Any:
    """Wrap a HF model so it takes positional tensors and returns a tuple, as exporters need."""
    import torch

    class HFWrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            out = self.model(**dict(zip(input_names, args)), return_dict=True)
            return tuple(out[k] for k in output_names)

    return HFWrapper().eval()


def export_module(
    module: Any,
    example_inputs: Mapping[str, Any],
    output: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    opset: int | None = None,
    exporter: str = "auto",
    check: bool = True,
    check_inputs: Mapping[str, Any] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    optimize: str = "full",
) -> ExportResult:
    """Export ``module`` called as ``module(*example_inputs.values())`` to ONNX at ``output``.

    ``optimize`` (dynamo exporter): ``full`` runs onnxscript's optimizer (constant folding, pattern
    rewrites, fusions); ``light`` only folds constants and removes dead or duplicate nodes and
    initializers, skipping the pattern rewriter, which costs minutes on a 30-layer LM (ONNX Runtime
    applies the same simplifications when it loads the model).

    ``dynamic_axes`` maps input name -> {axis: dim name}; by default axis 0 of every input is
    ``batch``. With ``check`` the ONNX model is run by ONNX Runtime on ``check_inputs`` (default:
    the example inputs) and compared to the module; a difference beyond ``atol*scale + rtol*|ref|``
    (scale: the output's largest magnitude, at least 1) raises ExportError and leaves no output file.
    """
    import torch

    output = Path(output)
    opset = opset or DEFAULT_OPSET
    names = list(example_inputs)
    args = tuple(torch.as_tensor(v) for v in example_inputs.values())
    dynamic_axes = dict(dynamic_axes) if dynamic_axes is not None else {n: {0: "batch"} for n in names}
    module = module.eval()
    with torch.no_grad():
        ref = module(*args)
    ref_tuple = ref if isinstance(ref, (tuple, list)) else (ref,)
    output_names = list(output_names) if output_names else [f"output_{i}" for i in range(len(ref_tuple))]
    if len(output_names) != len(ref_tuple):
        raise ExportError(f"{len(output_names)} output names given but the module returns {len(ref_tuple)} outputs")

    t0 = time.perf_counter()
    with staging_dir(output) as tmpdir:
        try:
            staged = tmpdir / output.name
            used = "dynamo" if exporter == "auto" else exporter
            log.info("exporting %s with the %s exporter (opset %d)", type(module).__name__, used, opset)
            try:
                _run_exporter(module, args, names, output_names, dynamic_axes, opset, used, staged, optimize,
                              metadata or {})
            except ExportError:
                raise
            except Exception as exc:
                if exporter != "auto":
                    raise
                log.warning("the dynamo exporter failed on %s (%s); falling back to the legacy TorchScript "
                            "exporter", type(module).__name__, _first_line(exc))
                used = "legacy"
                staged.unlink(missing_ok=True)
                try:
                    _run_exporter(module, args, names, output_names, dynamic_axes, opset, used, staged, optimize,
                                  metadata or {})
                except Exception as legacy_exc:
                    raise ExportError(f"export of {type(module).__name__} failed with both exporters: dynamo: "
                                      f"{_first_line(exc)}; legacy: {_first_line(legacy_exc)}") from legacy_exc
            external = _ensure_size_limits(staged)
            result = ExportResult(staged, opset, names, output_names, 0.0, external_data=external, exporter=used)
            if check:
                log.info("checking ONNX Runtime outputs against torch")
                check_feeds = check_inputs if check_inputs is not None else example_inputs
                result.max_abs_diff = compare_with_torch(module, staged, check_feeds, output_names, atol, rtol,
                                                         scales=result.output_scale)
            move_into_place(tmpdir, output)
            result.path = output
            result.seconds = time.perf_counter() - t0
            log.info("exported %s in %.1fs", output, result.seconds)
            return result
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"export of {type(module).__name__} failed: {_first_line(exc)}") from exc


def _run_exporter(
    module: Any,
    args: tuple[Any, ...],
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int,
    exporter: str,
    path: Path,
    optimize: str = "full",
    metadata: Mapping[str, str] | None = None,
) -> None:
    import torch

    if optimize not in ("full", "light"):
        raise ExportError(f"unknown optimize level {optimize!r}; choose 'full' or 'light'")
    if not log.isEnabledFor(logging.DEBUG):  # torch logs optional-op registration misses at WARNING
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dims: dict[str, Any] = {}
            dynamic_shapes = []
            for name in input_names:
                axes = dynamic_axes.get(name, {})
                dynamic_shapes.append({a: dims.setdefault(d, torch.export.Dim(d)) for a, d in axes.items()} or None)
            shapes: tuple[Any, ...] = tuple(dynamic_shapes)
            if _takes_varargs(module):
                shapes = (shapes,)
            program = torch.onnx.export(
                module,
                args,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=shapes,
                opset_version=opset,
                dynamo=True,
                verbose=False,
                optimize=optimize == "full",
            )
            if optimize == "light":
                t0 = time.perf_counter()
                _light_optimize(program.model)
                log.info("light graph optimization in %.1fs", time.perf_counter() - t0)
            program.model.metadata_props.update({k: str(v) for k, v in (metadata or {}).items()})
            program.save(str(path))
        elif exporter == "legacy":
            axes = {k: dict(v) for k, v in dynamic_axes.items()}
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
            if metadata:
                _add_metadata(path, metadata)
        else:
            raise ExportError(f"unknown exporter {exporter!r}; choose 'auto', 'dynamo' or 'legacy'")


def _light_optimize(model: Any) -> None:
    """Fold constants (weights become plain initializers) and drop dead, duplicate and unused parts, in place."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import fold_constants

    common.InlinePass()(model)
    fold_constants(model)
    ir.passes.Sequential(
        common.RemoveUnusedNodesPass(),
        common.RemoveUnusedFunctionsPass(),
        common.RemoveUnusedOpsetsPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.NameFixPass(),
    )(model)


def _add_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """Record key/value metadata (e.g. the source model folder) in the ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save_model(model, str(path))


def _ensure_size_limits(path: Path) -> bool:
    """Move weights to an external data file (``converter.onnx_files``) when the model nears protobuf's 2 GiB
    limit (or ``QDQ_EXTERNAL_DATA_THRESHOLD``); True if the weights are external. A file the exporter already
    wrote with external data is left as it is (reading it back would hold a second copy of the weights)."""
    import onnx

    from .onnx_files import data_file_name, external_data_threshold

    files = list(path.parent.iterdir())
    if len(files) > 1:
        return True
    if path.stat().st_size < external_data_threshold():
        return False
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_file_name(path), size_threshold=1024)
    return True


def output_scale(ref: np.ndarray) -> float:
    """An output's scale for the export check: its largest magnitude, at least 1."""
    return max(1.0, float(np.abs(ref).max())) if ref.size else 1.0


def check_output(name: str, ref: np.ndarray, got: np.ndarray, atol: float, rtol: float, what: str = "output") -> float:
    """Max |got - ref|; raise ExportError past ``atol * scale + rtol * |ref|`` (scale: ``output_scale(ref)``).

    Float32 rounding grows with the values a network carries (a 30-layer LM's logits reach tens), so
    the absolute part of the tolerance is relative to the output's largest magnitude: a healthy deep
    export passes, while a graph that computes something else (a 1% drift) still fails.
    """
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(got64 - ref64)
    worst = float(diff.max()) if diff.size else 0.0
    scale = output_scale(ref64)
    if np.any(diff > atol * scale + rtol * np.abs(ref64)):
        raise ExportError(
            f"{what} {name!r} differs from torch by up to {worst:.3g} ({worst / scale:.2g} of its largest magnitude "
            f"{scale:.3g}; tolerance {atol:g}*{scale:.3g} + {rtol:g}*|ref|)"
        )
    return worst


def compare_with_torch(
    module: Any,
    onnx_path: Path,
    inputs: Mapping[str, Any],
    output_names: Sequence[str],
    atol: float = 1e-4,
    rtol: float = 1e-3,
    scales: dict[str, float] | None = None,
) -> dict[str, float]:
    """Run torch and ONNX Runtime on ``inputs``; return max |diff| per output, raise past tolerance
    (see ``check_output``). ``scales``, if given, receives each output's scale."""
    import torch

    from runtime import Engine

    args = tuple(torch.as_tensor(v) for v in inputs.values())
    with torch.no_grad():
        ref = module(*args)
    ref_tuple = ref if isinstance(ref, (tuple, list)) else (ref,)
    feeds = {k: np.asarray(torch.as_tensor(v).numpy()) for k, v in inputs.items()}
    with Engine.load(onnx_path) as eng:
        got = eng.run(feeds)
    diffs: dict[str, float] = {}
    for name, r in zip(output_names, ref_tuple):
        r_np = r.detach().float().numpy() if r.is_floating_point() else r.numpy()
        g = got[name]
        if g.shape != r_np.shape:
            raise ExportError(f"output {name!r}: ONNX shape {g.shape} differs from torch shape {r_np.shape}")
        diffs[name] = check_output(name, r_np, g, atol, rtol)
        if scales is not None:
            scales[name] = output_scale(r_np)
    return diffs


def export_hf(
    model_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    opset: int | None = None,
    exporter: str = "auto",
    check: bool = True,
    atol: float = 1e-4,
) -> ExportResult:
    """Export a local Hugging Face text model folder (or a built-in name) with dynamic batch and sequence.

    The architecture comes from the folder's config (``architectures``), the inputs from its
    tokenizer. Loads offline: nothing is downloaded.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = resolve_model(model_dir)
    model, tokenizer = load_hf(folder)
    from calibration_data.text import is_placeholder

    if is_placeholder(tokenizer):  # exports (the inputs come from the config), but text data will need one
        log.warning("%s has no tokenizer files (tokenizer.json, vocab.txt, ...): calibrating on text will need "
                    "--tokenizer FOLDER, a folder holding the model's tokenizer", folder)
    input_names = [n for n in tokenizer.model_input_names if n in _forward_params(model)]
    trace = _sample_batch(tokenizer, input_names, ["A short sentence.", "A somewhat longer second sentence for tracing shapes."])
    check_batch = _sample_batch(
        tokenizer,
        input_names,
        ["Checking the export on other shapes.", "Three sentences this time", "so the batch axis really is dynamic, and lengths differ."],
    )
    with __import__("torch").no_grad():
        sample = model(**{k: __import__("torch").as_tensor(v) for k, v in trace.items()}, return_dict=True)
    output_names = [k for k, v in sample.items() if hasattr(v, "shape")]
    wrapper = _hf_wrapper(model, input_names, output_names)
    axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
    source = str(model_dir) if str(model_dir).lower() in BUILTIN_MODELS else str(folder.resolve())
    return export_module(
        wrapper, trace, output, metadata={SOURCE_KEY: source}, output_names=output_names, dynamic_axes=axes, opset=opset,
        exporter=exporter, check=check, check_inputs=check_batch, atol=atol,
    )


def load_hf(folder: Path) -> tuple[Any, Any]:
    """Load model (by its config's architecture, falling back to AutoModel) and tokenizer, offline."""
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        arch = (config.architectures or [None])[0]
        cls = getattr(transformers, arch, None) if arch else None
        cls = cls or transformers.AutoModel
        model = cls.from_pretrained(folder, local_files_only=True).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise ExportError(f"could not load the Hugging Face model in {folder}: {_first_line(exc)}") from exc
    return model, tokenizer


def _forward_params(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def _sample_batch(tokenizer: Any, names: Sequence[str], texts: list[str]) -> dict[str, np.ndarray]:
    enc = tokenizer(texts, padding=True, return_tensors="np")
    return {n: enc[n].astype(np.int64) for n in names}


def _takes_varargs(module: Any) -> bool:
    import inspect

    return any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters.values())


def _first_line(exc: BaseException) -> str:
    """The informative line of an exception (torch.export puts it under 'Exception summary')."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("## Exception summary") and i + 1 < len(lines):
            return lines[i + 1]
    return lines[0] if lines else type(exc).__name__
