"""QATConfig: which layers are fake-quantized, and how."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from .errors import QATError


@dataclass(frozen=True)
class QATConfig:
    """Fake-quantization settings.

    ``weight_bits``: symmetric per-output-channel weights on ``[-(2^(b-1)-1), 2^(b-1)-1]`` (the PTQ grid).
    ``act_bits``: per-tensor activation quantizers on every quantized layer's input; ``None`` for
    weight-only quantization. Export needs 8 (``QuantizeLinear`` saturates to the int8/uint8 range).
    ``skip``: regular expressions; layers whose qualified name matches one stay float.
    ``lsq_grad_scale``: multiply scale gradients by LSQ's ``1/sqrt(N*qmax)``.
    """

    weight_bits: int = 4
    act_bits: int | None = 8
    skip: tuple[str, ...] = ()
    lsq_grad_scale: bool = True

    def __post_init__(self) -> None:
        for name, bits in (("weight_bits", self.weight_bits), ("act_bits", self.act_bits)):
            if bits is None and name == "act_bits":
                continue
            if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
                raise QATError(f"{name} must be an integer in [2, 8], got {bits!r}")
        object.__setattr__(self, "skip", tuple(self.skip))
        for pattern in self.skip:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise QATError(f"bad skip pattern {pattern!r}: {exc}") from None

    def skipped(self, name: str) -> bool:
        return any(re.search(p, name) for p in self.skip)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
