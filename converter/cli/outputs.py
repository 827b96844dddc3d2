"""The output checks every writing command makes before it starts: `--force` and `check_outputs`."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import click

force_option = click.option(
    "--force", is_flag=True,
    help="Overwrite an existing output file of another kind (e.g. a JSON table with an ONNX model). "
         "An input of the command is never overwritten.")


def check_outputs(outputs: Iterable[tuple[Path | None, str]], inputs: Iterable[str | os.PathLike[str] | None],
                  force: bool = False) -> None:
    """``runtime.outputs.check_output`` for each ``(path, kind)`` given (None: not asked for), before any work.

    ``inputs`` may hold data sources that are not paths (``builtin:text``): only existing files can match.
    """
    from runtime.outputs import check_output

    inputs = [i for i in inputs if i is not None]
    for path, kind in outputs:
        if path is not None:
            check_output(path, kind=kind, inputs=inputs, force=force)
