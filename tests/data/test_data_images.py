"""Image reader: exact digits round trip, layouts, resizing, normalization and errors."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from calibration_data import DataError, ImageReader, builtin_path, open_data
from runtime.specs import TensorSpec

F32 = np.dtype(np.float32)


def _digit_indices() -> list[int]:
    with (builtin_path("digits") / "labels.csv").open(encoding="utf-8") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["file"])  # the reader's order
    return [int(r["sklearn_index"]) for r in rows]


def test_digits_match_sklearn_exactly() -> None:
    digits = load_digits()
    idx = _digit_indices()
    spec = TensorSpec("x", F32, ("N", 1, 8, 8))
    batches = list(open_data("builtin:digits", [spec], batch_size=16))
    assert [len(b["x"]) for b in batches] == [16, 16, 16, len(idx) - 48]
    got = np.concatenate([b["x"] for b in batches])
    assert got.dtype == np.float32 and got.shape == (len(idx), 1, 8, 8)
    assert np.array_equal(got[:, 0], (digits.images[idx] / 16.0).astype(np.float32))

    flat = np.concatenate([b["x"] for b in open_data("builtin:digits", [TensorSpec("x", F32, ("N", 64))])])
    assert np.array_equal(flat, (digits.data[idx] / 16.0).astype(np.float32))
    nhw = next(open_data("builtin:digits", [TensorSpec("img", F32, (None, 8, 8))], num_samples=3))
    assert np.array_equal(nhw["img"], (digits.images[idx[:3]] / 16.0).astype(np.float32))


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """Five RGB pictures of different sizes and formats, plus a non-image file that must be ignored."""
    rng = np.random.default_rng(0)
    sizes = [(20, 30, "png"), (12, 12, "jpg"), (40, 16, "bmp"), (9, 9, "png"), (30, 30, "jpeg")]
    for i, (h, w, ext) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.{ext}")
    (tmp_path / "notes.csv").write_text("not,an,image\n")
    return tmp_path


def test_rgb_nchw_resize_and_normalize(photo_dir: Path) -> None:
    spec = TensorSpec("pixel_values", F32, ("batch", 3, 16, 24))
    batches = list(open_data(photo_dir, [spec], batch_size=2))
    assert [b["pixel_values"].shape for b in batches] == [(2, 3, 16, 24), (2, 3, 16, 24), (1, 3, 16, 24)]
    plain = np.concatenate([b["pixel_values"] for b in batches])
    assert 0.0 <= plain.min() and plain.max() <= 1.0
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    norm = np.concatenate([b["pixel_values"] for b in open_data(photo_dir, [spec], mean=mean, std=std)])
    expected = (plain - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    np.testing.assert_allclose(norm, expected, rtol=1e-6, atol=1e-6)


def test_layouts_channels_and_size_option(photo_dir: Path) -> None:
    nhwc = next(open_data(photo_dir, [TensorSpec("x", F32, ("n", "h", "w", 3))], size=(10, 12)))
    assert nhwc["x"].shape == (5, 10, 12, 3)
    gray = next(open_data(photo_dir, [TensorSpec("x", F32, ("n", 1, 8, 8))], num_samples=1))
    assert gray["x"].shape == (1, 1, 8, 8)
    forced = next(open_data(photo_dir, [TensorSpec("x", F32, ("n", "a", "b", "c"))], layout="nhwc", size=6))
    assert forced["x"].shape == (5, 6, 6, 3)
    raw = next(open_data(photo_dir / "img1.jpg", [TensorSpec("x", np.dtype(np.uint8), (1, 3, 12, 12))]))
    assert raw["x"].dtype == np.uint8 and raw["x"].max() > 1
    # no fixed size and no size option: every image is resized to the first one's size
    native = list(open_data(photo_dir, [TensorSpec("x", F32, ("n", 3, "h", "w"))], batch_size=5))
    assert native[0]["x"].shape == (5, 3, 20, 30)


def test_image_errors(photo_dir: Path, tmp_path: Path) -> None:
    spec = TensorSpec("pixel_values", F32, ("batch", 3, 16, 16))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no samples in .*empty"):
        ImageReader(empty, [spec])
    with pytest.raises(DataError, match="also needs 'mask'"):
        open_data(photo_dir, [spec, TensorSpec("mask", F32, ("batch", 16))])
    with pytest.raises(DataError, match="input 'pixel_values'.*rank 5"):
        open_data(photo_dir, [TensorSpec("pixel_values", F32, ("b", 1, 3, 16, 16))])
    with pytest.raises(DataError, match="input 'pixel_values'.*4 channels"):
        open_data(photo_dir, [TensorSpec("pixel_values", F32, ("b", 4, 16, 16))])
    with pytest.raises(DataError, match="input 'pixel_values' fixes height x width"):
        open_data(photo_dir, [spec], size=(8, 8))
    with pytest.raises(DataError, match="input 'pixel_values': mean needs 1 or 3 values"):
        open_data(photo_dir, [spec], mean=[0.1, 0.2])
    with pytest.raises(DataError, match="input 'v'.*flattened"):
        open_data(photo_dir, [TensorSpec("v", F32, ("b", 50))])
    (photo_dir / "zz_broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(DataError, match=r"cannot read image .*zz_broken\.png"):
        list(open_data(photo_dir, [spec]))
