"""Progress display for long CLI steps that have no natural count (export, build)."""
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
    if not sys.stderr.isatty():
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
