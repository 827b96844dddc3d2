"""Calibration fixtures: small real data sets and one MiniLM calibration shared by several tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def minilm_batches(minilm_onnx: Path, minilm_dir: Path) -> list[dict[str, np.ndarray]]:
    """Three batches of 4 built-in sentences, padded per batch (ragged sequence lengths)."""
    from calibration_data import open_data
    from runtime import Engine

    with Engine.load(minilm_onnx) as eng:
        specs = eng.input_specs
    return list(open_data("builtin:text", specs, batch_size=4, num_samples=12, model_dir=minilm_dir))


@pytest.fixture(scope="session")
def minilm_table(minilm_onnx: Path, minilm_batches: list[dict[str, np.ndarray]]):
    """MiniLM calibrated with histograms (percentile) on the three batches, every float activation."""
    from converter.calibrate import CalibConfig, calibrate

    return calibrate(minilm_onnx, minilm_batches, CalibConfig(method="percentile", scope="all"), progress=False)


@pytest.fixture(scope="session")
def digits_batches(digits_split: dict) -> list[dict[str, np.ndarray]]:
    """The digits test images in batches of 32 (the last one ragged)."""
    x = digits_split["X_test"][:100]
    return [{"image": x[i:i + 32]} for i in range(0, 100, 32)]
