"""Range methods recover known ranges on synthetic distributions; INT8 parameters; config checks."""
from __future__ import annotations

import numpy as np
import pytest

from converter.calib import ranges as R
from converter.calib.config import CalibConfig, CalibConfigError
from converter.calib.observers import HistogramObserver


def _observe(x: np.ndarray, batches: int = 5, num_bins: int = 8192) -> HistogramObserver:
    obs = HistogramObserver(num_bins)
    for part in np.array_split(x, batches):
        obs.update(part)
    return obs


def _range(obs: HistogramObserver, method: str, symmetric: bool = True, **kw: float) -> tuple[float, float]:
    return R.compute_range(method, mn=obs.min, mx=obs.max, histogram=obs.histogram(), symmetric=symmetric, **kw)


def _fake_quant_mse(x: np.ndarray, lo: float, hi: float, symmetric: bool) -> float:
    scale, zp, _ = R.quant_params(lo, hi, symmetric)
    qmin, qmax = (-127, 127) if symmetric else (0, 255)
    q = np.clip(np.round(x / scale) + zp, qmin, qmax)
    return float(np.mean(((q - zp) * scale - x) ** 2))


@pytest.fixture(scope="module")
def gaussian_with_outliers() -> tuple[np.ndarray, HistogramObserver]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1_000_000).astype(np.float32)
    x[rng.choice(x.size, 20, replace=False)] = (rng.choice([-1, 1], 20) * rng.uniform(30, 50, 20)).astype(np.float32)
    return x, _observe(x)


def test_minmax_keeps_outliers(gaussian_with_outliers) -> None:
    x, obs = gaussian_with_outliers
    lo, hi = _range(obs, "minmax")
    assert hi == -lo == float(np.abs(x).max())
    lo, hi = _range(obs, "minmax", symmetric=False)
    assert (lo, hi) == (float(x.min()), float(x.max()))


def test_percentile_clips_outliers(gaussian_with_outliers) -> None:
    x, obs = gaussian_with_outliers
    _, amax = _range(obs, "percentile", percentile=99.99)
    assert amax == pytest.approx(np.quantile(np.abs(x), 0.9999), rel=0.01)
    assert 3.7 < amax < 4.2  # |N(0,1)| at 99.99 % is 3.89
    _, amax99 = _range(obs, "percentile", percentile=99.0)
    assert amax99 == pytest.approx(2.576, rel=0.02)


def test_entropy_clips_outliers(gaussian_with_outliers) -> None:
    _, obs = gaussian_with_outliers
    lo, hi = _range(obs, "entropy")
    assert lo == -hi
    assert 2.5 < hi < 8.0


def test_mse_lands_between_and_minimises_error(gaussian_with_outliers) -> None:
    x, obs = gaussian_with_outliers
    _, p = _range(obs, "percentile")
    _, m = _range(obs, "minmax")
    _, amax = _range(obs, "mse")
    assert p < amax < m
    best = min(_fake_quant_mse(x, -a, a, True) for a in np.linspace(1.0, m, 300))
    assert _fake_quant_mse(x, -amax, amax, True) <= best * 1.02


def test_asymmetric_mse_beats_minmax_on_skewed_data() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.exponential(1.0, 300_000), -rng.exponential(0.1, 100_000)]).astype(np.float32)
    obs = _observe(x)
    lo, hi = _range(obs, "mse", symmetric=False)
    assert lo < 0 < hi and hi > -lo
    assert _fake_quant_mse(x, lo, hi, False) < _fake_quant_mse(x, float(x.min()), float(x.max()), False)


def test_asymmetric_percentile_cuts_both_tails() -> None:
    x = np.random.default_rng(2).uniform(-5, 5, 400_000).astype(np.float32)
    lo, hi = _range(_observe(x), "percentile", symmetric=False, percentile=99.0)
    assert lo == pytest.approx(-4.95, abs=0.02) and hi == pytest.approx(4.95, abs=0.02)


def test_one_sided_data_and_zero_spike() -> None:
    """ReLU outputs: half exact zeros. Entropy must not collapse onto the spike; ranges include 0."""
    x = np.maximum(np.random.default_rng(3).standard_normal(400_000), 0).astype(np.float32)
    obs = _observe(x)
    for method in R.METHODS:
        lo, hi = _range(obs, method, symmetric=False)
        assert lo == 0.0 and 2.0 < hi <= float(x.max()), method
    lo, hi = _range(obs, "entropy")
    assert lo == -hi and hi > 2.0


def test_quant_params() -> None:
    assert R.quant_params(-2.0, 3.0, True) == (pytest.approx(3.0 / 127), 0, "int8")
    scale, zp, qtype = R.quant_params(-1.0, 3.0, False)
    assert qtype == "uint8" and scale == pytest.approx(4.0 / 255) and zp == 64
    assert R.quant_params(2.0, 10.0, False)[1] == 0  # range widened to include zero
    assert R.quant_params(0.0, 0.0, True) == (1.0, 0, "int8")
    assert R.quant_params(-5.0, -1.0, False)[1] == 255


def _kl_reference(counts: np.ndarray, i: int, levels: int) -> float:
    """TensorRT's KL for one threshold, written plainly (bin by bin)."""
    p = counts[:i].astype(np.float64)
    p[-1] += counts[i:].sum()
    bounds = [(k * i) // levels for k in range(levels + 1)]
    q = np.zeros(i)
    for k in range(levels):
        a, b = bounds[k], bounds[k + 1]
        nz = p[a:b] > 0
        if nz.sum():
            q[a:b] = np.where(nz, counts[a:b].sum() / nz.sum(), 0)
    keep = p > 0
    pn, qn = p[keep] / p.sum(), np.maximum(q[keep] / q.sum(), 1e-12)
    return float(np.sum(pn * np.log(pn / qn)))


def test_vectorised_kl_matches_bin_by_bin_reference() -> None:
    rng = np.random.default_rng(4)
    counts = np.histogram(np.abs(rng.standard_normal(50_000)) * 2, bins=700)[0]
    counts[rng.integers(0, 700, 15)] = 0
    candidates = np.arange(128, 701, 7)
    fast = R.kl_divergences(counts, candidates, 128)
    slow = np.array([_kl_reference(counts, int(i), 128) for i in candidates])
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)


def test_config_validation() -> None:
    with pytest.raises(CalibConfigError, match="unknown calibration method 'kl'.*minmax, percentile, mse, entropy"):
        CalibConfig(method="kl")
    with pytest.raises(CalibConfigError, match="percentile"):
        CalibConfig(method="percentile", percentile=100.5)
    with pytest.raises(CalibConfigError, match="num_bins"):
        CalibConfig(num_bins="many")  # type: ignore[arg-type]
    with pytest.raises(CalibConfigError, match="num_samples"):
        CalibConfig(num_samples=0)
    cfg = CalibConfig(method="entropy", op_types=["MatMul"])
    assert cfg.op_types == frozenset({"MatMul"}) and cfg.collects_histograms
    assert not CalibConfig().collects_histograms
