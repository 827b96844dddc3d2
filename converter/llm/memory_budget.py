"""Fail early when an LLM step cannot fit in memory: estimate what it needs before doing any work.

    from converter.llm.memory_budget import check_memory
    check_memory("quantize-weights --algo gptq", weight_bytes=onnx_weight_bytes("lm.onnx"))

A step needs about ``factor x`` the model's float32 weight bytes plus a fixed overhead (the Python,
torch and ONNX Runtime libraries, calibration activations); the factors are the measured peak RSS over
the FP32 weights of each step on 135M-1.1B Llama models (docs/llm-scale.md), rounded up; a model under
the external-data threshold (one file) has a larger factor than one with external data. The need
is compared with the memory available now (``psutil.virtual_memory().available``), or with
``QDQ_MEMORY_LIMIT`` (bytes, or with a K/M/G suffix) when set, and a step that cannot fit raises
``MemoryBudgetError`` (one line: the need, what is available, a remedy) before anything is loaded.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConverterError

log = logging.getLogger(__name__)

LIMIT_ENV = "QDQ_MEMORY_LIMIT"
GB = 1e9
OVERHEAD = 1.0 * GB
"""Libraries (torch, ONNX Runtime, onnx-ir), tokenizer and the calibration activations, measured ~0.6-0.9 GB."""


@dataclass(frozen=True)
class StepCost:
    """Peak memory of one step: ``factor`` x float32 weight bytes + ``overhead`` bytes; ``inline_factor``
    instead for a model small enough to sit in one file (no external data): it is read and written as one
    protobuf message, which holds the weights two or three times over."""

    factor: float
    inline_factor: float
    overhead: float = OVERHEAD


STEPS = {  # peak RSS measured on 135M, 360M and 1.1B Llama models (docs/llm-scale.md), rounded up
    "export-lm": StepCost(1.2, 3.2, 2.0 * GB),
    "quantize-weights": StepCost(2.0, 2.5, 0.8 * GB),
    "quantize-w8a8": StepCost(3.2, 11.0, 1.0 * GB),
    "quantize-kv": StepCost(1.2, 3.5, 1.0 * GB),
}


class MemoryBudgetError(ConverterError):
    """A step would need more memory than is available; nothing was done."""


def _parse_bytes(raw: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)i?[bB]?\s*", raw)
    if not m:
        raise MemoryBudgetError(f"{LIMIT_ENV} must be a size in bytes (e.g. 8G or 500M), got {raw!r}")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m.group(2).lower()]
    return float(m.group(1)) * scale


def available_memory() -> tuple[float, str]:
    """(bytes this process may use, where the number comes from)."""
    raw = os.environ.get(LIMIT_ENV)
    if raw:
        return _parse_bytes(raw), LIMIT_ENV
    import psutil

    return float(psutil.virtual_memory().available), "available now"


def onnx_weight_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of an ONNX model's weights as they lie on disk: the file and its external data files beside it."""
    from ..onnx_files import data_file_name

    path = Path(path)
    if not path.is_file():
        return 0
    size = path.stat().st_size
    data = path.with_name(data_file_name(path))
    return size + (data.stat().st_size if data.is_file() else 0) + _other_data_files(path)


def _other_data_files(path: Path) -> int:
    """External data under other names (e.g. a torch export's per-tensor files), read from the file cheaply."""
    try:
        import onnx

        m = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable here: the step's own loader says why
        return 0
    from ..onnx_files import data_file_name

    names = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
    names.discard(data_file_name(path))
    return sum((path.parent / n).stat().st_size for n in names if (path.parent / n).is_file())


def hf_float32_bytes(folder: str | os.PathLike[str]) -> int:
    """Float32 bytes of a Hugging Face folder's weights (safetensors/bin sizes scaled from their dtype)."""
    folder = Path(folder)
    files = [*folder.glob("*.safetensors"), *folder.glob("*.bin")]
    size = sum(f.stat().st_size for f in files)
    try:
        dtype = json.loads((folder / "config.json").read_text()).get("torch_dtype") or "float32"
    except (OSError, ValueError):
        dtype = "float32"
    return int(size * (2 if str(dtype) in ("float16", "bfloat16") else 1))


def estimate(step: str, weight_bytes: float) -> float:
    """Bytes ``step`` needs for a model of ``weight_bytes`` float32 weights."""
    cost = STEPS[step]
    return _factor(cost, weight_bytes) * weight_bytes + cost.overhead


def _factor(cost: StepCost, weight_bytes: float) -> float:
    from ..onnx_files import external_data_threshold

    return cost.factor if weight_bytes >= external_data_threshold() else cost.inline_factor


def check_memory(step: str, weight_bytes: float, what: str = "the model") -> float:
    """Raise ``MemoryBudgetError`` if ``step`` on ``weight_bytes`` of float32 weights cannot fit; return the need."""
    need = estimate(step, weight_bytes)
    have, source = available_memory()
    log.info("qdq %s: needs about %.1f GB (%.2f GB of weights), %.1f GB %s", step, need / GB, weight_bytes / GB,
             have / GB, source)
    if need > have:
        cost = STEPS[step]
        raise MemoryBudgetError(
            f"qdq {step} needs about {need / GB:.1f} GB of memory for {what} ({weight_bytes / GB:.2f} GB of "
            f"float32 weights x {_factor(cost, weight_bytes):g} + {cost.overhead / GB:.1f} GB), but "
            f"{have / GB:.1f} GB is {'allowed by ' + LIMIT_ENV if source == LIMIT_ENV else 'available'}: "
            "stop other jobs, use a machine with more memory, or a smaller model")
    return need


__all__ = ["LIMIT_ENV", "MemoryBudgetError", "StepCost", "available_memory", "check_memory", "estimate",
           "hf_float32_bytes", "onnx_weight_bytes"]
