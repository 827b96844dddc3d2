"""QDQ insertion: turn placement marks into QuantizeLinear/DequantizeLinear nodes.

Weights are stored quantized (int8 initializers, symmetric, per output channel) behind a
DequantizeLinear; activations get ``QuantizeLinear -> DequantizeLinear`` with per-tensor
parameters from the calibration table; Conv biases are stored as int32 with
scale = input scale x weight scale so integer kernels can add them exactly (a channel whose weights are
~0 gets a larger weight scale so that its bias fits), after bias correction: ``(W - W_q) . E[x]`` with
E[x] per input channel from the table's ``channel_mean``.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from ..calib.table import CalibrationError, CalibrationTable, TensorRange
from ..quant.config import QuantConfig
from ..quant.errors import QuantizationError
from ..quant.rules import SCALE_SHARING_OPS, is_depthwise
from ..quant.scheme import (
    QParams,
    activation_qparams,
    bias_qparams,
    bias_scale_floor,
    dequantize,
    quantize,
    weight_qparams,
)
from ..quant.weight_rounding import gptq_round
from ._utils import add_initializer, const_array, shape_of, unique_name, used_names
from .qdq_placement import NodePlan, plan_of, quantized_output

log = logging.getLogger(__name__)

MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear
_DQ_FLAG = "qdq.dequantized"


def lookup_range(table: CalibrationTable, value: ir.Value) -> TensorRange | None:
    """The calibrated range of ``value``; for outputs of scale-sharing ops (Reshape, Transpose,
    MaxPool...) missing from the table, the range of the nearest calibrated input upstream; for outputs of
    monotone maps of one calibrated input (``_derived_range``), that input's range mapped."""
    v: ir.Value | None = value
    while v is not None:
        if _range_preserving(v.producer()):
            v = v.producer().inputs[0]
            continue
        if v.name in table.tensors:
            return table.tensors[v.name]
        producer = v.producer()
        if producer is None or not producer.inputs or producer.inputs[0] is None:
            return None
        if producer.op_type not in SCALE_SHARING_OPS:
            return _derived_range(table, producer, v)
        v = producer.inputs[0]
    return None


def _range_preserving(node: ir.Node | None) -> bool:
    """A nearest Resize: its output values are its input's, and ONNX Runtime runs it on uint8 only when
    the Q after it has the scale and zero point of the DQ before it (drop-Q/DQ selector). Linear and cubic
    modes keep their own calibrated range: ORT 1.32 runs them in float between DQ and Q even with shared
    parameters (checked on its optimized graph)."""
    if node is None or node.op_type != "Resize" or node.domain not in ("", "ai.onnx") or not node.inputs:
        return False
    mode = node.attributes.get("mode")
    return node.inputs[0] is not None and (mode is None or mode.as_string() == "nearest")


def _derived_range(table: CalibrationTable, node: ir.Node, out: ir.Value) -> TensorRange | None:
    """The range of ``out`` from its input's when ``node`` maps values monotonically per channel: Clip with
    constant bounds, and a 1x1 depthwise Conv without padding (``w_c * x + b_c``: the HardSigmoid gates of
    ``passes.hard_activations``, which calibration on the original model never saw)."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("Clip", "Conv"):
        return None
    src = lookup_range(table, node.inputs[0])
    if src is None:
        return None
    lo, hi = np.float64(src.lo), np.float64(src.hi)
    if node.op_type == "Clip":
        bounds = [-np.inf, np.inf]
        for k in (1, 2):
            if k < len(node.inputs) and node.inputs[k] is not None:
                bound = const_array(node.inputs[k])
                if bound is None:
                    return None  # a computed bound
                bounds[k - 1] = float(bound)
        lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
    else:
        w = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        group = node.attributes.get_int("group", 1)
        pads = node.attributes.get_ints("pads", ())
        if (w is None or w.ndim != 4 or w.shape[1:] != (1, 1, 1) or w.shape[0] != group or any(pads)
                or node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID")):
            return None
        bias = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else 0.0
        if len(node.inputs) > 2 and node.inputs[2] is not None and bias is None:
            return None
        w = w.reshape(-1).astype(np.float64)
        ends = np.stack([w * lo, w * hi]) + np.asarray(bias, np.float64)
        lo, hi = ends.min(), ends.max()
    return dataclasses.replace(src, name=out.name or src.name, lo=float(lo), hi=float(hi), histogram=None)


def _float_source(value: ir.Value | None) -> ir.Value | None:
    """The float tensor behind ``DequantizeLinear(QuantizeLinear(x))`` inserted here (``x``), else ``value``."""
    if value is None or not value.meta.get(_DQ_FLAG):
        return value
    dq = value.producer()
    q = dq.inputs[0].producer() if dq is not None and dq.inputs else None
    if q is None or q.op_type != "QuantizeLinear":
        return value
    return q.inputs[0]


def _gptq_weight(node: ir.Node, arr: np.ndarray, qp: QParams, qmax: int, hessian: np.ndarray,
                 nearest: np.ndarray) -> np.ndarray:
    """``arr`` rounded by GPTQ (``quant.weight_rounding``) on the layer's scales; ``nearest`` where the
    layout is not one it handles (the Hessian's size must match the layer's input features)."""
    trans = node.op_type == "Gemm" and not node.attributes.get_int("transB", 0)
    w2 = arr.T if trans else arr.reshape(arr.shape[0], -1)
    out_axis = 1 if trans else 0
    if qp.axis is not None and qp.axis % arr.ndim != out_axis:
        return nearest
    k = w2.shape[1]
    if hessian.shape[-1] != k or (hessian.ndim == 3 and hessian.shape[0] != w2.shape[0]):
        return nearest
    scale = np.broadcast_to(qp.scale, (w2.shape[0],))
    q = gptq_round(w2, scale, qmax, hessian)
    return q.T.copy() if trans else q.reshape(arr.shape)


class InsertQDQPass(InPlacePass):
    """Insert Q/DQ where ``QDQPlacementPass`` marked, using ranges from ``table``."""

    def __init__(self, table: CalibrationTable, config: QuantConfig,
                 hessians: Mapping[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.table = table
        self.config = config
        self.hessians = dict(hessians or {})

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        opset = graph.opset_imports.get("", 0)
        if opset < MIN_OPSET:
            raise QuantizationError(f"model opset {opset} is below {MIN_OPSET}; re-export with opset >= {MIN_OPSET}")
        marked = [n for n in graph if plan_of(n) is not None]
        if not marked:
            return PassResult(model, modified=False)
        self._taken = used_names(graph)
        self._graph = graph
        act_q = self._activation_params(marked)
        self._quantized: dict[int, ir.Value] = {}
        weight_cache: dict[tuple, tuple[ir.Value, QParams, np.ndarray]] = {}
        for node in marked:
            plan = plan_of(node)
            originals = list(node.inputs)  # before Q/DQ replace them (bias correction reads x and W)
            x_qp = None
            for i in plan.activations:
                v = node.inputs[i]
                if v.meta.get(_DQ_FLAG):  # already fed by the DQ of a quantized producer output
                    x_qp = x_qp or v.meta[_DQ_FLAG]
                    continue
                qp = act_q[v.name]
                x_qp = x_qp or qp
                node.replace_input_with(i, self._dequantized(v, qp))
            wqp = None
            if plan.weight is not None:
                idx, axis = plan.weight
                w = node.inputs[idx]
                floor = None
                if plan.bias is not None and x_qp is not None and self.config.profile.int32_bias:
                    floor = bias_scale_floor(const_array(node.inputs[plan.bias]), x_qp.scale)
                hessian = self.hessians.get(node.name) if node.name else None
                key = (id(w), axis, None if floor is None else floor.tobytes(), node.name if hessian is not None else None)
                if key not in weight_cache:
                    depthwise = is_depthwise(node.op_type, node.attributes.get_int("group", 1), w.shape)
                    weight_cache[key] = self._quantize_weight(w, axis, floor, depthwise, node, hessian)
                wq, wqp, w_int = weight_cache[key]
                node.replace_input_with(idx, self._dq_node(wq, wqp, f"{w.name}_dequantized", w))
            if plan.bias is not None and wqp is not None and self.config.profile.int32_bias:
                b = node.inputs[plan.bias]
                shift = self._bias_shift(node, originals, plan, wqp, w_int) if self.config.bias_correction else None
                node.replace_input_with(plan.bias, self._quantize_bias(b, x_qp.scale, wqp, shift))
            if plan.output:
                y = quantized_output(node, plan)
                self._quantize_output(y, act_q[y.name])
            node.meta.pop("qdq", None)
        log.info("inserted Q/DQ around %d nodes (%d activation tensors, %d weights)",
                 len(marked), len(self._quantized), len(weight_cache))
        return PassResult(model, modified=True)

    # -- parameters -------------------------------------------------------------------------
    def _activation_params(self, marked: list[ir.Node]) -> dict[str, QParams]:
        dtype = self.config.resolved_activation_dtype
        needed: dict[str, ir.Value] = {}
        for node in marked:
            plan = plan_of(node)
            for i in plan.activations:
                needed[node.inputs[i].name] = node.inputs[i]
            if plan.output:
                y = quantized_output(node, plan)
                needed[y.name] = y
        params: dict[str, QParams] = {}
        missing = []
        for name, value in needed.items():
            r = lookup_range(self.table, value)
            if r is None:
                missing.append(name)
                continue
            if r.nonfinite and r.count and r.nonfinite == r.count:
                raise CalibrationError(f"tensor '{name}' was never finite during calibration")
            params[name] = activation_qparams(r.lo, r.hi, dtype, name=name)
        if missing:
            shown = ", ".join(f"'{m}'" for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise CalibrationError(
                f"calibration table lacks {len(missing)} tensor(s) this model quantizes: {shown}; "
                f"re-run `qdq calibrate` on this exact model"
            )
        return params

    # -- node builders ------------------------------------------------------------------------
    def _init(self, name: str, array: np.ndarray) -> ir.Value:
        return add_initializer(self._graph, name, array, self._taken)

    def _new_value(self, name: str, like: ir.Value, dtype: ir.DataType) -> ir.Value:
        out = ir.Value(name=unique_name(self._graph, name, self._taken))
        out.dtype = dtype
        out.shape = shape_of(like)
        return out

    def _q_node(self, v: ir.Value, qp: QParams) -> ir.Value:
        scale = self._init(f"{v.name}_scale", qp.scale)
        zp = self._init(f"{v.name}_zero_point", qp.zero_point)
        out = self._new_value(f"{v.name}_quantized", v, ir.DataType.from_numpy(np.dtype(qp.dtype)))
        node = ir.Node("", "QuantizeLinear", [v, scale, zp], outputs=[out], name=f"{v.name}_QuantizeLinear")
        self._graph.append(node)
        out.meta["qparams"] = (scale, zp, qp)
        return out

    def _dq_node(self, q: ir.Value, qp: QParams, name: str, like: ir.Value) -> ir.Value:
        if "qparams" in q.meta:
            scale, zp, _ = q.meta["qparams"]
        else:
            base = q.name.removesuffix("_quantized")
            scale = self._init(f"{base}_scale", qp.scale)
            zp = self._init(f"{base}_zero_point", qp.zero_point)
            q.meta["qparams"] = (scale, zp, qp)
        out = self._new_value(name, like, ir.DataType.FLOAT)
        attrs = {"axis": ir.AttrInt64("axis", qp.axis)} if qp.axis is not None else {}
        node = ir.Node("", "DequantizeLinear", [q, scale, zp], attributes=attrs, outputs=[out],
                       name=f"{out.name}_DequantizeLinear")
        out.meta[_DQ_FLAG] = qp
        self._graph.append(node)
        return out

    def _dequantized(self, v: ir.Value, qp: QParams) -> ir.Value:
        """A fresh DQ of ``v`` for one consumer; one shared Q per tensor."""
        q = self._quantized.get(id(v))
        if q is None:
            q = self._q_node(v, qp)
            self._quantized[id(v)] = q
        return self._dq_node(q, qp, f"{v.name}_dequantized", v)

    def _quantize_weight(self, w: ir.Value, axis: int | None, floor: np.ndarray | None = None,
                         depthwise: bool = False, node: ir.Node | None = None,
                         hessian: np.ndarray | None = None) -> tuple[ir.Value, QParams, np.ndarray]:
        arr = const_array(w).astype(np.float32)
        qmax = self.config.profile.layer_weight_qmax(depthwise)
        qp = weight_qparams(arr, axis, name=w.name or "", qmax=qmax, floor=floor)
        w_int = quantize(arr, qp)
        if hessian is not None and node is not None:
            w_int = _gptq_weight(node, arr, qp, qmax, hessian, w_int)
        q = self._init(f"{w.name}_quantized", w_int)
        return q, qp, w_int

    def _bias_shift(self, node: ir.Node, inputs: list[ir.Value | None], plan: NodePlan,
                    wqp: QParams, w_int: np.ndarray) -> np.ndarray | None:
        """``(W - W_q) . E[x]`` per output channel: the mean error weight rounding adds to the output
        (Conv: summed over the kernel window, padding ignored; Gemm: along the reduced axis)."""
        x = _float_source(inputs[plan.activations[0]])
        mean = self.table.channel_mean.get(x.name) if x is not None else None
        w = const_array(inputs[plan.weight[0]])
        if mean is None or w is None:
            return None
        w = w.astype(np.float32)
        err = w - dequantize(w_int, wqp)
        if node.op_type == "Conv":
            group = node.attributes.get("group")
            g = 1 if group is None else group.as_int()
            cout, cpg = err.shape[:2]
            if cout % g or mean.size != g * cpg:
                return None
            per_in = err.reshape(cout, cpg, -1).sum(-1).reshape(g, cout // g, cpg)
            return (per_in * mean.reshape(g, 1, cpg)).sum(-1).reshape(cout)
        trans_a = node.attributes.get("transA")
        if node.op_type == "Gemm" and err.ndim == 2 and not (trans_a is not None and trans_a.as_int()):
            trans_b = node.attributes.get("transB")
            err = err if trans_b is not None and trans_b.as_int() else err.T  # (out, in)
            return err @ mean if err.shape[1] == mean.size else None
        return None

    def _quantize_bias(self, b: ir.Value, x_scale: np.ndarray, wqp: QParams,
                       shift: np.ndarray | None = None) -> ir.Value:
        arr = const_array(b).astype(np.float32)
        if shift is not None and shift.shape == arr.shape:
            arr = arr + shift.astype(np.float32)
        qp = bias_qparams(x_scale, wqp)
        if qp.axis is not None:
            qp = QParams(qp.scale, qp.zero_point, qp.dtype, 0)
        q = self._init(f"{b.name}_quantized", quantize(arr, qp))
        return self._dq_node(q, qp, f"{b.name}_dequantized", b)

    def _quantize_output(self, y: ir.Value, qp: QParams) -> None:
        consumers = [(u.node, u.idx) for u in y.uses()]
        q = self._quantized.get(id(y))
        if q is None:
            q = self._q_node(y, qp)
            self._quantized[id(y)] = q
        for consumer, idx in consumers:
            if consumer.op_type == "QuantizeLinear" and consumer.outputs[0] is q:
                continue
            if consumer.op_type == "DequantizeLinear" and consumer.inputs[0] is q:
                continue
            consumer.replace_input_with(idx, self._dq_node(q, qp, f"{y.name}_dequantized", y))
