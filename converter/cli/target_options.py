"""The `--target` / `--cpu` options, with choices read from the target-profile registry."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from converter.targets import CPU_CHOICES, TARGETS

CPU_HELP = ("ort-cpu: the CPU family the INT8 scheme is made exact for: auto (this machine), vnni (AVX512-VNNI/"
            "AVX-VNNI/AMX: 8-bit weights), avx2 (x86 without VNNI: 7-bit weights), arm64, portable (exact everywhere).")


def target_option(help_text: str, **kwargs: Any) -> Callable:
    """``--target`` over the quantization targets of the registry."""
    return click.option("--target", "-t", type=click.Choice(TARGETS), help=help_text, **kwargs)


def cpu_option(default: str | None = "auto") -> Callable:
    """``--cpu auto|vnni|avx2|arm64|portable``."""
    return click.option("--cpu", type=click.Choice(CPU_CHOICES), default=default, show_default=default is not None,
                        help=CPU_HELP)
