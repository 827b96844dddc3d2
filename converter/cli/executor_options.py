"""`--executor local|ray` and `--ray-address`: where the parallel parts of a command run."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from converter.distributed import Executor


def executor_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add `--executor` and `--ray-address` (default: the RAY_ADDRESS variable) to a command."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--ray-address", envvar="RAY_ADDRESS", default=None, metavar="ADDRESS",
                         help="Ray cluster for --executor ray, e.g. auto or ray://head:10001 "
                              "(default: $RAY_ADDRESS; none: a local Ray on this machine's cores).")(f)
        return click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                            help=f"Where {what} run: this process, or Ray tasks (pip install 'qdq[distributed]').")(f)

    return wrap


def open_executor(kind: str, address: str | None) -> "Executor":
    """The executor for the options; errors (Ray missing, cluster unreachable) are one line."""
    from converter.distributed import make_executor

    return make_executor(kind, address)
