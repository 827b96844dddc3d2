"""Helpers shared by the QAT tests."""
from __future__ import annotations

import numpy as np
import torch


def forward(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Run the digits CNN on a feed dict."""
    return model(torch.from_numpy(batch["image"]))


def accuracy(model: torch.nn.Module, split: dict) -> float:
    with torch.no_grad():
        logits = model(torch.from_numpy(split["X_test"])).numpy()
    return float(np.mean(logits.argmax(-1) == split["y_test"]))
