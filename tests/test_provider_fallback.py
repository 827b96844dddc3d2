"""ONNX Runtime falls back silently when a provider's libraries are missing: qdq says so instead."""
from __future__ import annotations

import logging

import pytest

from runtime import Engine
from runtime.errors import BackendUnavailableError
from runtime.ort import check_first_provider


def test_fallback_from_the_requested_provider_is_an_error_naming_what_to_install() -> None:
    requested = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    with pytest.raises(BackendUnavailableError, match=r"fell back to CUDAExecutionProvider.*qdq\[tensorrt\].*--allow-fallback"):
        check_first_provider(requested, ["CUDAExecutionProvider", "CPUExecutionProvider"], "m.onnx")
    with pytest.raises(BackendUnavailableError, match="CUDA 13"):
        check_first_provider(["CUDAExecutionProvider"], ["CPUExecutionProvider"], "m.onnx")


def test_allow_fallback_warns_and_a_matching_provider_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_first_provider(["CUDAExecutionProvider"], ["CPUExecutionProvider"], "m.onnx", allow_fallback=True)
        check_first_provider(["CPUExecutionProvider"], ["CPUExecutionProvider"], "m.onnx")
    assert len(caplog.records) == 1 and "fell back to CPUExecutionProvider" in caplog.records[0].getMessage()


def test_a_real_session_on_the_cpu_provider_loads(digits_cnn_onnx) -> None:
    with Engine.load(digits_cnn_onnx, providers=["cpu"]) as eng:  # the check runs on every ORT session
        assert eng.session.get_providers()[0] == "CPUExecutionProvider"
