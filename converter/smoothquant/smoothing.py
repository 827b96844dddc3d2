"""SmoothQuant: move activation outliers into the weights before quantization.

For an activation X feeding linear ops with weights W (input channel j), with per-channel maxima
a_j = max|X_j| (from the calibration table) and w_j = max|W_j|, the smoothing factor is
``s_j = a_j**alpha / w_j**(1 - alpha)``. X is divided by s and every W multiplied by s along
its input-channel axis, so ``(X / s) @ (s * W) == X @ W`` in exact arithmetic. 1/s is folded into
the producer of X when possible (LayerNormalization gamma/beta, a constant Mul, an Add bias plus
the MatMul/Gemm/Conv before it, through ReLU/MaxPool), otherwise a ``Mul(X, 1/s)`` is inserted
in front of the smoothed ops only.

The calibration table is updated for the tensors whose values changed: their per-channel maxima
become a/s and their ranges are bounded channel by channel (``smoothed_range``); re-calibrating
the smoothed model is tighter, and ``converter.quantize`` does so when it has calibration data.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult
from onnx_ir.passes.common import TopologicalSortPass

from ..calib.ranges import quant_params
from ..calib.table import CalibrationError, CalibrationTable
from ..quant.config import QuantConfig
from ..quant.rules import rule_for
from ..passes._utils import (
    run_passes,
    add_initializer,
    const_array,
    is_float32,
    replace_initializer_for,
    shape_of,
    unique_name,
    used_names,
)

log = logging.getLogger(__name__)

__all__ = ["SmoothGroup", "SmoothQuantPass", "can_absorb", "find_groups", "smoothed_range", "smoothing_scales",
           "weight_channel_absmax"]

_EPS = 1e-5
_S_MIN, _S_MAX = 1e-4, 1e4
_PASS_THROUGH = frozenset({"Relu", "MaxPool", "Identity"})  # f(x / s) == f(x) / s for s > 0, per channel


@dataclass
class SmoothGroup:
    """An activation and the linear ops (node, weight input index, weight input-channel axis) it feeds."""

    activation: ir.Value
    targets: list[tuple[ir.Node, int, int]]
    channel_axis: int  # axis of the activation that meets the weights' input channels

    @property
    def name(self) -> str:
        return self.activation.name or ""


def find_groups(model: ir.Model, config: QuantConfig) -> list[SmoothGroup]:
    """Activations whose consumers include quantizable linear ops with constant weights."""
    groups: dict[int, SmoothGroup] = {}
    for node in model.graph:
        rule = rule_for(node.op_type, node.domain)
        if rule is None or rule.weight is None or node.op_type not in config.op_types:
            continue
        if config.is_excluded(node.name or "", node.op_type) or len(node.inputs) <= rule.weight:
            continue
        x, w = node.inputs[rule.activations[0]], node.inputs[rule.weight]
        w_arr = const_array(w)
        in_axis = rule.weight_in_axis(node)
        act_axis = rule.act_channel_axis(node)
        if w_arr is None or w_arr.ndim < 2 or in_axis is None or act_axis is None:
            continue
        if not is_float32(x) or const_array(x) is not None:
            continue
        if x.shape is not None and act_axis < 0:
            act_axis = act_axis % len(x.shape) if len(x.shape) else act_axis
        g = groups.get(id(x))
        if g is None:
            groups[id(x)] = SmoothGroup(x, [(node, rule.weight, in_axis % w_arr.ndim)], act_axis)
        elif g.channel_axis == act_axis:
            g.targets.append((node, rule.weight, in_axis % w_arr.ndim))
    return list(groups.values())


def can_absorb(model: ir.Model, group: SmoothGroup) -> bool:
    """True when smoothing ``group`` folds into its producer (no Mul needs inserting)."""
    a = group.activation
    channels = weight_channel_absmax(group).size
    return _Absorber(model.graph).plan(a, group.channel_axis, channels, len(group.targets)) is not None


def weight_channel_absmax(group: SmoothGroup) -> np.ndarray:
    """max |W| per input channel over all weights of the group."""
    maxima = []
    for node, idx, in_axis in group.targets:
        w = np.abs(const_array(node.inputs[idx]).astype(np.float32))
        maxima.append(np.moveaxis(w, in_axis, 0).reshape(w.shape[in_axis], -1).max(axis=1))
    return np.max(np.stack(maxima), axis=0)


def smoothing_scales(act_absmax: np.ndarray, w_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """``s = a**alpha / w**(1-alpha)`` per channel, 1 where either side is zero, clipped to a sane range."""
    a = np.asarray(act_absmax, np.float64)
    w = np.asarray(w_absmax, np.float64)
    ok = (a > 0) & (w > 0)
    s = np.ones_like(a)
    s[ok] = np.power(np.maximum(a[ok], _EPS), alpha) / np.power(np.maximum(w[ok], _EPS), 1.0 - alpha)
    return np.clip(s, _S_MIN, _S_MAX).astype(np.float32)


def _bshape(channels: int, axis: int, rank: int | None) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector along ``axis`` of a tensor of ``rank``."""
    if axis < 0 or rank is None:
        return (channels,) if axis == -1 or (rank is not None and axis == rank - 1) else (channels, 1, 1)
    return (channels,) + (1,) * (rank - axis - 1)


def _scale_along(arr: np.ndarray, factor: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * arr.ndim
    shape[axis] = -1
    return (arr.astype(np.float32) * factor.reshape(shape)).astype(arr.dtype)


class _Absorber:
    """Plans folding a per-channel factor into the producer chain of a value (all-or-nothing)."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph

    def plan(self, value: ir.Value, axis: int, channels: int, allowed_uses: int) -> list[tuple] | None:
        if value.is_graph_output() or value.is_graph_input() or len(value.uses()) != allowed_uses:
            return None
        node = value.producer()
        if node is None or node.domain != "":
            return None
        rank = len(value.shape) if value.shape is not None else None
        last = axis == -1 or (rank is not None and axis == rank - 1)
        op, ins = node.op_type, list(node.inputs)
        if op == "LayerNormalization" and last and node.attributes.get_int("axis", -1) in (-1, (rank or 0) - 1):
            if all(const_array(i) is not None for i in ins[1:] if i is not None):
                return [("vec", node, i, -1) for i in range(1, len(ins)) if ins[i] is not None]
            return None
        if op in ("Mul", "Add") and len(ins) == 2:
            const_idx = [i for i in (0, 1) if const_array(ins[i]) is not None]
            if not const_idx and op == "Mul" and last:
                # x * y / s == x * (y / s): fold into whichever factor's producer takes it (SwiGLU: the up projection)
                for i in (1, 0):
                    if ins[i] is not ins[1 - i] and ins[i].shape == value.shape:
                        upstream = self.plan(ins[i], axis, channels, 1)
                        if upstream is not None:
                            return upstream
                return None
            if len(const_idx) != 1 or not self._broadcasts(const_array(ins[const_idx[0]]), axis, rank, channels):
                return None
            c = const_idx[0]
            if op == "Mul":
                return [("bcast", node, c, axis, rank)]
            upstream = self.plan(ins[1 - c], axis, channels, 1)
            return None if upstream is None else [("bcast", node, c, axis, rank)] + upstream
        if op in _PASS_THROUGH:
            return self.plan(ins[0], axis, channels, 1)
        if op == "MatMul" and last:
            w = const_array(ins[1])
            ok = w is not None and w.ndim == 2 and w.shape[-1] == channels
            return [("mat", node, 1, w.ndim - 1)] if ok else None
        if op == "Gemm" and last:
            w = const_array(ins[1])
            if w is None or node.attributes.get_int("transA", 0):
                return None
            steps = [("mat", node, 1, 0 if node.attributes.get_int("transB", 0) else 1)]
            if len(ins) > 2 and ins[2] is not None:
                if not self._broadcasts(const_array(ins[2]), -1, 2, channels):
                    return None
                steps.append(("bcast", node, 2, -1, 2))
            return steps
        if op == "Conv" and axis == 1 and const_array(ins[1]) is not None:
            steps = [("mat", node, 1, 0)]
            if len(ins) > 2 and ins[2] is not None:
                steps.append(("vec", node, 2, 0))
            return steps
        return None

    @staticmethod
    def _broadcasts(c: np.ndarray | None, axis: int, rank: int | None, channels: int) -> bool:
        if c is None or c.dtype.kind != "f":
            return False
        if c.size == 1:
            return True
        if rank is None or c.ndim > rank:
            return axis == -1 and c.ndim == 1 and c.shape[0] == channels
        ax = axis % rank - (rank - c.ndim)
        if ax < 0:
            return False
        return c.shape[ax] == channels and c.size == channels

    def apply(self, steps: list[tuple], factor: np.ndarray, taken: set[str]) -> None:
        for step in steps:
            kind, node, idx = step[0], step[1], step[2]
            arr = const_array(node.inputs[idx])
            if kind in ("vec", "mat"):
                new = _scale_along(arr, factor, step[3])
            else:
                _, _, _, axis, rank = step
                if arr.size == 1:
                    shape = _bshape(factor.size, axis, rank)
                    new = (np.full(shape, arr.reshape(-1)[0], np.float32) * factor.reshape(shape)).astype(arr.dtype)
                else:
                    new = (arr.astype(np.float32) * factor.reshape(arr.shape)).astype(arr.dtype)
            replace_initializer_for(node, idx, self.graph, new, taken)


class SmoothQuantPass(InPlacePass):
    """Apply SmoothQuant with one alpha, or one per activation (``{name: alpha or None}``).

    ``table`` is updated in place for the tensors whose values the pass changes; pass a copy.
    """

    def __init__(self, table: CalibrationTable, alpha: float | Mapping[str, float | None],
                 config: QuantConfig) -> None:
        super().__init__()
        self.table = table
        self.alpha = alpha
        self.config = config
        self.smoothed: dict[str, np.ndarray] = {}

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        groups = find_groups(model, self.config)
        if groups and not self.table.channel_absmax:
            raise CalibrationError(
                "SmoothQuant needs per-channel activation maxima, but the calibration table has none; "
                "re-run `qdq calibrate` (it records channel_absmax for MatMul/Gemm/Conv inputs)"
            )
        taken = used_names(graph)
        absorber = _Absorber(graph)
        for g in groups:
            alpha = self.alpha.get(g.name) if isinstance(self.alpha, Mapping) else self.alpha
            if alpha is None:
                continue
            a = self.table.channel_absmax.get(g.name)
            if a is None:
                log.warning("SmoothQuant: no channel maxima for '%s'; left unsmoothed", g.name)
                continue
            w = weight_channel_absmax(g)
            if w.size < 2:
                continue  # one channel: per-tensor quantization already fits it
            if a.shape != w.shape:
                raise CalibrationError(
                    f"channel maxima of '{g.name}' have {a.size} channels but its weights have {w.size}; "
                    "the calibration table belongs to another model"
                )
            s = smoothing_scales(a, w, float(alpha))
            self._smooth(graph, g, s, absorber, taken)
        log.info("SmoothQuant smoothed %d of %d activations", len(self.smoothed), len(groups))
        return PassResult(model, modified=bool(self.smoothed))

    def _smooth(self, graph: ir.Graph, g: SmoothGroup, s: np.ndarray, absorber: _Absorber, taken: set[str]) -> None:
        x = g.activation
        inv = (1.0 / s).astype(np.float32)
        for node, idx, in_axis in g.targets:
            replace_initializer_for(node, idx, graph, _scale_along(const_array(node.inputs[idx]), s, in_axis), taken)
        steps = absorber.plan(x, g.channel_axis, s.size, allowed_uses=len(g.targets))
        if steps is not None:
            absorber.apply(steps, inv, taken)
            smoothed = x
            touched = [x] + [st[1].outputs[0] for st in steps]
        else:
            rank = len(x.shape) if x.shape is not None else None
            shape = _bshape(s.size, g.channel_axis, rank)
            factor = add_initializer(graph, f"{g.name}_smooth_scale", inv.reshape(shape), taken)
            smoothed = ir.Value(name=unique_name(graph, f"{g.name}_smoothed", taken), shape=shape_of(x), type=x.type)
            mul = ir.Node("", "Mul", [x, factor], outputs=[smoothed], name=f"{g.name}_SmoothQuant_Mul")
            graph.append(mul)
            for node, _, _ in g.targets:
                for i, inp in enumerate(node.inputs):
                    if inp is x:
                        node.replace_input_with(i, smoothed)
            touched = [smoothed]
        self._update_table(g.name, smoothed.name, [t.name for t in touched], s)
        self.smoothed[g.name] = s

    def _update_table(self, src: str, dst: str, names: list[str], s: np.ndarray) -> None:
        a = self.table.channel_absmax[src]
        self.table.channel_absmax[dst] = (a / s).astype(np.float32)
        if src in self.table.channel_mean:  # the smoothed tensor is x / s: so is its mean
            self.table.channel_mean[dst] = (self.table.channel_mean[src] / s).astype(np.float32)
        for name in dict.fromkeys(names):
            base = self.table.tensors.get(name)
            if base is None and name == dst:
                base = self.table.tensors.get(src)
            if base is None:
                continue
            lo, hi = smoothed_range(base.lo, base.hi, a, s)
            self.table.tensors[name] = dataclasses.replace(
                base, name=name, lo=lo, hi=hi, scale=quant_params(lo, hi, symmetric=True)[0],
                histogram=None, method=f"{base.method}+smoothquant")


def smooth(model: ir.Model, table: CalibrationTable, config: QuantConfig,
           alphas: float | Mapping[str, float | None] | None) -> tuple[ir.Model, CalibrationTable]:
    """Apply SmoothQuant (no-op when ``alphas`` is None); returns the model and an updated copy of ``table``."""
    table = table.copy()
    if alphas is None:
        return model, table
    return run_passes([SmoothQuantPass(table, alphas, config), TopologicalSortPass()], model), table


def smoothed_range(lo: float, hi: float, absmax: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """A range for ``x / s`` from x's range and per-channel maxima: channel j lies within
    ``[max(lo, -a_j), min(hi, a_j)] / s_j``."""
    a = np.asarray(absmax, np.float64)
    lo_j = np.maximum(lo, -a) / s
    hi_j = np.minimum(hi, a) / s
    return min(float(lo_j.min()), 0.0), max(float(hi_j.max()), 0.0)
