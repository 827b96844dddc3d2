"""Observers: streaming histograms equal one-shot ones, exact re-binning, non-finite handling."""
from __future__ import annotations

import numpy as np
import pytest

from converter.calib import kernels
from converter.calib.observers import (ChannelAbsMaxObserver, Histogram, HistogramObserver, MinMaxObserver,
                                       SENTINEL_ABS)
from converter.calib.table import CalibrationError


def _batches(rng: np.random.Generator) -> list[np.ndarray]:
    """Ragged batches whose range keeps growing (forces several re-binnings) and drifts off zero."""
    specs = [((3, 17), 0.01, 0.0), ((5, 4, 9), 1.0, 0.0), ((2, 33), 5.0, 3.0), ((7,), 0.1, -40.0),
             ((11, 3, 2), 1e-3, 1.0), ((4, 100), 50.0, 0.0)]
    batches = [(rng.standard_normal(shape) * s + o).astype(np.float32) for shape, s, o in specs]
    # large batches inside the final range (the compiled kernel counts them in several lanes), one of
    # them concentrated like softmax output
    batches.append((rng.standard_normal((40, 1000)) * 20).astype(np.float32))
    batches.append(np.exp(-np.abs(rng.standard_normal(30_000)) * 30).astype(np.float32))
    return batches


@pytest.fixture(params=["numpy", "numba"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the numpy kernels and again with the compiled ones."""
    if request.param == "numba":
        if not kernels.warm_up(wait=True):
            pytest.skip("numba not installed")
    else:
        monkeypatch.setattr(kernels, "_compiled", None)
    return request.param


def test_streaming_histogram_equals_one_shot_histogram(kernel: str) -> None:
    rng = np.random.default_rng(0)
    batches = _batches(rng)
    obs = HistogramObserver(num_bins=512)
    for b in batches:
        obs.update(b)
    values = np.concatenate([b.ravel() for b in batches])
    assert obs.rebins >= 2, "the test should exercise re-binning"
    expected, _ = np.histogram(values, bins=obs.edges)
    np.testing.assert_array_equal(obs.counts, expected)
    assert obs.count == values.size and obs.nonfinite == 0
    assert obs.min == float(values.min()) and obs.max == float(values.max())


def test_large_batches_with_masks_and_widening_equal_one_shot(kernel: str) -> None:
    """Batches of at least 16x the bins take the compiled blocked path: blocks with NaN, +-inf, mask
    sentinels and -0.0, a batch beyond the grid (widening) and float16 all agree with np.histogram."""
    rng = np.random.default_rng(3)
    obs = HistogramObserver(num_bins=256)
    kept = []
    for i in range(6):
        x = (rng.standard_normal(20_000 + 777 * i) * (1 + i)).astype(np.float32)
        x[rng.integers(0, x.size, 5)] = -0.0
        if i % 2:
            x[rng.integers(0, x.size, 3)] = np.nan
            x[rng.integers(0, x.size, 3)] = -np.inf
            x[rng.integers(0, x.size, 3)] = np.finfo(np.float32).min
        if i == 5:
            with np.errstate(over="ignore"):  # finfo(float32).min becomes -inf
                x = x.astype(np.float16)
        obs.update(x.reshape(4, -1) if x.size % 4 == 0 else x)
        kept.append(x[np.isfinite(x) & (np.abs(x.astype(np.float64)) < 1e30)].astype(np.float64))
    values = np.concatenate(kept)
    assert obs.rebins >= 2 and obs.nonfinite == 3 * 9
    np.testing.assert_array_equal(obs.counts, np.histogram(values, bins=obs.edges)[0])
    assert (obs.min, obs.max, obs.count) == (values.min(), values.max(), values.size)


def test_rebinning_is_exact_and_order_independent() -> None:
    """Feeding the same data in another order ends on a grid where both give the one-shot counts."""
    rng = np.random.default_rng(1)
    batches = _batches(rng)
    a, b = HistogramObserver(256), HistogramObserver(256)
    for x in batches:
        a.update(x)
    for x in reversed(batches):
        b.update(x)
    values = np.concatenate([x.ravel() for x in batches])
    for obs in (a, b):
        np.testing.assert_array_equal(obs.counts, np.histogram(values, bins=obs.edges)[0])
    assert a.histogram().total == b.histogram().total == values.size


def test_values_on_bin_edges_and_dtypes(kernel: str) -> None:
    """Exact edge values, float16 and float64 input bin like np.histogram on the same edges."""
    obs = HistogramObserver(64)
    edges_hit = np.array([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, -0.0], np.float32)
    obs.update(edges_hit)
    obs.update(np.linspace(-3, 2, 101).astype(np.float16))
    obs.update(np.array([1e-40, -1e-40, 2.5], np.float64))
    values = np.concatenate([edges_hit.astype(np.float64), np.linspace(-3, 2, 101).astype(np.float16).astype(np.float64),
                             [1e-40, -1e-40, 2.5]])
    np.testing.assert_array_equal(obs.counts, np.histogram(values, bins=obs.edges)[0])


def test_non_finite_values_are_excluded_and_counted(kernel: str) -> None:
    x = np.array([[1.0, np.nan, -2.0], [np.inf, -np.inf, 0.5], [-3.4028235e38, 3.0, -1e31]], np.float32)
    for obs in (HistogramObserver(128), MinMaxObserver()):
        obs.update(x)
        obs.update(np.full((2, 2), -np.inf, np.float32))  # a batch with nothing finite
        assert obs.nonfinite == 5 + 4
        assert obs.count == 4
        assert (obs.min, obs.max) == (-2.0, 3.0)
    h = HistogramObserver(128)
    h.update(x)
    assert h.histogram().total == 4


def test_constant_batches_then_spread() -> None:
    """A range that is a single point (e.g. an all-zero mask) is kept until real spread arrives."""
    obs = HistogramObserver(128)
    obs.update(np.zeros(10, np.float32))
    obs.update(np.zeros(5, np.float32))
    assert obs.counts is None and obs.histogram().total == 15
    obs.update(np.array([0.0, 1.0, -2.0], np.float32))
    values = np.concatenate([np.zeros(16), [1.0, -2.0]])
    np.testing.assert_array_equal(obs.counts, np.histogram(values, bins=obs.edges)[0])


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")
def test_numba_and_numpy_kernels_agree() -> None:
    assert kernels.warm_up(wait=True)
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal(50_000) * 7).astype(dtype)
        x[::97] = np.inf
        x[::101] = -3.4e38
        a, b = np.zeros(4096, np.int64), np.zeros(4096, np.int64)
        kernels.accumulate(x, -5, -2048, a, SENTINEL_ABS)
        kernels.accumulate_numpy(x, -5, -2048, b, SENTINEL_ABS)
        np.testing.assert_array_equal(a, b)
        assert kernels.minmax(x, SENTINEL_ABS) == kernels.minmax_numpy(x, SENTINEL_ABS)


def test_histogram_json_roundtrip_and_corruption() -> None:
    obs = HistogramObserver(256)
    obs.update(np.random.default_rng(3).standard_normal(10_000).astype(np.float32))
    h = obs.histogram()
    back = Histogram.from_dict(h.to_dict())
    np.testing.assert_array_equal(back.edges, h.trimmed().edges)
    np.testing.assert_array_equal(back.counts, h.trimmed().counts)
    bad = dict(h.to_dict(), counts="not base64!")
    with pytest.raises(CalibrationError, match="tensor 'act'"):
        Histogram.from_dict(bad, "act")


def test_fold_abs_is_exact() -> None:
    x = np.random.default_rng(4).standard_normal(20_000).astype(np.float32)
    obs = HistogramObserver(512)
    obs.update(x)
    folded = obs.histogram().fold_abs()
    np.testing.assert_array_equal(folded.counts, np.histogram(np.abs(x), bins=folded.edges)[0])


def test_channel_absmax_last_axis_and_conv_axis(kernel: str) -> None:
    rng = np.random.default_rng(5)
    obs = ChannelAbsMaxObserver(axis=-1, name="ln")
    a, b = rng.standard_normal((2, 7, 6)).astype(np.float32), rng.standard_normal((3, 4, 6)).astype(np.float32)
    b[0, 0, 2] = -np.inf  # excluded, not fatal
    b[1, 2, 3], b[2, 1, 3] = np.nan, np.finfo(np.float32).min
    obs.update(a)
    obs.update(b)
    with np.errstate(invalid="ignore"):
        b_clean = np.where(np.abs(b) < 1e30, b, 0)
    expected = np.maximum(np.abs(a).reshape(-1, 6).max(0), np.abs(b_clean).reshape(-1, 6).max(0))
    np.testing.assert_allclose(obs.absmax, expected)
    conv = ChannelAbsMaxObserver(axis=1, name="x")
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    conv.update(x)
    np.testing.assert_allclose(conv.absmax, np.abs(x).max(axis=(0, 2, 3)))
    with pytest.raises(CalibrationError, match="'x' changed its channel count"):
        conv.update(rng.standard_normal((2, 5, 4, 4)).astype(np.float32))


def test_channel_mean_over_batches_skips_mask_sentinels() -> None:
    obs = ChannelAbsMaxObserver(axis=1, name="x")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 3, 5, 5)).astype(np.float32) + np.array([1, -2, 3], np.float32).reshape(1, 3, 1, 1)
    b = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    obs.update(a)
    obs.update(b)
    expected = np.concatenate([a, b]).mean((0, 2, 3))
    np.testing.assert_allclose(obs.mean, expected, rtol=1e-5)
    masked = ChannelAbsMaxObserver(axis=-1, name="scores")
    masked.update(np.array([[1.0, -3.4e38], [3.0, 2.0]], np.float32))
    np.testing.assert_allclose(masked.mean, [2.0, 2.0])
