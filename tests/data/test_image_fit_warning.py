"""Images that do not match the input (channels or size) are converted and resized, and the reader
says so once, naming a file, what changed and the input."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibration_data import open_data
from runtime.specs import TensorSpec

SPEC = TensorSpec("image", np.dtype(np.float32), ("batch", 1, 8, 8))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_mismatched_images_warn_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 12, 3), dtype=np.uint8), "RGB").save(tmp_path / f"{i}.png")
    with caplog.at_level(logging.WARNING, logger="calibration_data"):
        batches = list(open_data(str(tmp_path), [SPEC], batch_size=2))
    assert [b["image"].shape for b in batches] == [(2, 1, 8, 8), (1, 1, 8, 8)]
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "0.png" in warnings[0] and "RGB -> grayscale" in warnings[0] and "16x12 -> 8x8" in warnings[0]
    assert "image: float32[batch, 1, 8, 8]" in warnings[0]


def test_matching_images_are_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="calibration_data"):
        assert sum(len(b["image"]) for b in open_data("builtin:digits", [SPEC], batch_size=16)) > 0
    assert _warnings(caplog) == []
