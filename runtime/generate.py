"""Greedy decoding with an exported KV-cache causal LM: prefill once, then one token per step.

The model must take ``input_ids`` and ``past_key_values.{i}.key/value`` (plus optional
``attention_mask`` / ``position_ids``) and return ``logits`` and ``present.{i}.key/value``, the
layout ``converter.llm.export`` produces. An int8 cache (``converter.llm.kv_int8``) adds
``past_key_values.{i}.key_scale`` inputs and ``present.{i}.key_scale`` outputs, fed back the same way.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from .engine import Engine
from .errors import InputError

log = logging.getLogger(__name__)

_PAST = re.compile(r"^past_key_values\.(\d+)\.((?:key|value)(?:_scale)?)$")


@dataclass(frozen=True)
class _Layout:
    """Which inputs the model takes and how its presents map back to pasts."""

    pasts: list[tuple[str, str]]  # (past input, present output)
    past_shapes: dict[str, tuple[int, int]]  # past input -> (kv_heads, head_dim)
    past_dtypes: dict[str, np.dtype]
    has_mask: bool
    has_positions: bool


def _layout(engine: Engine) -> _Layout:
    inputs = {s.name: s for s in engine.input_specs}
    outputs = {s.name for s in engine.output_specs}
    if "input_ids" not in inputs or "logits" not in outputs:
        raise InputError("generate needs a causal LM with an 'input_ids' input and a 'logits' output")
    pasts, shapes = [], {}
    for name, spec in inputs.items():
        match = _PAST.match(name)
        if not match:
            continue
        present = f"present.{match.group(1)}.{match.group(2)}"
        if present not in outputs:
            raise InputError(f"input {name!r} has no matching output {present!r}")
        heads, dim = spec.shape[1], spec.shape[3]
        if not isinstance(heads, int) or not isinstance(dim, int):
            raise InputError(f"input {name!r} needs fixed head count and head size, got {spec.describe()}")
        pasts.append((name, present))
        shapes[name] = (heads, dim)
    if not pasts:
        raise InputError("the model has no past_key_values.{i}.key/value inputs; export it with a KV cache")
    pasts.sort(key=lambda p: (int(_PAST.match(p[0]).group(1)), p[0]))  # type: ignore[union-attr]
    dtypes = {past: np.dtype(inputs[past].dtype) for past, _ in pasts}
    return _Layout(pasts, shapes, dtypes, "attention_mask" in inputs, "position_ids" in inputs)


def generate(
    engine: Engine,
    input_ids: np.ndarray,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    attention_mask: np.ndarray | None = None,
    pad_token_id: int | None = None,
) -> np.ndarray:
    """Greedy-decode up to ``max_new_tokens`` after ``input_ids`` [batch, prompt]; return prompt + new tokens.

    ``attention_mask`` marks left padding (1 = real token). After a row emits ``eos_token_id`` it is
    filled with ``pad_token_id`` (default: the eos id), as Hugging Face does; decoding stops once
    every row has finished.
    """
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"input_ids must be a non-empty [batch, sequence] integer array, got shape {ids.shape}")
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    layout = _layout(engine)
    ids = ids.astype(np.int64)
    batch, prompt = ids.shape
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
    if mask.shape != ids.shape:
        raise InputError(f"attention_mask shape {mask.shape} differs from input_ids shape {ids.shape}")

    feeds: dict[str, np.ndarray] = {
        past: np.zeros((batch, layout.past_shapes[past][0], 0, layout.past_shapes[past][1]), layout.past_dtypes[past])
        for past, _ in layout.pasts
    }
    step_ids, tokens = ids, [ids]
    positions = np.clip(mask.cumsum(-1) - 1, 0, None)
    finished = np.zeros(batch, dtype=bool)
    wanted = ["logits"] + [present for _, present in layout.pasts]
    for step in range(max_new_tokens):
        feeds["input_ids"] = step_ids
        if layout.has_mask:
            feeds["attention_mask"] = mask
        if layout.has_positions:
            feeds["position_ids"] = positions
        out = engine.run(feeds, wanted)
        nxt = out["logits"][:, -1, :].argmax(-1).astype(np.int64)
        if eos_token_id is not None:
            nxt = np.where(finished, eos_token_id if pad_token_id is None else pad_token_id, nxt)
            finished |= nxt == eos_token_id
        tokens.append(nxt[:, None])
        for past, present in layout.pasts:
            feeds[past] = out[present]
        step_ids = nxt[:, None]
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
        positions = positions[:, -1:] + 1
        if eos_token_id is not None and finished.all():
            log.debug("all rows reached eos after %d steps", step + 1)
            break
    return np.concatenate(tokens, axis=1)


__all__ = ["generate"]
