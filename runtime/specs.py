"""Backend-neutral descriptions of a model's inputs and outputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

Dim = Union[int, str, None]
"""One dimension: a fixed size, a symbolic name (e.g. ``"batch"``), or ``None`` when unknown."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and (possibly symbolic) shape of one model input or output."""

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def is_dynamic(self, axis: int) -> bool:
        """True when ``axis`` has no fixed size."""
        return not isinstance(self.shape[axis], int)

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"
