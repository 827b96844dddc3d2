"""SmoothQuant in one package: move activation outliers into the weights before INT8 quantization.

- ``smoothing``: the graph pass (``SmoothQuantPass``), smoothing groups, factor folding into producers.
- ``search``: ``auto`` alpha selection (per layer or one per model) by the simulated INT8 output error.
- ``capture``: runs the float model to capture the activations the search measures on
  (``converter.smoothquant.capture.capture``).
- ``auto``: the step ``converter.quantize`` runs (choose alphas, float fallback, smooth, re-calibrate),
  shared by the encoder path (``qdq quantize --smoothquant``) and the LM W8A8 path (``converter.llm.w8a8``).
"""
from .search import MAX_ROWS, MIN_BENEFIT, choose_alphas, group_error
from .smoothing import (
    SmoothGroup,
    SmoothQuantPass,
    can_absorb,
    find_groups,
    smoothed_range,
    smoothing_scales,
    weight_channel_absmax,
)

__all__ = [
    "MAX_ROWS", "MIN_BENEFIT", "SmoothGroup", "SmoothQuantPass", "can_absorb", "choose_alphas",
    "find_groups", "group_error", "smoothed_range", "smoothing_scales", "weight_channel_absmax",
]
