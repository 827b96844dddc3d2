"""Progress display for long CLI steps: a spinner for steps with no natural count (export, build), a tqdm
bar for counted ones (bench runs, sensitivity variants); both on stderr, bars only on a terminal."""
from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Iterator


@contextlib.contextmanager
def stage(label: str) -> Iterator[None]:
    """Show a spinner with elapsed seconds on stderr while the body runs (only on a terminal)."""
    if not on_terminal():
        print(f"{label} ...", file=sys.stderr, flush=True)
        yield
        return
    done = threading.Event()
    start = time.perf_counter()

    def spin() -> None:
        for ch in itertools.cycle("|/-\\"):
            if done.wait(0.2):
                break
            sys.stderr.write(f"\r{ch} {label} {time.perf_counter() - start:5.1f}s")
            sys.stderr.flush()
        sys.stderr.write("\r" + " " * (len(label) + 12) + "\r")

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


def on_terminal() -> bool:
    """Whether stderr is a terminal: progress bars are drawn only then."""
    return sys.stderr.isatty()


def bar(total: int | None, desc: str, unit: str = "it", initial: int = 0) -> "tqdm":  # noqa: F821
    """A tqdm bar on stderr for a step with a known count; disabled (drawing nothing) off a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, leave=False,
                dynamic_ncols=True, disable=not on_terminal())
