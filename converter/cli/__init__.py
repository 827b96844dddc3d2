"""The `qdq` command line: a thin Click layer over the Python API, one module per command family."""
from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from .errors import one_line_errors

_COMMAND_MODULES = ["export", "inspect", "calibrate", "quantize", "run", "compare", "accuracy", "build", "check", "qat", "llm", "kv_cache"]
_QUIET_LOGGERS = ("onnxscript", "onnx_ir", "torch", "transformers", "httpx", "urllib3")


class QdqGroup(click.Group):
    """Turns the toolkit's own errors into a one-line message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    for name in ("converter", "runtime", "calibration_data"):
        logging.getLogger(name).setLevel(level if verbose else logging.WARNING)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 2 else logging.ERROR)


@click.group(cls=QdqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log progress (-v) or debug detail (-vv).")
@click.version_option(package_name="qdq", message="qdq %(version)s")
def main(verbose: int) -> None:
    """qdq: export, calibrate, quantize, build and run ONNX models."""
    _setup_logging(verbose)


for _name in _COMMAND_MODULES:
    _module = importlib.import_module(f"{__name__}.{_name}")
    for _cmd in getattr(_module, "commands", [getattr(_module, "command", None)]):
        if _cmd is not None:
            main.add_command(_cmd)
