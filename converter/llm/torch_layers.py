"""Reading and writing a torch linear layer's weight as W [N, K] (Linear, or GPT-2's transposed Conv1D)."""
from __future__ import annotations

import torch


def is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's transposed Linear


def weight_nk(module: torch.nn.Module) -> torch.Tensor:
    """The layer's weight as W [N, K] (out x in): Linear stores it so, GPT-2's Conv1D transposed."""
    w = module.weight.detach()
    return w if isinstance(module, torch.nn.Linear) else w.T


def set_weight_nk(module: torch.nn.Module, w: torch.Tensor) -> None:
    """Copy W [N, K] into the layer's weight (in the layer's dtype and layout)."""
    w = w.to(module.weight.dtype)
    module.weight.data.copy_(w if isinstance(module, torch.nn.Linear) else w.T)
