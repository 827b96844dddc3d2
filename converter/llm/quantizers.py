"""Group-wise weight quantizers: round-to-nearest and second-order (GPTQ-style) with error compensation.

Weights are handled as W [N, K] (output channels x input features, i.e. an ONNX MatMul's B
transposed); groups of ``group_size`` consecutive input features share a scale and zero point.
When the group size does not divide K, the last group is shorter: the weights are padded with
zeros to ceil(K/G) whole groups (zeros change no group's scale or zero point), as ONNX Runtime's
MatMulNBits lays them out, and the padding is dropped from the levels.
Levels are unsigned ``0 .. 2^bits - 1`` and ``w ≈ (q - zero_point) * scale``, ONNX Runtime's
MatMulNBits convention. Symmetric groups use zero point 2^(bits-1) and, like ONNX Runtime's own
quantizer, a signed scale mapping the group's largest-magnitude weight exactly to level 0.

GPTQ (Frantar et al., 2022): with H = 2XXᵀ from calibration inputs, columns are quantized left to
right and each column's rounding error is spread over the not-yet-quantized columns through the
Cholesky factor of H⁻¹, in lazy blocks of ``block_size`` columns.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .config import WeightOnlyConfig, WeightQuantError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizedWeight:
    """Integer levels and per-group parameters of one weight matrix W [N, K]."""

    q: np.ndarray  # uint8 [N, K], levels 0 .. 2^bits - 1
    scales: np.ndarray  # float32 [N, ceil(K / group_size)]
    zero_points: np.ndarray  # uint8 [N, ceil(K / group_size)]
    bits: int
    group_size: int
    symmetric: bool
    input_scale: np.ndarray | None = None  # float32 [K]: the levels are of W·diag(s); the graph must feed x / s

    @property
    def blocks(self) -> int:
        """Groups per row: ceil(K / group_size) (the last one shorter when G does not divide K)."""
        return -(-self.q.shape[1] // self.group_size)

    def padded_levels(self) -> np.ndarray:
        """Levels [N, blocks * G], the padding set to each last group's zero point (dequantizes to 0)."""
        n, k = self.q.shape
        pad = self.blocks * self.group_size - k
        if not pad:
            return self.q
        return np.concatenate([self.q, np.repeat(self.zero_points[:, -1:], pad, axis=1)], axis=1)

    def dequantize(self) -> np.ndarray:
        """W' [N, K] float32 = (q - zero_point) * scale, per group."""
        g = self.group_size
        zero = np.repeat(self.zero_points.astype(np.float32), g, axis=1)[:, : self.q.shape[1]]
        scale = np.repeat(self.scales, g, axis=1)[:, : self.q.shape[1]]
        return (self.q.astype(np.float32) - zero) * scale


CLIP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
"""Range shrink factors the clip search tries for each group (1.0 = the full min/max range)."""


def _range_params(w: torch.Tensor, bits: int, symmetric: bool, shrink: float) -> tuple[torch.Tensor, torch.Tensor]:
    maxq = 2**bits - 1
    if symmetric:
        mid = 2 ** (bits - 1)
        ext = w.gather(1, w.abs().argmax(1, keepdim=True))[:, 0] * shrink
        scale = ext / -mid
        zero = torch.full_like(scale, float(mid))
    else:
        lo = torch.clamp(w.min(1).values, max=0.0) * shrink
        hi = torch.clamp(w.max(1).values, min=0.0) * shrink
        scale = (hi - lo) / maxq
        zero = torch.zeros_like(scale)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale).float().to(w.dtype)
    if not symmetric:
        zero = torch.clamp(torch.round(-lo / scale), 0, maxq)
    return scale, zero


def group_params(w: torch.Tensor, bits: int, symmetric: bool,
                 importance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32-representable) and zero point for each row of ``w`` [rows, group].

    With ``importance`` (per weight, broadcasting against ``w``: e.g. the Hessian diagonal of the group's
    input features), each row's range is shrunk by the factor of :data:`CLIP_GRID` that gives the least
    importance-weighted squared rounding error (clipped outliers against finer steps for the rest).
    """
    scale, zero = _range_params(w, bits, symmetric, 1.0)
    if importance is None:
        return scale, zero
    maxq = 2**bits - 1
    importance = importance.to(w.dtype)

    def error(s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        q = quantize_levels(w, s[:, None], z[:, None], maxq)
        return (((q - z[:, None]) * s[:, None] - w) ** 2 * importance).sum(1)

    best = error(scale, zero)
    for shrink in CLIP_GRID[1:]:
        s, z = _range_params(w, bits, symmetric, shrink)
        err = error(s, z)
        better = err < best
        scale, zero, best = torch.where(better, s, scale), torch.where(better, z, zero), torch.minimum(err, best)
    return scale, zero


def quantize_levels(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Levels for ``w`` (any trailing shape broadcasting against scale/zero)."""
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def check_shape(w: np.ndarray, group_size: int, name: str = "weight") -> None:
    """Reject weights that are not 2-D (any K fits: a last partial group is padded)."""
    if w.ndim != 2:
        raise WeightQuantError(f"{name}: expected a 2-D weight, got shape {w.shape}")


def _pad_k(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """W [N, K] with zero columns appended up to a whole number of groups."""
    pad = -w.shape[1] % group_size
    return torch.nn.functional.pad(w, (0, pad)) if pad else w


def round_groups(w: torch.Tensor, bits: int, group_size: int, symmetric: bool,
                 importance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round W [N, K] to the nearest level of its group: levels [N, K], scales and zero points [N, blocks].

    ``importance`` [K] (the inputs' Hessian diagonal) turns on the clip search of each group's range.
    """
    n, k = w.shape
    wt = _pad_k(w, group_size)
    blocks = wt.shape[1] // group_size
    wt = wt.reshape(n * blocks, group_size)
    if importance is not None:
        importance = _pad_k(importance[None].to(w.dtype), group_size).reshape(blocks, group_size).repeat(n, 1)
    scale, zero = group_params(wt, bits, symmetric, importance)
    q = quantize_levels(wt, scale[:, None], zero[:, None], 2**bits - 1)
    return q.reshape(n, blocks * group_size)[:, :k], scale.reshape(n, blocks), zero.reshape(n, blocks)


def quantize_rtn(w: np.ndarray, config: WeightOnlyConfig, name: str = "weight",
                 hessian: torch.Tensor | None = None) -> QuantizedWeight:
    """Round each weight to the nearest level of its group (ranges clip-searched when ``config.clip`` and H [K, K])."""
    check_shape(w, config.group_size, name)
    importance = torch.diag(hessian) if config.clip and hessian is not None else None
    q, scale, zero = round_groups(torch.tensor(np.asarray(w), dtype=torch.float64), config.bits, config.group_size,
                                  config.symmetric, importance)
    return _pack_result(q, scale, zero, config)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _one_thread() -> contextlib.AbstractContextManager[None]:
    """The column sweep is thousands of small ops: one torch thread is far faster than several."""
    return torch_threads(1)


def quantize_gptq(w: np.ndarray, hessian: np.ndarray, config: WeightOnlyConfig, name: str = "weight") -> QuantizedWeight:
    """Second-order quantization of W [N, K] given H [K, K] (2XXᵀ averaged over calibration tokens)."""
    check_shape(w, config.group_size, name)
    with _one_thread():
        return _gptq(torch.as_tensor(np.asarray(w)), torch.as_tensor(np.asarray(hessian)), config, name)


def quantize_layer(w: torch.Tensor, hessian: torch.Tensor | None, config: WeightOnlyConfig,
                   name: str = "weight") -> QuantizedWeight:
    """W [N, K] by ``config.algo`` (GPTQ needs H [K, K]), then HERA's refinement when ``config.hera``."""
    if config.algo == "gptq" or config.hera or config.clip:
        if hessian is None:
            raise WeightQuantError(f"{name}: {config.algo} {'with HERA ' if config.hera else ''}needs a Hessian")
    with _one_thread():
        if config.algo == "gptq":
            qw = _gptq(w, hessian, config, name)  # type: ignore[arg-type]
        else:
            qw = quantize_rtn(w.numpy(), config, name, hessian)
        if config.hera:
            qw = hera_refine(w, hessian, qw)  # type: ignore[arg-type]
    return qw


def hera_refine(w: torch.Tensor, hessian: torch.Tensor, qw: QuantizedWeight, steps: int | None = None) -> QuantizedWeight:
    """Heuristic element replacement (HERA, as read here): greedy one-level changes that lower the output error.

    A row's output error on the calibration inputs is e H eᵀ (e = w - ŵ, H = 2XXᵀ/n). Each step, every
    row replaces the one level whose move by ±1 lowers that error most, if any does; scales and zero
    points stay fixed (so the MatMulNBits layout does not change). Stops when no row improves, or after
    ``steps`` (default K/4) steps.
    """
    n, k = qw.q.shape
    g, maxq = qw.group_size, 2**qw.bits - 1
    H = hessian.to(torch.float64)
    scale = torch.as_tensor(np.repeat(qw.scales, g, axis=1)[:, :k], dtype=torch.float64)
    zero = torch.as_tensor(np.repeat(qw.zero_points, g, axis=1)[:, :k].astype(np.float64))
    q = torch.as_tensor(qw.q.astype(np.float64))
    grad = (w.to(torch.float64) - (q - zero) * scale) @ H  # (e H): d(e H eᵀ)/de / 2
    diag = torch.diag(H)
    cost = scale**2 * diag  # a ±1 move of level j changes e H eᵀ by s_j² H_jj - 2 |s_j (e H)_j|
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    blocked_up = torch.where(q < maxq, 0.0, inf)  # +inf where the move would leave 0 .. maxq
    blocked_down = torch.where(q > 0, 0.0, inf)
    threshold = -1e-12 * diag.mean()
    rows = torch.arange(n)  # rows that may still improve: a row with no improving move never changes again
    for _ in range(steps if steps is not None else max(1, k // 4)):
        sg = grad[rows] * scale[rows]  # the level moves by sign(sg): its error e_j by -sign(sg) s_j
        gain = torch.where(sg > 0, blocked_up[rows], blocked_down[rows])
        gain.add_(cost[rows]).sub_(sg.abs_(), alpha=2)
        best_gain, best = gain.min(1)
        active = best_gain < threshold
        if not bool(active.any()):
            break
        r, j = rows[active], best[active]
        d = torch.sign(grad[r, j] * scale[r, j])
        q[r, j] += d
        blocked_up[r, j] = torch.where(q[r, j] < maxq, 0.0, inf)
        blocked_down[r, j] = torch.where(q[r, j] > 0, 0.0, inf)
        grad[r] -= (d * scale[r, j])[:, None] * H[j]
        rows = r
    return QuantizedWeight(q.numpy().astype(np.uint8), qw.scales, qw.zero_points, qw.bits, qw.group_size, qw.symmetric)


def _gptq(w: torch.Tensor, hessian: torch.Tensor, config: WeightOnlyConfig, name: str) -> QuantizedWeight:
    n, k = w.shape
    if tuple(hessian.shape) != (k, k):
        raise WeightQuantError(f"{name}: Hessian shape {tuple(hessian.shape)} does not match K={k}")
    g, maxq, bits, sym = config.group_size, 2**config.bits - 1, config.bits, config.symmetric
    W = _pad_k(w.to(torch.float64), g)
    H = hessian.to(torch.float64).clone()
    if W.shape[1] != k:  # padded columns see no input: dead, like unused features
        H = torch.nn.functional.pad(H, (0, W.shape[1] - k, 0, W.shape[1] - k))
    k_true, k = k, W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    importance = torch.diag(H).clone() if config.clip else None  # per column, in the original order

    # Group parameters: computed up front from the (unpermuted) weights when visiting columns out of
    # order, so each group keeps one scale as MatMulNBits requires; else lazily from updated weights.
    scales = torch.zeros(n, k // g, dtype=torch.float64)
    zeros = torch.zeros(n, k // g, dtype=torch.float64)
    perm = torch.arange(k)
    if config.act_order:
        for j in range(k // g):
            imp = importance[j * g:(j + 1) * g] if importance is not None else None
            scales[:, j], zeros[:, j] = group_params(W[:, j * g:(j + 1) * g], bits, sym, imp)
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]

    H += config.damp * torch.mean(torch.diag(H)) * torch.eye(k, dtype=torch.float64)
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    except RuntimeError as exc:
        raise WeightQuantError(f"{name}: Hessian is not positive definite even after damping ({exc}); "
                               "raise damp or use more calibration data") from None

    # The column sweep runs in float32 (as reference GPTQ does); only the factorization needs float64.
    # It works on Wᵀ [K, N], so that each column is one contiguous row and each error update one addr_.
    Wt, Hinv = W.T.float().contiguous(), Hinv.float()
    scales_t, zeros_t = scales.T.float().contiguous(), zeros.T.float().contiguous()  # [groups, N]
    Qt = torch.zeros_like(Wt)
    group_of = (perm // g).tolist()
    block = max(g, (config.block_size // g) * g)  # whole groups per block
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        W1, Hinv1 = Wt[i1:i2], Hinv[i1:i2, i1:i2]  # W1 is a view: updated in place
        Err1 = torch.empty_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            grp = group_of[col]
            if not config.act_order and col % g == 0:
                imp = importance[col:col + g].float() if importance is not None else None
                scales_t[grp], zeros_t[grp] = group_params(W1[i:i + g].T, bits, sym, imp)
            s, z, w_col = scales_t[grp], zeros_t[grp], W1[i]
            q = quantize_levels(w_col, s, z, maxq)
            Qt[col] = q
            err = Err1[i]
            torch.div(w_col - (q - z) * s, Hinv1[i, i], out=err)
            W1[i + 1:].addr_(Hinv1[i, i + 1:], err, alpha=-1)
        if i2 < k:
            Wt[i2:].addmm_(Hinv[i1:i2, i2:].T, Err1, alpha=-1)
    Q = Qt.T
    if config.act_order:
        Q = Q[:, torch.argsort(perm)]
    return _pack_result(Q[:, :k_true].contiguous(), scales_t.T, zeros_t.T, config)


def _pack_result(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, config: WeightOnlyConfig) -> QuantizedWeight:
    return QuantizedWeight(
        q=q.numpy().astype(np.uint8),
        scales=scale.numpy().astype(np.float32),
        zero_points=zero.numpy().astype(np.uint8),
        bits=config.bits,
        group_size=config.group_size,
        symmetric=config.symmetric,
    )


def layer_error(w: np.ndarray, w_hat: np.ndarray, x: np.ndarray) -> float:
    """Relative output error ||X Wᵀ - X Ŵᵀ||² / ||X Wᵀ||² of a linear layer on inputs X [tokens, K]."""
    ref = x @ w.T
    return float(np.sum((ref - x @ w_hat.T) ** 2) / np.sum(ref**2))
