"""Static INT8 quantization of an ONNX model: SmoothQuant + QDQ, tuned for the target backend.

    from converter.quantize import quantize_file
    quantize_file("model.onnx", "model.int8.onnx", table=CalibrationTable.load("calib.json"))
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx_ir as ir

from .calib.table import CalibrationError, CalibrationTable

if TYPE_CHECKING:
    from .calib.config import CalibConfig
from .errors import ModelFileError
from . import pipeline
from .passes.qdq_placement import needed_tensors
from .prepare import needs_preparation, prepare_proto
from .prepare.control_flow import report_subgraphs
from .quant.config import QuantConfig
from .quant.errors import QuantizationError
from .quant.exclude import check_exclusions, node_names_and_ops
from .smoothquant import auto as smoothquant
from .targets import profile_metadata

log = logging.getLogger(__name__)



def _load_ir(model: str | os.PathLike[str] | onnx.ModelProto | ir.Model) -> ir.Model:
    """The model as onnx-ir, prepared for qdq when another exporter wrote it (``converter.prepare``)."""
    label = "model"
    if isinstance(model, onnx.ModelProto):
        model = ir.from_proto(model)
    if not isinstance(model, ir.Model):
        label = str(model)
        model = _read_ir(model)
    if not needs_preparation(model):
        return model  # used (and changed) as is
    return ir.from_proto(prepare_proto(ir.to_proto(model), label))


def _read_ir(model: str | os.PathLike[str]) -> ir.Model:
    path = Path(model)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        model = ir.load(path)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelFileError(f"{path} is not a readable ONNX model: {exc}") from None
    try:  # weights in external files come into memory: the output is written elsewhere
        return ir.external_data.load_to_model(model)
    except OSError as exc:
        raise ModelFileError(f"cannot read the external weights of {path}: {exc}") from None


_CALIB_KEYS = ("method", "percentile", "num_bins", "num_quantized_bins", "sentinel_abs")


def _calibrate(model: ir.Model, data: list[dict[str, np.ndarray]], tensors: list[str],
               config: QuantConfig, like: CalibrationTable | None = None,
               calib_config: "CalibConfig | None" = None, progress: bool = False) -> CalibrationTable:
    """Calibrate ``tensors`` of the float ``model`` on ``data`` with ``converter.calibrate``.

    Settings come from ``calib_config``, else from the metadata of ``like`` (so re-calibration
    after SmoothQuant uses the table's method), with the symmetry the target needs.
    """
    from .calib.config import CalibConfig
    from .calibrate import calibrate

    symmetric = config.resolved_activation_dtype == "int8"
    if calib_config is None:
        saved = (like.meta.get("config") or {}) if like is not None else {}
        calib_config = CalibConfig(**{k: saved[k] for k in _CALIB_KEYS if saved.get(k) is not None})
    calib_config = dataclasses.replace(calib_config, symmetric=symmetric)
    from .onnx_files import disk_copy, runs_from_disk

    if runs_from_disk(model):  # a large model: no proto + bytes copies of its weights
        with disk_copy(model) as path:
            return calibrate(path, data, calib_config, tensors=tensors, progress=progress)
    return calibrate(ir.to_proto(model), data, calib_config, tensors=tensors, progress=progress)


def quantize(model: str | os.PathLike[str] | onnx.ModelProto | ir.Model, table: CalibrationTable | None,
             config: QuantConfig | None = None, *,
             calib_data: Iterable[dict[str, np.ndarray]] | None = None,
             calib_config: "CalibConfig | None" = None,
             smoothquant_cache: dict | None = None, progress: bool = False) -> onnx.ModelProto:
    """Return the static INT8 (QDQ) version of a float ONNX model.

    ``table``: calibrated ranges of the float model (``qdq calibrate``); None to calibrate here on
    ``calib_data``. ``calib_data`` (feed dicts) is also used by ``smoothquant='auto'`` and, after
    smoothing, to re-measure the ranges of the smoothed tensors; ``calib_config`` sets the method
    when calibrating here. ``smoothquant_cache``: an empty dict shared by calls that quantize the
    same model with the same table and data under different exclusions (mixed precision): the
    activations ``smoothquant='auto'`` captures, its per-group searches and the layer statistics of GPTQ weight
    rounding are reused. ``progress``:
    tqdm bars on stderr for calibration and SmoothQuant auto's capture and search.
    Raises ``CalibrationError`` when the table lacks a tensor the model quantizes,
    ``QuantizationError`` for bad settings, ``ModelFileError`` for unreadable models.
    """
    config = config or QuantConfig()
    data = list(calib_data) if calib_data is not None else None
    if table is None and not data:
        raise QuantizationError("quantize needs a calibration table or calibration data (--calib or --data)")
    if table is not None and not isinstance(table, CalibrationTable):
        raise CalibrationError(f"expected a CalibrationTable, got {type(table).__name__}")
    if table is not None:
        table.validate()  # an edited NaN or inverted range fails for every target, not only where it is used as is
    m = _load_ir(model)
    named = node_names_and_ops(m) if config.exclude_nodes or config.exclude_op_types or config.exclude_patterns else []
    m = pipeline.preprocess(m, config)
    if named:  # names as the user sees them (qdq inspect), and as placement sees them after the cleanups
        check_exclusions(config, named + node_names_and_ops(m))
    needed = needed_tensors(m, config)
    report_subgraphs(m, bool(needed))
    if not needed:
        raise QuantizationError(
            f"nothing to quantize: no {'/'.join(config.op_types)} with a float activation and a constant "
            "weight (after exclusions)")
    if table is None:
        table = _calibrate(m, data, needed, config, calib_config=calib_config, progress=progress)
    elif needed and not any(n in table.tensors for n in needed):
        raise CalibrationError(
            f"the calibration table has none of the {len(needed)} tensors this model quantizes "
            f"(e.g. '{needed[0]}'); it was made for another model"
        )
    table = _match_symmetry(table, config)
    m, table, config = smoothquant.apply(m, table, config, data, _calibrate, smoothquant_cache, progress)
    if config.range_search == "output" and data:
        table = _search_ranges(m, table, config, data, progress, smoothquant_cache)
    hessians = (_weight_hessians(m, config, data, progress, smoothquant_cache)
                if config.weight_rounding == "gptq" and data else None)
    m = pipeline.insert_qdq(m, table, config, hessians)
    proto = ir.to_proto(m)
    proto.producer_name = proto.producer_name or "qdq"
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                        **profile_metadata(config.profile)})
    return proto


def _weight_hessians(m: ir.Model, config: QuantConfig, data: list[dict[str, np.ndarray]],
                     progress: bool = False, cache: dict | None = None) -> dict[str, np.ndarray]:
    """Input statistics E[x xᵀ] of the Conv/Gemm layers placement quantizes, for GPTQ weight rounding
    (``cache``: shared by calls on the same model and data, e.g. mixed precision's many exclusion lists)."""
    from .passes.qdq_placement import META_KEY, QDQPlacementPass, plan_of
    from .progress import bar
    from .quant.weight_rounding import collect_hessians, layer_inputs

    QDQPlacementPass(config)(m)
    marked = [n for n in m.graph if n.op_type in ("Conv", "Gemm") and (p := plan_of(n)) is not None
              and p.weight is not None and p.weight[0] == 1]
    for node in m.graph:
        node.meta.pop(META_KEY, None)
    layers = layer_inputs(m, marked)
    known = {} if cache is None else cache.setdefault(("hessians", config.rounding_batches), {})
    missing = {name: layer for name, layer in layers.items() if (name, layer[0]) not in known}
    if missing:
        batches = data[: config.rounding_batches]
        with bar(progress, len(batches), "weight rounding: layer statistics", unit="batch") as shown:
            found = collect_hessians(m, missing, batches, on_batch=lambda: shown.update(1))
        known.update({(name, missing[name][0]): found.get(name) for name in missing})
    return {name: known[(name, layer[0])] for name, layer in layers.items() if known[(name, layer[0])] is not None}


def _search_ranges(m: ir.Model, table: CalibrationTable, config: QuantConfig, data: list[dict[str, np.ndarray]],
                   progress: bool = False, cache: dict | None = None) -> CalibrationTable:
    """``table`` with the activation ranges the output-error search picks (``calib.range_search``;
    ``cache``: shared by calls on the same model, table and data). Only Conv feature maps are searched
    (measured on CNNs); transformer MatMul inputs keep their calibrated ranges."""
    from .progress import bar
    from .calib.range_search import apply_ranges, on_conv, search_ranges

    names = [n for n in needed_tensors(m, config) if n in table.tensors and on_conv(m, n)]
    known = {} if cache is None else cache.setdefault(("ranges", config.range_batches), {})
    missing = [n for n in names if (n, table.tensors[n].lo, table.tensors[n].hi) not in known]
    if missing:
        batches = data[: config.range_batches]
        with bar(progress, len(batches), "range search", unit="batch") as shown:
            found = search_ranges(m, table, missing, batches, on_batch=lambda: shown.update(1))
        known.update({(n, table.tensors[n].lo, table.tensors[n].hi): found.get(n) for n in missing})
    ranges = {n: known[(n, table.tensors[n].lo, table.tensors[n].hi)] for n in names}
    ranges = {n: r for n, r in ranges.items() if r is not None}
    log.info("range search: %d of %d activation ranges narrowed by their consumers' output error", len(ranges), len(names))
    return apply_ranges(table, ranges)


def _match_symmetry(table: CalibrationTable, config: QuantConfig) -> CalibrationTable:
    """Re-derive ranges with the symmetry the target's activation type needs (uint8: asymmetric),
    from the statistics the table keeps; unchanged when it cannot."""
    symmetric = config.resolved_activation_dtype == "int8"
    if all(r.symmetric == symmetric for r in table.tensors.values()):
        return table
    try:
        from .calib.build import recompute

        fresh = recompute(table, symmetric=symmetric)
    except (ImportError, CalibrationError, TypeError, ValueError) as exc:
        log.warning("calibration table is %s; using its ranges as they are (%s)",
                    "asymmetric" if symmetric else "symmetric", exc)
        return table
    log.info("re-derived %s activation ranges from the table's statistics",
             "symmetric" if symmetric else "asymmetric")
    return fresh


def quantize_file(input: str | os.PathLike[str], output: str | os.PathLike[str],
                  table: CalibrationTable | str | os.PathLike[str] | None = None,
                  config: QuantConfig | None = None, *,
                  calib_data: Iterable[dict[str, np.ndarray]] | None = None,
                  calib_config: "CalibConfig | None" = None, progress: bool = False) -> Path:
    """Quantize ``input`` and save the result to ``output`` atomically; returns the output path."""
    if table is not None and not isinstance(table, CalibrationTable):
        table = CalibrationTable.load(table)
    proto = quantize(input, table, config, calib_data=calib_data, calib_config=calib_config, progress=progress)
    return save_model(proto, output)


def save_model(proto: onnx.ModelProto, output: str | os.PathLike[str]) -> Path:
    """Write a model atomically (staged, then renamed), its weights in ``<output>.data`` when they near 2 GiB
    (``converter.onnx_files``); models ONNX Runtime cannot load are refused (``UnloadableModelError``: checked
    on the staged file, nothing is written)."""
    from .onnx_files import write_onnx

    out = write_onnx(proto, output)
    log.info("saved %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out
