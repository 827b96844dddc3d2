"""SmoothQuant ``auto``: choose alpha per activation by the simulated INT8 error of its linear ops.

For each smoothing group (an activation and the MatMul/Gemm weights it feeds), every candidate
alpha (plus "no smoothing") is tried in numpy on activations captured from a few calibration
batches: the smoothed activation is fake-quantized with the per-tensor parameters the insertion
pass would use, the smoothed weights per channel, and the relative squared error of the products
against the float products is measured. The best candidate wins; smoothing that needs an inserted
``Mul`` must reduce the error by ``MIN_BENEFIT`` to pay for the extra op. Conv groups are left
unsmoothed in auto mode (their error needs a real convolution to measure).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from ..calib.table import CalibrationTable
from ..passes._utils import const_array
from ..quant.config import QuantConfig
from ..quant.scheme import WEIGHT_QMAX, activation_qparams, fake_quantize, weight_qparams
from .smoothing import smoothed_range, smoothing_scales, weight_channel_absmax

log = logging.getLogger(__name__)

__all__ = ["MAX_ROWS", "MIN_BENEFIT", "choose_alphas", "group_error"]

MIN_BENEFIT = 1e-4
"""Smallest error reduction that pays for an inserted Mul: the drop in the layer's output mean-square
error, relative to the median output mean-square of all candidate layers. A layer whose outputs are
small next to the others' (MiniLM's attention-output projection) adds little error to the residual
stream, measured end to end: smoothing it left the mean cosine unchanged while costing 6 Muls."""
MAX_ROWS = 1024


def _rows(samples: Sequence[np.ndarray], axis: int, rng: np.random.Generator, outliers: int = 0) -> np.ndarray:
    """At most MAX_ROWS rows (tokens) of the captured activations: the ``outliers`` rows with the largest
    |x| always (an LM's massive activations sit in a few tokens that a random sample misses), the rest
    drawn at random."""
    x = np.concatenate([np.moveaxis(s, axis, -1).reshape(-1, s.shape[axis]) for s in samples]).astype(np.float32)
    if len(x) <= MAX_ROWS:
        return x
    if not outliers:
        return x[rng.choice(len(x), MAX_ROWS, replace=False)]
    top = np.argsort(-np.abs(x).max(axis=1))[:outliers]
    rest = np.setdiff1d(np.arange(len(x)), top)
    return x[np.concatenate([top, rng.choice(rest, MAX_ROWS - len(top), replace=False)])]


def group_error(x: np.ndarray, weights: list[np.ndarray], s: np.ndarray | None, lo: float, hi: float,
                absmax: np.ndarray, dtype: str, refs: list[np.ndarray] | None = None,
                qmax: int = WEIGHT_QMAX) -> float:
    """Relative squared error of ``fq(x/s) @ fq(s*W)`` vs ``x @ W`` summed over the weights ([K, N]).

    The activation range is derived from the calibrated ``[lo, hi]`` as the SmoothQuant pass does.
    """

    if s is None:
        s = np.ones(x.shape[1], np.float32)
    xq = fake_quantize(x / s, activation_qparams(*smoothed_range(lo, hi, absmax, s), dtype))
    num = den = 0.0
    refs = refs if refs is not None else [x @ w for w in weights]
    for w, ref in zip(weights, refs):
        ws = w * s[:, None]
        wq = fake_quantize(ws, weight_qparams(ws, 1, qmax=qmax))
        num += float(np.square(xq @ wq - ref).sum())
        den += float(np.square(ref).sum())
    return num / max(den, 1e-30)


def _counted(items: Sequence, after_each: Callable[[], object] | None):  # noqa: ANN202
    """Yield ``items``, calling ``after_each`` once the loop body of each is done."""
    for item in items:
        yield item
        if after_each is not None:
            after_each()


def choose_alphas(groups: list, samples: dict[str, list[np.ndarray]], table: CalibrationTable,
                  config: QuantConfig, absorbable: dict[str, bool] | None = None,
                  searched: dict | None = None,
                  on_group: Callable[[], object] | None = None,
                  errors: dict[str, float] | None = None) -> dict[str, float | None]:
    """Best alpha (or None: leave unsmoothed) per group, keyed by activation name (``on_group`` is
    called after each group: a progress bar's update).

    ``absorbable[name]`` tells whether smoothing that group costs no extra op. ``searched``: a dict
    kept across calls on the same model, table and data (mixed precision quantizes many variants);
    a group's search result is reused when its activation, weights, range and candidates are the same.
    ``errors`` (filled when given): each searched group's simulated relative error at the alpha chosen.
    """

    dtype, qmax = config.resolved_activation_dtype, config.profile.weight_qmax
    chosen: dict[str, float | None] = {}
    found: dict[str, tuple] = {}  # alpha, error, unsmoothed error, output ms, error per candidate alpha
    for g in _counted(groups, on_group):
        name = g.name
        chosen[name] = None
        if g.targets[0][0].op_type == "Conv" or name not in samples or name not in table.channel_absmax:
            continue
        r = table.get(name)
        key = (name, tuple((node.name, idx, in_axis) for node, idx, in_axis in g.targets), r.lo, r.hi, dtype,
               qmax, tuple(config.auto_alphas), config.auto_outlier_rows)
        if searched is not None and key in searched:
            found[name] = searched[key]
            continue
        x = _rows(samples[name], g.channel_axis, np.random.default_rng(0), config.auto_outlier_rows)
        weights = []
        for node, idx, in_axis in g.targets:
            w = const_array(node.inputs[idx]).astype(np.float32)
            weights.append(w if in_axis == 0 else w.T)
        a = table.channel_absmax[name]
        refs = [x @ w for w in weights]
        base = group_error(x, weights, None, r.lo, r.hi, a, dtype, refs, qmax)
        best, best_err = None, base
        w_absmax = weight_channel_absmax(g)
        per_alpha = {}
        for alpha in config.auto_alphas:
            err = group_error(x, weights, smoothing_scales(a, w_absmax, alpha), r.lo, r.hi, a, dtype, refs, qmax)
            per_alpha[alpha] = err
            if err < best_err:
                best, best_err = alpha, err
        found[name] = (best, best_err, base, sum(float(np.square(ref).mean()) for ref in refs), per_alpha)
        if searched is not None:
            searched[key] = found[name]
    if found and config.smoothquant_search == "model":
        _one_alpha(found, config, chosen)
    elif found:
        typical = float(np.median([f[3] for f in found.values()])) or 1.0
        for name, (best, best_err, base, out_ms, _) in found.items():
            needs_mul = not (absorbable or {}).get(name, False)
            benefit = (base - best_err) * out_ms / typical
            if best is not None and needs_mul and benefit < MIN_BENEFIT:
                best = None
            chosen[name] = best
            log.debug("smoothquant auto %s: alpha %s error %.3g (unsmoothed %.3g, benefit %.2g)",
                      name, best, best_err, base, benefit)
    if errors is not None:
        errors.update({name: f[2] if chosen[name] is None else f[4][chosen[name]] for name, f in found.items()})
    log.info("SmoothQuant auto: smoothing %d of %d activations",
             sum(v is not None for v in chosen.values()), len(chosen))
    return chosen


def _one_alpha(found: dict[str, tuple], config: QuantConfig, chosen: dict[str, float | None]) -> dict[str, float | None]:
    """``smoothquant_search='model'``: the one alpha (or none) whose summed output error over all layers,
    each layer's relative error weighted by its output mean square, is lowest."""
    typical = float(np.median([f[3] for f in found.values()])) or 1.0
    totals = {None: sum(f[2] * f[3] / typical for f in found.values())}
    for alpha in config.auto_alphas:
        totals[alpha] = sum(f[4][alpha] * f[3] / typical for f in found.values())
    best = min(totals, key=lambda a: totals[a])
    log.info("SmoothQuant auto (one alpha for the model): alpha %s; summed error %s", best,
             ", ".join(f"{a}: {t:.4g}" for a, t in totals.items()))
    for name in found:
        chosen[name] = best
    return chosen
