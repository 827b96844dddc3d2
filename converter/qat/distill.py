"""Losses for QAT: knowledge distillation from the frozen FP32 teacher (LLM-QAT style), the
next-token loss of a causal LM, and data-free training text sampled from the teacher.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import QATError

LossFn = Callable[[nn.Module, Any], torch.Tensor]
"""``loss(student, batch) -> scalar``, what ``converter.qat.train.train`` minimises."""
Forward = Callable[[nn.Module, Any], torch.Tensor]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` over the last axis, averaged over the
    positions where ``mask`` (shape = logits shape minus the last axis) is nonzero."""
    if temperature <= 0:
        raise QATError(f"distillation temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise QATError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                       f"{tuple(teacher_logits.shape)} differ in shape")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    if mask is not None:
        m = mask.to(kl.dtype)
        return (kl * m).sum() / m.sum().clamp_min(1.0) * temperature**2
    return kl.mean() * temperature**2


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Mean squared error between hidden states (feature distillation)."""
    return F.mse_loss(student_hidden.float(), teacher_hidden.float())


def distillation_loss(teacher: nn.Module, forward: Forward, temperature: float = 1.0,
                      mask_key: str | None = "attention_mask") -> LossFn:
    """A loss that distils ``teacher``'s logits into the student; ``forward(model, batch)`` returns logits.

    For batches that are mappings holding ``mask_key`` (text), padded positions are ignored.
    """
    teacher.eval()  # its forward runs under no_grad; its parameters are not touched

    def loss(student: nn.Module, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            t = forward(teacher, batch)
        s = forward(student, batch)
        mask = None
        if mask_key and isinstance(batch, Mapping) and mask_key in batch:
            mask = torch.as_tensor(np.asarray(batch[mask_key]))
        return kd_loss(s, t, temperature, mask)

    return loss


def lm_loss(forward: Forward, ids_key: str = "input_ids", mask_key: str = "attention_mask") -> LossFn:
    """Next-token cross-entropy of a causal LM on the batch's own tokens (padding ignored)."""

    def loss(student: nn.Module, batch: Any) -> torch.Tensor:
        logits = forward(student, batch)
        ids = torch.as_tensor(np.asarray(batch[ids_key]))
        target = ids[:, 1:].clone()
        if mask_key in batch:
            target[torch.as_tensor(np.asarray(batch[mask_key]))[:, 1:] == 0] = -100
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                               ignore_index=-100)

    return loss


@torch.no_grad()
def sample_from_teacher(teacher: nn.Module, num_sequences: int, length: int, vocab_size: int, *,
                        greedy_tokens: int = 3, seed: int = 0) -> np.ndarray:
    """Data-free training text (LLM-QAT): a uniformly random first token, the teacher's top-1 for
    the next ``greedy_tokens``, then sampling from its distribution. Returns int64 ``[num_sequences, length]``.

    ``teacher(ids)`` must return logits ``[batch, sequence, vocab]`` (or an object with ``.logits``).
    """
    if num_sequences < 1 or length < 2:
        raise QATError(f"need at least one sequence of length >= 2, got {num_sequences} x {length}")
    gen = torch.Generator().manual_seed(seed)
    teacher.eval()
    ids = torch.randint(0, vocab_size, (num_sequences, 1), generator=gen)
    for step in range(1, length):
        out = teacher(ids)
        logits = (out.logits if hasattr(out, "logits") else out)[:, -1].float()
        if step <= greedy_tokens:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
        ids = torch.cat([ids, nxt], dim=1)
    return ids.numpy().astype(np.int64)
