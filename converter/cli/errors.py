"""The toolkit's own errors become a one-line `Error: ...` and exit code 1 on the command line."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click


def expected_errors() -> tuple[type[BaseException], ...]:
    """Error types whose message already names the problem (file, input, tensor)."""
    from calibration_data import DataError
    from converter.calib.table import CalibrationError
    from converter.errors import ConverterError
    from runtime.errors import EngineError, InputError, OutputError

    return (ConverterError, EngineError, InputError, OutputError, CalibrationError, DataError)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Re-raise expected errors (and missing files) as click.ClickException with their message."""
    try:
        yield
    except expected_errors() as exc:
        raise click.ClickException(str(exc)) from None
    except FileNotFoundError as exc:
        raise click.ClickException(f"file not found: {exc.filename or exc}") from None
