"""The default exporter falls back to the legacy TorchScript exporter when torch.export cannot trace a module."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from converter.errors import ExportError
from converter.export import export_module
from runtime import Engine


class _DataDependent(torch.nn.Module):
    """Python control flow on a tensor's value: torch.export refuses it, TorchScript tracing records the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.lin(x)
        return -self.lin(x)


def test_auto_falls_back_to_legacy_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    module = _DataDependent()
    x = np.abs(np.random.default_rng(0).standard_normal((2, 4))).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="converter.export"):
        result = export_module(module, {"x": x}, tmp_path / "m.onnx")
    assert result.exporter == "legacy"
    assert any("falling back to the legacy" in r.getMessage() for r in caplog.records)
    with Engine.load(result.path) as eng:
        np.testing.assert_allclose(eng.run({"x": x})["output_0"], module(torch.as_tensor(x)).detach().numpy(),
                                   atol=1e-5)


def test_explicit_dynamo_does_not_fall_back(tmp_path: Path) -> None:
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ExportError, match="export of _DataDependent failed"):
        export_module(_DataDependent(), {"x": x}, tmp_path / "m.onnx", exporter="dynamo")
    assert not list(tmp_path.iterdir())
