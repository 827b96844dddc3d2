"""The KV-cache argument and output field of a ``transformers`` causal LM, before and after 5.24.

transformers 5.24 renamed the cache argument of ``forward()`` from ``past_key_values`` to ``cache``
(the old name survives behind a deprecation shim until 5.40) and model outputs carry ``.cache``.
Everything in qdq that calls a causal LM with a cache asks here, so both releases work.
"""
from __future__ import annotations

import inspect
from typing import Any

CACHE_ARGUMENTS = ("cache", "past_key_values")  # newest first


def cache_argument(model: Any) -> str | None:
    """The name under which ``model.forward`` takes its KV cache, or None if it takes none."""
    params = inspect.signature(model.forward).parameters
    return next((name for name in CACHE_ARGUMENTS if name in params), None)


def returned_cache(output: Any) -> Any:
    """The KV cache a forward pass returned (``output.cache`` or ``output.past_key_values``), or None."""
    for name in CACHE_ARGUMENTS:
        # a ModelOutput is a dict: read keys, not attributes, so deprecated aliases stay quiet
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    return None


__all__ = ["CACHE_ARGUMENTS", "cache_argument", "returned_cache"]
