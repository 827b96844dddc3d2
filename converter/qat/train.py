"""A small QAT training loop: Adam on the trainable parameters, cosine learning-rate decay,
progress on stderr, and an atomic checkpoint every N steps that ``resume`` continues from.

Resuming restores the model, optimizer, schedule and torch RNG state and skips the batches
already consumed, so an interrupted run ends where an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runtime.atomic import atomic_write

from .distill import LossFn
from .errors import QATError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "qdq.qat-checkpoint/1"


@dataclass
class TrainConfig:
    """``steps``: total optimizer steps (a resumed run counts the steps already done).
    ``scale_lr``: step size of quantizer scales *relative to their value* (default: ``lr``). Adam's
    steps are about ``lr`` in absolute terms whatever the gradient's size, so a scale of 0.004 (an
    8-bit [0, 1] input) would jump by half at ``lr=2e-3``; each quantizer's scales therefore get
    the learning rate ``scale_lr x mean |s|`` as their initial value sets it.
    ``schedule``: ``cosine`` (decay to 0 over ``steps``) or ``constant``.
    ``checkpoint``: file written every ``checkpoint_every`` steps and at the end; ``resume`` loads it first.
    """

    steps: int
    lr: float = 1e-3
    scale_lr: float | None = None
    weight_decay: float = 0.0
    clip_grad: float | None = 1.0
    schedule: str = "cosine"
    checkpoint: Path | None = None
    checkpoint_every: int = 50
    resume: bool = False
    progress: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise QATError(f"steps must be a positive integer, got {self.steps!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise QATError(f"learning rate must be a positive number, got {self.lr!r}")
        if self.schedule not in ("cosine", "constant"):
            raise QATError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.checkpoint_every < 1:
            raise QATError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.resume and self.checkpoint is None:
            raise QATError("resume needs a checkpoint file")
        if self.checkpoint is not None:
            self.checkpoint = Path(self.checkpoint)


@dataclass
class TrainResult:
    """``start_step``: where this call began (0, or the resumed step); ``losses``: one per step since 0."""

    start_step: int
    step: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def model_signature(model: nn.Module) -> str:
    """A hash of parameter/buffer names and shapes, to refuse checkpoints of another model."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        if isinstance(t, torch.Tensor):
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (temp file, then rename)."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors and plain data only)."""
    p = Path(path)
    if not p.is_file():
        raise QATError(f"checkpoint not found: {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise QATError(f"{p} is not a readable QAT checkpoint: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise QATError(f"{p} is not a QAT checkpoint (expected format '{CHECKPOINT_FORMAT}')")
    return state


def _cycle(data: Callable[[int], Iterable[Any]], skip: int) -> Iterator[Any]:
    """Batches of ``data(0)``, ``data(1)``, ... (one call per pass), after skipping ``skip``."""
    seen = 0
    for epoch in itertools.count():
        empty = True
        for batch in data(epoch):
            empty = False
            if seen >= skip:
                yield batch
            seen += 1
        if empty:
            raise QATError("the training data gave no batches")


def _param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """One group for weights and biases at ``lr``; one per quantizer scale at ``scale_lr x mean|s|``."""
    from .fake_quant import FakeQuantizer

    relative = config.scale_lr if config.scale_lr is not None else config.lr
    groups: list[dict[str, Any]] = []
    scale_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, FakeQuantizer) and module.scale.requires_grad:
            magnitude = float(module.effective_scale().detach().mean())
            groups.append({"params": [module.scale], "lr": relative * magnitude, "weight_decay": 0.0})
            scale_ids.add(id(module.scale))
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in scale_ids]
    return ([{"params": rest}] if rest else []) + groups


def _schedule(config: TrainConfig) -> Callable[[int], float]:
    if config.schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, config.steps) / config.steps))


def train(model: nn.Module, loss_fn: LossFn, data: Callable[[int], Iterable[Any]], config: TrainConfig, *,
          meta: dict[str, Any] | None = None) -> TrainResult:
    """Minimise ``loss_fn(model, batch)`` for ``config.steps`` steps over the batches of ``data(epoch)``.

    ``data`` must give the same batches for the same epoch number (that is how a resumed run finds
    its place).

    ``meta`` (settings that define the run, e.g. bits and PEQA) is stored in the checkpoint; a
    resume with different ``meta`` or a different model is refused with QATError.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise QATError("the model has no trainable parameters")
    optimizer = torch.optim.Adam(_param_groups(model, config), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    signature = model_signature(model)
    meta = dict(meta or {})
    start, losses = 0, []
    torch.manual_seed(config.seed)
    if config.resume:
        assert config.checkpoint is not None
        state = load_checkpoint(config.checkpoint)
        if state["signature"] != signature:
            raise QATError(f"checkpoint {config.checkpoint} was made for a different model or layer set")
        diff = sorted(k for k in set(meta) | set(state["meta"]) if meta.get(k) != state["meta"].get(k))
        if diff:
            raise QATError(f"checkpoint {config.checkpoint} was made with other settings: "
                           + ", ".join(f"{k}={state['meta'].get(k)!r} (now {meta.get(k)!r})" for k in diff))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, losses = int(state["step"]), list(state["losses"])
        log.info("resumed from %s at step %d", config.checkpoint, start)
        if start >= config.steps:
            log.info("checkpoint is already at step %d >= %d steps; nothing to train", start, config.steps)
            return TrainResult(start, start, losses)

    def checkpoint(step: int) -> None:
        if config.checkpoint is None:
            return
        save_checkpoint(config.checkpoint, {
            "format": CHECKPOINT_FORMAT, "step": step, "signature": signature, "meta": meta,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "losses": losses,
        })
        log.debug("checkpoint at step %d -> %s", step, config.checkpoint)

    from tqdm import tqdm

    t0 = time.perf_counter()
    model.train()
    batches = _cycle(data, start)
    bar = tqdm(total=config.steps, initial=start, desc="qat", unit="step", file=sys.stderr,
               disable=not config.progress, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 5.0)
    step = start
    try:
        while step < config.steps:
            batch = next(batches)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise QATError(f"the loss became {loss.item()} at step {step + 1}; lower the learning rate")
            loss.backward()
            if config.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, config.clip_grad)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(float(loss.item()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint(step)
    finally:
        bar.close()
    model.eval()
    seconds = time.perf_counter() - t0
    log.info("trained %d steps in %.1fs (loss %.4f -> %.4f)", step - start, seconds,
             losses[start] if len(losses) > start else float("nan"), losses[-1])
    return TrainResult(start, step, losses, seconds)
