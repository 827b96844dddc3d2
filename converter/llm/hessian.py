"""Per-MatMul input Hessians H = 2XXᵀ/n from calibration data, accumulated batch by batch.

The float model is run by ONNX Runtime with the MatMul inputs added as graph outputs; each batch's
activations [..., K] are folded into a running float64 sum of XᵀX and discarded, so memory stays at
one batch of activations plus one K x K matrix per distinct input.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from runtime import Engine

from ..graph_outputs import add_outputs
from .config import WeightQuantError

log = logging.getLogger(__name__)


class HessianAccumulator:
    """Running XᵀX (float64) and token count for one activation tensor with K features.

    Each batch's XᵀX is computed in float32 (fast) and added to the float64 sum; the batch itself is
    not kept. Takes numpy arrays or torch tensors.
    """

    def __init__(self, k: int) -> None:
        import torch

        self.xtx = torch.zeros((k, k), dtype=torch.float64)
        self.count = 0

    def add(self, x: Any, keep: np.ndarray | None = None) -> None:
        """Fold activations x [..., K] in; ``keep`` (boolean, x's leading shape) drops padded tokens."""
        import torch

        x = torch.as_tensor(x)
        x2 = x.reshape(-1, x.shape[-1]) if keep is None else x[torch.as_tensor(keep).bool()]
        x2 = x2.to(torch.float32)
        self.xtx += (x2.T @ x2).to(torch.float64)
        self.count += x2.shape[0]

    def hessian_tensor(self) -> Any:
        """H = 2XᵀX/n as a float64 torch tensor."""
        if self.count == 0:
            raise WeightQuantError("no calibration tokens reached this MatMul")
        return 2.0 * self.xtx / self.count

    def hessian(self) -> np.ndarray:
        return self.hessian_tensor().numpy()


def _with_outputs(model: ir.Model, names: Sequence[str]) -> onnx.ModelProto:
    """``model`` as a proto that also outputs the tensors ``names`` (with their element types)."""
    values = {v.name: v for node in model.graph for v in node.outputs}
    values.update({v.name: v for v in model.graph.inputs})
    for name in names:
        if name not in values:
            raise WeightQuantError(f"tensor {name!r} is not produced in the model")
    types = {name: int(values[name].dtype) for name in names if values[name].dtype is not None}
    return add_outputs(ir.to_proto(model), names, types)


def collect_hessians(
    model: ir.Model,
    tensors: Sequence[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    mask_input: str | None = "attention_mask",
) -> dict[str, np.ndarray]:
    """H = 2XXᵀ/n for each tensor in ``tensors`` (activations feeding MatMuls) over ``batches`` of feeds.

    When the feeds carry ``mask_input`` with the same [batch, sequence] shape as an activation's
    leading axes, masked (padding) tokens are left out.
    """
    names = list(dict.fromkeys(tensors))
    probe = _with_outputs(model, names)
    acc: dict[str, HessianAccumulator] = {}
    n_batches = 0
    with Engine.load(probe) as engine:
        for feeds in batches:
            out = engine.run(dict(feeds), names)
            mask = feeds.get(mask_input) if mask_input else None
            for name in names:
                x = out[name]
                keep = mask if mask is not None and mask.shape == x.shape[:-1] else None
                acc.setdefault(name, HessianAccumulator(x.shape[-1])).add(x, keep)
            n_batches += 1
    if not n_batches:
        raise WeightQuantError("calibration data is empty: GPTQ needs at least one batch")
    log.info("collected %d Hessians over %d batches (%d tokens)", len(acc), n_batches,
             next(iter(acc.values())).count if acc else 0)
    return {name: a.hessian() for name, a in acc.items()}
