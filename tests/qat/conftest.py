"""QAT fixtures: the digits CNN, fake-quantized W4A8 and initialised, plus its training batches."""
from __future__ import annotations

import pytest
import torch
from qat_helpers import forward


@pytest.fixture(scope="session")
def digits_batches(digits_split: dict) -> list[dict]:
    X = digits_split["X_train"]
    return [{"image": X[i:i + 32]} for i in range(0, 32 * 12, 32)]


@pytest.fixture
def qat_cnn(digits_cnn, digits_batches):
    """A fresh W4A8 fake-quantized copy of the digits CNN with data-initialised scales."""
    from converter.qat import QATConfig, initialize, quantize_model

    torch.manual_seed(0)
    model = quantize_model(digits_cnn, QATConfig(weight_bits=4, act_bits=8))
    initialize(model, batches=digits_batches, forward=forward)
    return model

