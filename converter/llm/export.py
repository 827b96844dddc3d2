"""Export a Hugging Face causal LM to ONNX with its KV cache as explicit inputs and outputs.

The exported graph takes ``input_ids`` [batch, sequence], ``attention_mask`` [batch, total_sequence]
(past + new tokens), ``position_ids`` [batch, sequence] when the model uses them, and
``past_key_values.{i}.key/value`` [batch, kv_heads, past_sequence, head_dim]; it returns ``logits``
and ``present.{i}.key/value`` (the past with the new tokens appended). The prefill step feeds a past
of length 0. transformers 5 keeps the cache in ``DynamicCache`` objects, which the exporter cannot
take as inputs, so a wrapper rebuilds the cache from flat tensors and flattens it again on the way out.
"""
from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic import staging_dir

from ..errors import ExportError
from ..export import ExportResult, _first_line, check_output, export_module, output_scale
from ..memory import release_memory
from ..onnx_files import publish
from .memory_budget import check_memory, hf_float32_bytes
from ..models import BUILTIN_MODELS, SOURCE_KEY, resolve_model
from .kv_cache import CACHE_ARGUMENTS, cache_argument, returned_cache

log = logging.getLogger(__name__)

PAST_KEY = "past_key_values.{}.key"
PAST_VALUE = "past_key_values.{}.value"
PRESENT_KEY = "present.{}.key"
PRESENT_VALUE = "present.{}.value"
LAYERS_KEY = "qdq.llm.num_layers"


def load_causal_lm(model_dir: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Load a local causal-LM folder (float32 weights, offline) and its tokenizer (None if absent)."""
    import torch
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = resolve_model(model_dir)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32
        ).eval()
    except Exception as exc:
        raise ExportError(f"could not load a causal LM from {folder}: {_first_line(exc)}") from exc
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception:  # a model folder without tokenizer files still exports
        tokenizer = None
    return model, tokenizer


def _kv_cache_module(model: Any, input_names: Sequence[str], num_layers: int, cache_arg: str) -> Any:
    """The torch module the exporter sees: flat tensors in (inputs, then pasts), flat tensors out."""
    import torch
    from transformers.cache_utils import DynamicCache

    n_plain = len(input_names)

    class KVCacheLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            named = dict(zip(input_names, args[:n_plain]))
            past = args[n_plain:]
            cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(num_layers)])
            out = self.model(**named, **{cache_arg: cache}, use_cache=True, return_dict=True)
            flat: list[Any] = []
            for layer in returned_cache(out).layers:
                flat += [layer.keys, layer.values]
            return (out.logits, *flat)

    return KVCacheLM().eval()


def _cache_geometry(model: Any) -> tuple[int, list[tuple[int, int]]]:
    """Number of layers and (kv_heads, head_dim) per layer, read from one real forward pass."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.zeros((1, 2), dtype=torch.long), use_cache=True, return_dict=True)
    layers = getattr(returned_cache(out), "layers", None)
    if not layers:
        raise ExportError(f"{type(model).__name__} returned no KV cache; is it a causal LM with use_cache support?")
    return len(layers), [(int(layer.keys.shape[1]), int(layer.keys.shape[3])) for layer in layers]


def _feeds(
    input_names: Sequence[str], geometry: list[tuple[int, int]], vocab: int, batch: int, seq: int, past: int,
    seed: int, pad_left: int = 0,
) -> dict[str, np.ndarray]:
    """Random token ids with a consistent mask, positions and past of length ``past``."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, past + seq), dtype=np.int64)
    if pad_left:
        mask[-1, :pad_left] = 0
    feeds: dict[str, np.ndarray] = {"input_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64)}
    if "attention_mask" in input_names:
        feeds["attention_mask"] = mask
    if "position_ids" in input_names:
        feeds["position_ids"] = np.clip(mask.cumsum(-1) - 1, 0, None)[:, past:]
    for i, (heads, dim) in enumerate(geometry):
        for name in (PAST_KEY, PAST_VALUE):
            feeds[name.format(i)] = rng.standard_normal((batch, heads, past, dim)).astype(np.float32)
    return feeds


def export_causal_lm(
    model: Any,
    output: str | os.PathLike[str],
    *,
    opset: int | None = None,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ExportResult:
    """Export a causal LM (a local HF folder, or a loaded ``transformers`` model) with a KV cache.

    Batch, sequence and past length are dynamic. With ``check``, ONNX Runtime is compared with
    torch on a decode step (past > 0, one new token, other batch size) and on a prefill step with
    an empty past and left padding (logits and presents at attended positions); a difference past
    ``atol`` times the output's largest magnitude (+ ``rtol*|ref|``) raises ExportError and leaves
    no file. A model passed in is converted to float32 in place.
    """
    source = None
    if isinstance(model, (str, os.PathLike)):
        folder = resolve_model(model)  # a built-in name is recorded as the name: its folder is a cache
        check_memory("export-lm", hf_float32_bytes(folder), str(folder))
        source = str(model).lower() if str(model).lower() in BUILTIN_MODELS else str(folder.resolve())
        model, _ = load_causal_lm(model)
    model = model.float().eval()
    params = set(inspect.signature(model.forward).parameters)
    cache_arg = cache_argument(model)
    if "input_ids" not in params or cache_arg is None:
        raise ExportError(f"{type(model).__name__} is not a causal LM taking input_ids and a KV cache "
                          f"(a forward() argument named {' or '.join(CACHE_ARGUMENTS)})")
    input_names = ["input_ids"] + [n for n in ("attention_mask", "position_ids") if n in params]
    num_layers, geometry = _cache_geometry(model)
    vocab = int(model.config.vocab_size)
    past_names = [n.format(i) for i in range(num_layers) for n in (PAST_KEY, PAST_VALUE)]
    output_names = ["logits"] + [n.format(i) for i in range(num_layers) for n in (PRESENT_KEY, PRESENT_VALUE)]
    axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "sequence"}}
    if "attention_mask" in input_names:
        axes["attention_mask"] = {0: "batch", 1: "total_sequence"}
    if "position_ids" in input_names:
        axes["position_ids"] = {0: "batch", 1: "sequence"}
    axes.update({n: {0: "batch", 2: "past_sequence"} for n in past_names})

    wrapper = _kv_cache_module(model, input_names, num_layers, cache_arg)
    trace = _feeds(input_names, geometry, vocab, batch=2, seq=3, past=4, seed=0)
    checks = {"": _feeds(input_names, geometry, vocab, batch=3, seq=1, past=5, seed=1),
              "prefill/": _feeds(input_names, geometry, vocab, batch=2, seq=7, past=0, seed=2, pad_left=3)}
    refs = {k: _torch_outputs(wrapper, f) for k, f in checks.items()} if check else {}
    metadata = {LAYERS_KEY: str(num_layers)}
    if source:
        metadata[SOURCE_KEY] = source
    output = Path(output)
    with staging_dir(output) as tmpdir:  # external data keeps the final file name
        staged = tmpdir / output.name
        result = export_module(
            wrapper, trace, staged, metadata=metadata, output_names=output_names, dynamic_axes=axes,
            opset=opset, check=False, optimize="light",
        )
        # the torch model is no longer needed: free it before ONNX Runtime loads the file (one copy at a time)
        del wrapper, model
        release_memory()
        if check:
            log.info("checking ONNX Runtime outputs against torch")
            for prefix, feeds in checks.items():
                result.max_abs_diff.update(_check(staged, feeds, refs.pop(prefix), output_names, atol, rtol,
                                                  result.output_scale, prefix))
        publish(tmpdir, output)
        result.path = output
        log.info("exported causal LM with %d layers to %s (worst diff %.3g, %.2g of its output's scale)",
                 num_layers, output, result.worst_diff, result.worst_relative_diff)
        return result


def _torch_outputs(module: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [r.detach().float().numpy() for r in module(*(torch.as_tensor(v) for v in feeds.values()))]


def _check(path: Path, feeds: dict[str, np.ndarray], ref: list[np.ndarray], output_names: Sequence[str],
           atol: float, rtol: float, scales: dict[str, float], prefix: str) -> dict[str, float]:
    """Compare ONNX Runtime's outputs on ``feeds`` with torch's ``ref``. With left padding (a prefill), the
    padded query rows are excluded: they attend to nothing and their values are arbitrary."""
    from runtime import Engine

    with Engine.load(path) as eng:
        got = eng.run(feeds)
    padded = prefix and "attention_mask" in feeds and not feeds["attention_mask"].all()
    keep = feeds["attention_mask"].astype(bool) if padded else None
    what = "prefill output" if prefix else "output"
    diffs: dict[str, float] = {}
    for name, r_np in zip(output_names, ref):
        g = got[name]
        if g.shape != r_np.shape:
            raise ExportError(f"{what} {name!r}: ONNX shape {g.shape} differs from torch shape {r_np.shape}")
        if keep is not None:
            if name == "logits":
                r_np, g = r_np[keep], g[keep]
            else:
                r_np, g = r_np.transpose(0, 2, 1, 3)[keep], g.transpose(0, 2, 1, 3)[keep]
        diffs[prefix + name] = check_output(name, r_np, g, atol, rtol, what=what)
        scales[prefix + name] = output_scale(r_np)
    return diffs


__all__ = ["export_causal_lm", "load_causal_lm"]
