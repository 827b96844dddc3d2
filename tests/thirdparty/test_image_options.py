"""`--image-size/--mean/--std/--scale/--layout/--resize/--channel-order`: the feeds each option produces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from converter.cli import main
from converter.cli.data_options import open_model_data
from converter.cli.image_options import ImageOptions
from calibration_data import DataError
from runtime.specs import TensorSpec


def _qdq(*args: object):  # noqa: ANN202
    return CliRunner().invoke(main, [str(a) for a in args])


def _first_batch(photos: Path, spec: TensorSpec, options: ImageOptions) -> np.ndarray:
    feeds = open_model_data(Path("unused.onnx"), [spec], str(photos), 4, 4, 128, None, image=options)
    return next(iter(feeds))[spec.name]


def _pixels(photos: Path, size: tuple[int, int]) -> np.ndarray:
    """The first 4 photos, stretched to size (h, w), uint8 NHWC."""
    files = sorted(photos.glob("*.png"))[:4]
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize(size[::-1], Image.Resampling.BILINEAR))
                     for f in files])


NCHW = TensorSpec("image", np.dtype(np.float32), ("N", 3, 32, 32))
DYNAMIC = TensorSpec("image", np.dtype(np.float32), ("N", 3, "H", "W"))


def test_mean_std_scale_and_bgr_follow_the_formula(photos: Path) -> None:
    raw = _pixels(photos, (32, 32)).astype(np.float32)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    got = _first_batch(photos, NCHW, ImageOptions(mean=mean, std=std))
    want = ((raw / 255 - np.float32(mean)) / np.float32(std)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    raw_255 = _first_batch(photos, NCHW, ImageOptions(max_value=1.0))
    np.testing.assert_array_equal(raw_255, raw.transpose(0, 3, 1, 2))
    bgr = _first_batch(photos, NCHW, ImageOptions(max_value=1.0, channel_order="BGR"))
    np.testing.assert_array_equal(bgr, raw[..., ::-1].transpose(0, 3, 1, 2))
    # BGR + mean: the mean is per channel in the model's order (B first)
    bgr_mean = _first_batch(photos, NCHW, ImageOptions(max_value=1.0, channel_order="BGR", mean=(100, 0, 0)))
    np.testing.assert_array_equal(bgr_mean[:, 0], raw[..., 2] - 100)


def test_layout_and_size(photos: Path) -> None:
    nhwc = TensorSpec("image", np.dtype(np.float32), ("N", "H", "W", 3))
    got = _first_batch(photos, nhwc, ImageOptions(size=(24, 40), layout="NHWC"))
    assert got.shape == (4, 24, 40, 3)
    np.testing.assert_allclose(got, _pixels(photos, (24, 40)) / np.float32(255), atol=1e-6)
    as_nchw = _first_batch(photos, DYNAMIC, ImageOptions(size=(24, 40)))
    np.testing.assert_array_equal(as_nchw, got.transpose(0, 3, 1, 2))


def test_keep_ratio_letterboxes_and_pads_dynamic_sizes_to_32(photos: Path) -> None:
    fixed = _first_batch(photos, NCHW, ImageOptions(resize="keep-ratio", max_value=1.0))
    # 40x56 photos fit 32x32 as 23x32 (ratio kept), top-left; the rest is zero
    want = _pixels(photos, (23, 32)).transpose(0, 3, 1, 2).astype(np.float32)
    np.testing.assert_array_equal(fixed[:, :, :23, :], want)
    assert not fixed[:, :, 23:, :].any()
    dynamic = _first_batch(photos, DYNAMIC, ImageOptions(size=(40, 50), resize="keep-ratio", mean=(0.5,)))
    assert dynamic.shape == (4, 3, 64, 64)  # 40x50 rounded up to multiples of 32
    assert not dynamic[:, :, 36:, :].any() and not dynamic[:, :, :, 50:].any()  # 40x56 fits 40x50 as 36x50
    assert (dynamic[:, :, :36, :50] != 0).mean() > 0.9


def test_dynamic_size_needs_image_size(photos: Path) -> None:
    with pytest.raises(DataError, match="--image-size"):
        _first_batch(photos, DYNAMIC, ImageOptions())


def test_cli_options_reach_the_calibrated_ranges(tmp_path: Path, photos: Path, model_file) -> None:
    """The input range `qdq calibrate` records moves as --scale/--mean/--std say."""
    import json

    model = model_file()
    ranges = {}
    for label, opts in {"default": [], "raw": ["--scale", "1"], "norm": ["--mean", "0.5", "--std", "0.25"]}.items():
        out = tmp_path / f"{label}.json"
        res = _qdq("calibrate", model, "--data", photos, "-o", out, "--no-progress", *opts)
        assert res.exit_code == 0, res.output
        ranges[label] = json.loads(out.read_text())
    def image_range(table: dict) -> tuple[float, float]:
        hist = table["tensors"]["image"]["histogram"]
        return hist["min"], hist["max"]
    lo, hi = image_range(ranges["default"])
    assert 0 <= lo and hi <= 1
    lo_raw, hi_raw = image_range(ranges["raw"])
    assert lo_raw == pytest.approx(lo * 255, abs=1e-3) and hi_raw == pytest.approx(hi * 255, abs=1e-3)
    lo_n, hi_n = image_range(ranges["norm"])
    assert lo_n == pytest.approx((lo - 0.5) / 0.25, abs=1e-4) and hi_n == pytest.approx((hi - 0.5) / 0.25, abs=1e-4)


def test_cli_rejects_image_options_for_other_data(tmp_path: Path, model_file) -> None:
    res = _qdq("quantize", model_file(), "--data", "builtin:text", "--mean", "0.5", "--channel-order", "BGR",
               "-o", tmp_path / "q.onnx")
    assert res.exit_code != 0
    assert "--mean, --channel-order apply to image data only" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "q.onnx").exists()


def test_cli_dynamic_model_names_the_option(tmp_path: Path, photos: Path, model_file) -> None:
    res = _qdq("quantize", model_file(hw=("H", "W")), "--data", photos, "-o", tmp_path / "q.onnx")
    assert res.exit_code != 0 and "pass --image-size H,W" in res.output
    res = _qdq("quantize", model_file(hw=("H", "W")), "--data", photos, "--image-size", "48,48",
               "--resize", "keep-ratio", "-o", tmp_path / "q.onnx", "--no-speed-check")
    assert res.exit_code == 0, res.output
