"""The backend-neutral Engine contract and `Engine.load`, which picks a backend for an artifact."""
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

ModelSource = "str | os.PathLike[str] | bytes | onnx.ModelProto"


class Engine(abc.ABC):
    """A loaded model that runs feeds to outputs; every backend answers the same calls.

    Use ``Engine.load(path)`` to open an artifact; the backend is chosen from the file.
    """

    backend: str = "abstract"

    @property
    @abc.abstractmethod
    def input_specs(self) -> list[TensorSpec]:
        """Names, dtypes and (symbolic) shapes of the inputs."""

    @property
    @abc.abstractmethod
    def output_specs(self) -> list[TensorSpec]:
        """Names, dtypes and (symbolic) shapes of the outputs."""

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
    def load(model: Any, providers: Sequence[str] | None = None, session_options: Any = None) -> "Engine":
        """Open a model or engine artifact: an ONNX/ORT file path, serialized bytes, or an onnx.ModelProto."""
        from .ort import OrtEngine

        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.exists():
                raise EngineError(f"model file not found: {path}")
            if path.is_dir():
                raise EngineError(f"{path} is a folder; expected a model file (.onnx, .ort)")
        return OrtEngine(model, providers=providers, session_options=session_options)
