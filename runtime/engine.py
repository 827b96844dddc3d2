"""The backend-neutral Engine contract and `Engine.load`, which picks a backend for an artifact.

Backends subclass ``Engine`` with a ``backend`` name and so register themselves; the ``runtime``
package imports every backend module, so this module never imports one (no import cycle).
"""
from __future__ import annotations

import abc
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EngineError
from .specs import TensorSpec
from .validate import validate_feeds

log = logging.getLogger(__name__)

_TENSORRT_SUFFIXES = (".engine", ".plan")
_BACKENDS: dict[str, type["Engine"]] = {}


def backend_class(name: str) -> type["Engine"]:
    """The registered ``Engine`` subclass for a backend name (``onnxruntime``, ``tensorrt``)."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise EngineError(f"unknown runtime backend {name!r}; known: {', '.join(sorted(_BACKENDS))}") from None


class Engine(abc.ABC):
    """A loaded model that runs feeds to outputs; every backend answers the same calls.

    Use ``Engine.load(path)`` to open an artifact; the backend is chosen from the file.
    """

    backend: str = "abstract"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _BACKENDS[cls.backend] = cls

    _inputs: list[TensorSpec]  # set by each backend when it loads
    _outputs: list[TensorSpec]

    @property
    def input_specs(self) -> list[TensorSpec]:
        """Names, dtypes and (symbolic) shapes of the inputs."""
        return list(self._inputs)

    @property
    def output_specs(self) -> list[TensorSpec]:
        """Names, dtypes and (symbolic) shapes of the outputs."""
        return list(self._outputs)

    @abc.abstractmethod
    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        """Run validated feeds on the backend."""

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Validate ``feeds`` against ``input_specs`` and return ``{output name: array}``."""
        checked = validate_feeds(feeds, self.input_specs)
        return self._run(checked, list(outputs) if outputs is not None else None)

    def warmup(self, feeds: Mapping[str, np.ndarray] | None = None, runs: int = 2) -> None:
        """Run a few times so first-call costs (allocation, kernel selection) are paid up front."""
        from .synthetic import synthetic_feeds

        feeds = feeds if feeds is not None else synthetic_feeds(self.input_specs)
        for _ in range(runs):
            self.run(feeds)

    def close(self) -> None:
        """Release backend resources."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def load(model: Any, providers: Sequence[str] | None = None, session_options: Any = None,
             allow_fallback: bool = False) -> "Engine":
        """Open a model or engine artifact: a file path, serialized ONNX bytes, or an onnx.ModelProto.

        The backend is picked from the file: a build manifest beside it (``<file>.manifest.json``, or the
        manifest path itself) names the target, providers and provider options and is checked against the
        file; otherwise ``.engine``/``.plan`` files go to TensorRT and everything else (``.onnx``, ``.ort``)
        to ONNX Runtime. A folder must hold exactly one build manifest (one `qdq build` output).
        Explicit ``providers`` override the manifest's.
        """
        onnxruntime = backend_class("onnxruntime")
        if isinstance(model, (str, os.PathLike)):
            from .manifest import locate, manifest_in_folder

            path = Path(model)
            if not path.exists():
                raise EngineError(f"model file not found: {path}")
            if path.is_dir():  # a `qdq build` output folder: its one manifest names the artifact
                path = manifest_in_folder(path)
            artifact, manifest, _ = locate(path)
            backend = manifest.backend if manifest else (
                "tensorrt" if artifact.suffix.lower() in _TENSORRT_SUFFIXES else "onnxruntime")
            if backend == "tensorrt":
                if providers or session_options is not None:
                    log.info("%s is a TensorRT engine: providers/session options are ignored", artifact)
                return backend_class("tensorrt")(artifact, manifest=manifest)
            provider_options = None
            if manifest is not None:
                provider_options = manifest.resolved_provider_options(artifact.parent)
                if not providers:
                    providers = list(manifest.providers)
            return onnxruntime(artifact, providers=providers, session_options=session_options,
                             provider_options=provider_options, allow_fallback=allow_fallback)
        return onnxruntime(model, providers=providers, session_options=session_options, allow_fallback=allow_fallback)
