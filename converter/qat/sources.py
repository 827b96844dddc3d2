"""Models QAT can start from: the built-in digits CNN, a Hugging Face causal-LM folder, or a
pickled torch module (with the FP32 ONNX export that names its inputs and outputs)."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runtime.specs import TensorSpec

from .errors import QATError

log = logging.getLogger(__name__)

DIGITS_CNN = "digits-cnn"


@dataclass
class ModelSource:
    """An FP32 torch model called as ``module(*inputs)`` in ``specs`` order, and how to feed it."""

    module: nn.Module
    specs: list[TensorSpec]
    output_names: list[str]
    is_lm: bool = False
    model_dir: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def forward(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        """Run ``model`` on a feed dict; returns the first output (logits)."""
        missing = [s.name for s in self.specs if s.name not in batch]
        if missing:
            raise QATError(f"batch lacks model input(s) {', '.join(missing)} (has {', '.join(batch)})")
        out = model(*(torch.as_tensor(np.asarray(batch[s.name])) for s in self.specs))
        return out[0] if isinstance(out, (tuple, list)) else out

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in self.specs}


class CausalLMLogits(nn.Module):
    """``(input_ids, attention_mask) -> logits`` around a Hugging Face causal LM (no KV cache)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


DIGITS_CNN_EPOCHS = 15


def load_source(model: str | os.PathLike[str], onnx_path: str | os.PathLike[str] | None = None, *,
                on_epoch: Callable[[int], object] | None = None) -> ModelSource:
    """``digits-cnn`` (trained here, seconds), a causal-LM folder, or a ``.pt`` module (needs ``onnx_path``).

    ``on_epoch`` is called after each of the ``DIGITS_CNN_EPOCHS`` training epochs of ``digits-cnn``."""
    if str(model) == DIGITS_CNN:
        return _digits_cnn(on_epoch)
    path = Path(model)
    if not path.exists():
        raise QATError(f"model not found: {path} (use '{DIGITS_CNN}', a Hugging Face causal-LM folder "
                       f"or a .pt file holding a torch module)")
    if path.is_dir():
        return _causal_lm(path)
    return _pickled_module(path, onnx_path)


def _digits_cnn(on_epoch: Callable[[int], object] | None = None) -> ModelSource:
    from ..reference_models import train_digits_cnn

    log.info("training the FP32 digits CNN")
    spec = TensorSpec("image", np.dtype(np.float32), ("batch", 1, 8, 8))
    return ModelSource(train_digits_cnn(epochs=DIGITS_CNN_EPOCHS, on_epoch=on_epoch), [spec], ["logits"])


def _causal_lm(folder: Path) -> ModelSource:
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (folder / "config.json").is_file():
        raise QATError(f"{folder} is not a Hugging Face model folder (no config.json)")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True,
                                                                  dtype=torch.float32).eval()
    except ValueError as exc:
        raise QATError(f"{folder} holds a {getattr(config, 'model_type', '?')} model, not a causal LM; QAT of "
                       f"other Hugging Face models goes through a .pt module and --onnx") from exc
    except Exception as exc:
        raise QATError(f"could not load a causal LM from {folder}: {str(exc).splitlines()[0]}") from None
    specs = [TensorSpec(n, np.dtype(np.int64), ("batch", "sequence")) for n in ("input_ids", "attention_mask")]
    from ..models import SOURCE_KEY

    return ModelSource(CausalLMLogits(model).eval(), specs, ["logits"], is_lm=True, model_dir=folder,
                       metadata={SOURCE_KEY: str(folder.resolve())})


def _pickled_module(path: Path, onnx_path: str | os.PathLike[str] | None) -> ModelSource:
    if onnx_path is None:
        raise QATError(f"{path.name}: a torch module file needs --onnx, its FP32 ONNX export, for the input "
                       f"names and shapes")
    try:
        module = torch.load(path, map_location="cpu", weights_only=False)  # a full module: pickle by design
    except Exception as exc:
        raise QATError(f"{path} is not a torch model file: {str(exc).splitlines()[0]}") from None
    if not isinstance(module, nn.Module):
        raise QATError(f"{path} holds a {type(module).__name__}, not a torch nn.Module (save the module, "
                       f"not its state_dict)")
    from runtime import Engine

    with Engine.load(onnx_path) as engine:
        specs, outputs = list(engine.input_specs), [s.name for s in engine.output_specs]
    return ModelSource(module.eval(), specs, outputs)
