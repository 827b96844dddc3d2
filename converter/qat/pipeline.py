"""QAT end to end for a ``ModelSource``: wrap, initialise, choose the loss, train, export."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from torch import nn

from ..calib.table import CalibrationTable
from .config import QATConfig
from .distill import LossFn, distillation_loss, lm_loss
from .errors import QATError
from .init import initialize
from .peqa import to_peqa
from .sources import ModelSource
from .wrap import quantize_model

log = logging.getLogger(__name__)


def prepare(source: ModelSource, batches: Sequence[Any], config: QATConfig, *,
            table: CalibrationTable | None = None, onnx_path: str | os.PathLike[str] | None = None,
            peqa: bool = False, train_bias: bool = False, init_batches: int = 8) -> nn.Module:
    """The fake-quantized copy of ``source.module`` with PTQ-initialised scales (PEQA-frozen if asked)."""
    model = quantize_model(source.module, config)
    initialize(model, table=table, onnx_path=onnx_path, batches=batches, forward=source.forward,
               max_batches=init_batches)
    if peqa:
        to_peqa(model, train_bias=train_bias)
    return model


def make_loss(source: ModelSource, distill: bool, temperature: float = 1.0) -> LossFn:
    """KD against the FP32 ``source.module`` with ``distill``; otherwise the LM's next-token loss."""
    if distill:
        return distillation_loss(source.module, source.forward, temperature)
    if source.is_lm:
        return lm_loss(source.forward)
    raise QATError("the data has no labels for this model; train against the FP32 model with --distill")


def epochs(batches: Sequence[Any], seed: int = 0, shuffle: bool = True) -> Callable[[int], Iterable[Any]]:
    """``data(epoch)`` for ``train``: ``batches`` in an order that depends only on ``seed`` and ``epoch``."""
    if not batches:
        raise QATError("the training data gave no batches")

    def data(epoch: int) -> Iterable[Any]:
        if not shuffle:
            return list(batches)
        order = np.random.default_rng([seed, epoch]).permutation(len(batches))
        return [batches[i] for i in order]

    return data
