"""Sequential GPTQ (and HERA) on the torch model an LM was exported from, block by block.

As Frantar et al. (2022) run it: the calibration windows are embedded and stopped at the first decoder
block; then for each block in turn, forward hooks fold every linear layer's input into a running
Hessian H = 2XXᵀ/n batch by batch (nothing kept), the block's layers are quantized and their
dequantized weights put back, and the block runs again to give the next block its inputs. So every
layer's Hessian comes from inputs that the already-quantized earlier layers produced. Layers that read
the same input (q/k/v, gate/up) share one Hessian and are quantized as one matrix. With
``true_sequential`` the groups of a block are done one after another (o_proj's Hessian then sees the
quantized q/k/v), at the price of one extra partial forward per group.

Memory: the float model, the calibration set's activations at one block boundary (inputs and outputs),
and one K x K Hessian per distinct layer input of the current block.

The result is keyed by a fingerprint of each float weight W [N, K], so it can be matched to the ONNX
MatMuls exported from the same model whatever the exporter named them.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..memory import release_memory
from .awq import scale_block
from .config import WeightOnlyConfig, WeightQuantError
from .hessian import HessianAccumulator
from .quantizers import QuantizedWeight, quantize_layer, torch_threads
from .torch_layers import is_linear as _is_linear
from .torch_layers import set_weight_nk as _set_weight_nk
from .torch_layers import weight_nk as _weight_nk

log = logging.getLogger(__name__)

FINAL_NORMS = ("norm", "ln_f", "final_layernorm", "final_layer_norm")


def fingerprint(w: np.ndarray) -> str:
    """A digest of W [N, K] as float32 (shape included): the same weight in torch and in ONNX hashes alike."""
    a = np.ascontiguousarray(w, dtype=np.float32)
    return hashlib.blake2b(a.tobytes() + repr(a.shape).encode(), digest_size=16).hexdigest()


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of decoder blocks: its ModuleList holding the most parameters."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise WeightQuantError(f"{type(model).__name__} has no list of decoder blocks to quantize sequentially")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def _final_norm(model: torch.nn.Module) -> torch.nn.Module | None:
    base = getattr(model, "base_model", model)
    for name in FINAL_NORMS:
        if isinstance(getattr(base, name, None), torch.nn.Module):
            return getattr(base, name)
    return None


def free_cores() -> int:
    """Torch threads for the block forwards: torch's default less the cores other work keeps busy (rounded up).

    On this 2-core machine a SmolLM2 block on 1024 tokens took 0.086 s wall with one thread and 0.355 s
    with two at load 1.3, and 0.25 vs 0.56 s at load 7 (a thread waits for its descheduled peer), so a
    core with any other work on it is not counted.
    """
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - math.ceil(busy)))


class _Stop(Exception):
    """Raised inside a forward pass once everything needed from it has been seen."""


@dataclass
class _Inputs:
    """The calibration set's hidden states at one block boundary, with each batch's other block arguments."""

    hidden: list[torch.Tensor] = field(default_factory=list)
    args: list[tuple] = field(default_factory=list)
    kwargs: list[dict] = field(default_factory=list)


def _capture(model: torch.nn.Module, first: torch.nn.Module, batches: Iterable[Mapping[str, np.ndarray]]) -> _Inputs:
    """Run the embeddings on each batch and keep what the first block receives."""
    got = _Inputs()

    def hook(_mod: Any, args: tuple, kwargs: dict) -> None:
        got.hidden.append(args[0] if args else kwargs.pop("hidden_states"))
        got.args.append(tuple(args[1:]))
        got.kwargs.append(dict(kwargs))
        raise _Stop

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for feeds in batches:
            ids = torch.as_tensor(np.asarray(feeds["input_ids"]), dtype=torch.long)
            mask = feeds.get("attention_mask")
            extra = {"attention_mask": torch.as_tensor(np.asarray(mask))} if mask is not None else {}
            try:
                model(input_ids=ids, use_cache=False, **extra)
            except _Stop:
                pass
    finally:
        handle.remove()
    if not got.hidden:
        raise WeightQuantError("calibration data is empty: GPTQ needs at least one batch")
    return got


def _run_block(block: torch.nn.Module, inputs: _Inputs, i: int) -> torch.Tensor:
    kwargs = dict(inputs.kwargs[i])
    out = block(inputs.hidden[i], *inputs.args[i], **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def _input_groups(block: torch.nn.Module, inputs: _Inputs, names: dict[torch.nn.Module, str]) -> list[list[str]]:
    """The block's wanted layers grouped by shared input tensor, in the order they run (one batch)."""
    order: list[tuple[int, str]] = []
    alive: list[torch.Tensor] = []  # held so that no freed input's address is reused within this pass

    def hook(mod: torch.nn.Module, inp: tuple, _out: Any) -> None:
        alive.append(inp[0])
        order.append((inp[0].data_ptr(), names[mod]))

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        _run_block(block, inputs, 0)
    finally:
        for h in handles:
            h.remove()
    groups: dict[int, list[str]] = {}
    for ptr, name in order:
        if name not in groups.setdefault(ptr, []):
            groups[ptr].append(name)
    return list(groups.values())


def _collect(block: torch.nn.Module, inputs: _Inputs, modules: dict[str, torch.nn.Module],
             groups: list[list[str]]) -> list[HessianAccumulator]:
    """One Hessian per group (from its first layer's input) over all batches; stops each forward early."""
    leaders = {modules[g[0]]: i for i, g in enumerate(groups)}
    accs = [HessianAccumulator(_weight_nk(modules[g[0]]).shape[1]) for g in groups]
    seen: set[int] = set()

    def hook(mod: torch.nn.Module, inp: tuple, _out: Any) -> None:
        i = leaders[mod]
        accs[i].add(inp[0].detach())
        seen.add(i)
        if len(seen) == len(groups):
            raise _Stop

    handles = [m.register_forward_hook(hook) for m in leaders]
    try:
        for b in range(len(inputs.hidden)):
            seen.clear()
            try:
                _run_block(block, inputs, b)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    return accs


def _quantize_group(modules: dict[str, torch.nn.Module], group: list[str], hessian: torch.Tensor,
                    config: WeightOnlyConfig, keys: Mapping[str, str], out: dict[str, QuantizedWeight],
                    deferred: list[tuple[torch.nn.Module, torch.Tensor]],
                    input_scales: Mapping[str, np.ndarray] | None = None) -> None:
    """Quantize the layers of one group as one matrix (rows stacked), record them, schedule the write-back."""
    ws = [_weight_nk(modules[name]).float() for name in group]
    qw = quantize_layer(torch.cat(ws), hessian, config, "+".join(group))
    row = 0
    for name, w in zip(group, ws):
        n = w.shape[0]
        part = QuantizedWeight(qw.q[row:row + n], qw.scales[row:row + n], qw.zero_points[row:row + n],
                               qw.bits, qw.group_size, qw.symmetric, (input_scales or {}).get(name))
        out[keys[name]] = part
        deferred.append((modules[name], torch.as_tensor(part.dequantize())))
        row += n


def quantize_sequential(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, np.ndarray]],
    config: WeightOnlyConfig,
    wanted: Iterable[str] | None = None,
    *,
    true_sequential: bool = False,
    progress: bool | None = None,
) -> dict[str, QuantizedWeight]:
    """Quantize ``model``'s linear layers block by block; returns {fingerprint of float W: levels}.

    ``batches``: feed dicts with ``input_ids`` [B, S] (and optionally ``attention_mask``). ``wanted``:
    fingerprints of the weights to quantize (default: every linear layer in the decoder blocks and the
    output projection). ``model`` is modified: its quantized layers hold their dequantized weights.
    """
    model.eval()
    with torch_threads(free_cores()):
        return _quantize_sequential(model, batches, config, wanted, true_sequential, progress)


def _quantize_sequential(model: torch.nn.Module, batches: Iterable[Mapping[str, np.ndarray]],
                         config: WeightOnlyConfig, wanted: Iterable[str] | None, true_sequential: bool,
                         progress: bool | None) -> dict[str, QuantizedWeight]:
    from ..progress import bar

    blocks = decoder_blocks(model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    all_linears = {name: m for name, m in model.named_modules() if _is_linear(m)}
    keys = {name: fingerprint(_weight_nk(m).float().numpy()) for name, m in all_linears.items()}
    if wanted is None:  # a head tied to the input embeddings stays float (quantizing it would change them too)
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        tied = head is not None and emb is not None and head.weight is emb.weight
        wanted = {k for n, k in keys.items() if not (tied and all_linears[n] is head)}
    want = set(wanted)
    result: dict[str, QuantizedWeight] = {}
    deferred: list[tuple[torch.nn.Module, torch.Tensor]] = []
    with torch.no_grad():
        inputs = _capture(model, blocks[0], batches)
        with bar(progress if progress is not None else sys.stderr.isatty(), len(blocks), config.label, "block") as pb:
            for index, block in enumerate(blocks):
                t0 = time.perf_counter()
                names = {m: n for n, m in all_linears.items() if keys[n] in want and _owned_by(block, m)}
                if names:
                    modules = {n: m for m, n in names.items()}
                    groups = _input_groups(block, inputs, names)
                    for stage in ([[g] for g in groups] if true_sequential else [groups]):
                        hessians = [acc.hessian_tensor() for acc in _collect(block, inputs, modules, stage)]
                        scales: dict[str, np.ndarray] = {}
                        if config.awq:
                            hessians, scales = scale_block(block, modules, stage, hessians, config,
                                                           lambda: _run_block(block, inputs, 0))
                        for group, hessian in zip(stage, hessians):
                            _quantize_group(modules, group, hessian, config, keys, result, deferred, scales)
                        if config.sequential:
                            _write_back(deferred)
                for i in range(len(inputs.hidden)):
                    inputs.hidden[i] = _run_block(block, inputs, i)
                release_memory()  # the block's temporaries: glibc would keep them and fragment over 30 blocks
                pb.update(1)
                log.debug("block %d: %d layers in %.1fs", index, len(names), time.perf_counter() - t0)
            if head is not None and _is_linear(head) and keys.get(_name_of(all_linears, head)) in want:
                _quantize_head(model, head, inputs, config, keys[_name_of(all_linears, head)], result, deferred)
        _write_back(deferred)
    missing = want - set(result)
    if missing and wanted is not None:
        log.warning("%d weight(s) to quantize are not linear layers of the decoder blocks or the output head",
                    len(missing))
    return result


def _owned_by(block: torch.nn.Module, module: torch.nn.Module) -> bool:
    return any(m is module for m in block.modules())


def _name_of(linears: Mapping[str, torch.nn.Module], module: torch.nn.Module) -> str | None:
    return next((n for n, m in linears.items() if m is module), None)


def _write_back(deferred: list[tuple[torch.nn.Module, torch.Tensor]]) -> None:
    for module, w in deferred:
        _set_weight_nk(module, w)
    deferred.clear()


def _quantize_head(model: torch.nn.Module, head: torch.nn.Module, inputs: _Inputs, config: WeightOnlyConfig,
                   key: str, out: dict[str, QuantizedWeight], deferred: list) -> None:
    """The output projection, with its Hessian from the final norm of the last block's (quantized) outputs."""
    norm = _final_norm(model)
    acc = HessianAccumulator(_weight_nk(head).shape[1])
    for h in inputs.hidden:
        acc.add(norm(h) if norm is not None else h)
    _quantize_group({"head": head}, ["head"], acc.hessian_tensor(), config, {"head": key}, out, deferred)
