"""Tensor reader: .npz/.npy round trips (memory-mapped where possible) and validation errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration_data import DataError, TensorReader, open_data
from calibration_data.npz import npz_arrays
from runtime.specs import TensorSpec

SPECS = [TensorSpec("x", np.dtype(np.float32), ("batch", 4)),
         TensorSpec("ids", np.dtype(np.int64), ("batch", "seq"))]


def _data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 4)), "ids": rng.integers(0, 100, (n, 6), dtype=np.int32)}


def _cat(batches: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    return np.concatenate([b[name] for b in batches])


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_round_trip(tmp_path: Path, save) -> None:
    data = _data(19)
    save(tmp_path / "calib.npz", **data)
    batches = list(open_data(tmp_path / "calib.npz", SPECS, batch_size=8))
    assert [len(b["x"]) for b in batches] == [8, 8, 3]
    for b in batches:
        assert b["x"].dtype == np.float32 and b["ids"].dtype == np.int64 and type(b["x"]) is np.ndarray
    np.testing.assert_array_equal(_cat(batches, "x"), data["x"].astype(np.float32))
    np.testing.assert_array_equal(_cat(batches, "ids"), data["ids"])
    assert len(list(open_data(tmp_path / "calib.npz", SPECS, batch_size=8, num_samples=10))) == 2


def test_uncompressed_npz_is_memory_mapped(tmp_path: Path) -> None:
    data = {"a": np.arange(24.0).reshape(6, 4), "f": np.asfortranarray(np.arange(12).reshape(3, 4))}
    np.savez(tmp_path / "m.npz", **data)
    arrays = npz_arrays(tmp_path / "m.npz")
    assert all(isinstance(a, np.memmap) for a in arrays.values())
    for name, arr in data.items():
        np.testing.assert_array_equal(arrays[name], arr)


def test_npy_and_npz_folder(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((7, 2, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    spec = TensorSpec("inp", np.dtype(np.float32), ("n", 2, 3))
    np.testing.assert_array_equal(_cat(list(open_data(tmp_path / "x.npy", [spec], batch_size=3)), "inp"), x)

    folder = tmp_path / "shards"
    folder.mkdir()
    parts = [_data(n, seed) for seed, n in enumerate([5, 0, 6, 2])]
    for i, part in enumerate(parts):
        np.savez(folder / f"part{i}.npz", **part)
    batches = list(open_data(folder, SPECS, batch_size=4))
    assert [len(b["x"]) for b in batches] == [4, 4, 4, 1]
    np.testing.assert_array_equal(_cat(batches, "x"), np.concatenate([p["x"] for p in parts]).astype(np.float32))
    np.testing.assert_array_equal(_cat(batches, "ids"), np.concatenate([p["ids"] for p in parts]))


def test_fixed_batch_axis_overrides_batch_size(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", **_data(5))
    specs = [TensorSpec(s.name, s.dtype, (2, *s.shape[1:])) for s in SPECS]
    batches = list(open_data(tmp_path / "d.npz", specs, batch_size=8))
    assert [len(b["x"]) for b in batches] == [2, 2], "short last batch is dropped for a fixed batch axis"
    with pytest.raises(DataError, match="fewer than the batch of 2"):
        open_data(tmp_path / "d.npz", specs, num_samples=1)


@pytest.mark.parametrize(("arrays", "pattern"), [
    ({"x": np.zeros((3, 4))}, r"input 'ids' is missing from .*bad\.npz"),
    ({**_data(3), "extra": np.zeros(3)}, r"array 'extra' in .*bad\.npz is not an input"),
    ({"x": np.zeros((3, 4)), "ids": np.zeros((3, 6))}, r"input 'ids': .*float64.*int64"),
    ({"x": np.zeros((3, 4, 1)), "ids": np.zeros((3, 6), np.int64)}, r"input 'x': expected rank 2 .* rank 3"),
    ({"x": np.zeros((3, 5)), "ids": np.zeros((3, 6), np.int64)}, r"input 'x': axis 1 must be 4 .* has 5"),
    ({"x": np.zeros((3, 4)), "ids": np.zeros((2, 6), np.int64)}, r"different sample counts"),
    ({"x": np.zeros((0, 4)), "ids": np.zeros((0, 6), np.int64)}, r"no samples in .*bad\.npz"),
])
def test_npz_validation_errors(tmp_path: Path, arrays: dict[str, np.ndarray], pattern: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=pattern):
        TensorReader(tmp_path / "bad.npz", SPECS)


def test_tensor_file_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros((3, 4)))
    with pytest.raises(DataError, match=r"one\.npy holds one array, but the model has 2 inputs \('x', 'ids'\)"):
        open_data(tmp_path / "one.npy", SPECS)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"cannot read .*junk\.npz"):
        open_data(tmp_path / "junk.npz", SPECS)
