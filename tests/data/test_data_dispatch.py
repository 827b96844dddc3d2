"""open_data: picking readers, builtins, unknown sources and options."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration_data import BUILTIN_NAMES, DataError, builtin_path, open_data, reader_kind
from runtime.specs import TensorSpec

SPEC = [TensorSpec("x", np.dtype(np.float32), ("n", 1, 8, 8))]


def test_builtin_paths_exist() -> None:
    for name in BUILTIN_NAMES:
        assert builtin_path(name).exists() and builtin_path("builtin:" + name) == builtin_path(name)
    assert reader_kind(builtin_path("digits")) == "images"
    assert reader_kind(builtin_path("text")) == "text"
    with pytest.raises(DataError, match="unknown built-in data set 'builtin:nope'.*builtin:digits"):
        open_data("builtin:nope", SPEC)


def test_dispatch_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found: .*missing\.npz"):
        open_data(tmp_path / "missing.npz", SPEC)
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"unsupported data file .*table\.csv: expected .*\.txt.*\.npz"):
        open_data(tmp_path / "table.csv", SPEC)
    with pytest.raises(DataError, match=r"no samples in .*tmp.*no image"):
        open_data(tmp_path, SPEC)
    with pytest.raises(DataError, match="option.*colour not supported for images data.*max_value"):
        open_data("builtin:digits", SPEC, colour="red")
    with pytest.raises(DataError, match="batch_size must be a positive integer"):
        open_data("builtin:digits", SPEC, batch_size=0)
    with pytest.raises(DataError, match="num_samples must be a positive integer"):
        open_data("builtin:digits", SPEC, num_samples=-1)
    with pytest.raises(DataError, match="no inputs"):
        open_data("builtin:digits", [])
    np.savez(tmp_path / "mixed.npz", x=np.zeros((2, 1, 8, 8)))
    (tmp_path / "pic.png").write_bytes(b"")
    with pytest.raises(DataError, match="both images and .npz"):
        open_data(tmp_path, SPEC)


def test_errors_are_value_errors_and_raised_before_iteration(tmp_path: Path) -> None:
    assert issubclass(DataError, ValueError)
    np.savez(tmp_path / "d.npz", y=np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="input 'x' is missing"):
        open_data(tmp_path / "d.npz", SPEC)  # no next(): checked when opened
