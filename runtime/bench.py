"""Latency and throughput measurement for any Engine."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .engine import Engine
from .errors import InputError
from .specs import TensorSpec
from .synthetic import synthetic_feeds


@dataclass
class BenchResult:
    batch: int
    sequence: int | None  # None when the model has no dynamic axis besides the batch
    runs: int
    latencies_ms: np.ndarray

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.latencies_ms, 90))

    @property
    def mean(self) -> float:
        return float(self.latencies_ms.mean())

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch * 1000.0 / self.p50

    def line(self) -> str:
        return (
            f"batch {self.batch:>3}  {'seq ' + format(self.sequence, '>4') if self.sequence else ' ' * 8}  p50 {self.p50:8.2f} ms  p90 {self.p90:8.2f} ms  "
            f"mean {self.mean:8.2f} ms  {self.throughput:9.1f} samples/s  ({self.runs} runs)"
        )

    def to_dict(self) -> dict:
        return {"batch": self.batch, "sequence": self.sequence, "runs": self.runs, "p50_ms": self.p50,
                "p90_ms": self.p90, "mean_ms": self.mean, "throughput": self.throughput}


def _axis0(spec: TensorSpec) -> int | None:
    """The fixed size of ``spec``'s first axis, None when it is dynamic (or the input is a scalar)."""
    d = spec.shape[0] if spec.rank else None
    return d if isinstance(d, int) and d >= 0 else None


def check_batch(specs: Sequence[TensorSpec], batch: int) -> None:
    """Raise InputError unless the model can run ``batch`` (a model whose inputs all fix the batch at 1
    cannot run 8: the feeds would silently hold 1)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch must be a positive integer, got {batch!r}")
    batched = [s for s in specs if s.rank]
    if not batched or any(_axis0(s) is None for s in batched):
        return  # some input has a dynamic batch axis: it takes any batch
    wrong = next((s for s in batched if _axis0(s) != batch), None)
    if wrong is not None:
        raise InputError(f"the model fixes the batch at {_axis0(wrong)} (input {wrong.describe()}); it cannot "
                         f"run batch {batch} (use --batch {_axis0(wrong)}, or export with a dynamic batch axis)")


def _fed_batch(specs: Sequence[TensorSpec], feeds: dict[str, np.ndarray], requested: int) -> int:
    """The batch the feeds really hold: axis 0 of the inputs with a dynamic batch, else of the fixed ones."""
    dynamic = [feeds[s.name].shape[0] for s in specs if s.rank and _axis0(s) is None]
    fixed = [feeds[s.name].shape[0] for s in specs if s.rank and _axis0(s) is not None]
    return (dynamic or fixed or [requested])[0]


def benchmark(engine: Engine, batch: int = 1, sequence: int = 128, runs: int = 50, warmup: int = 5,
              max_seconds: float | None = None, seed: int = 0,
              on_run: Callable[[], object] | None = None) -> BenchResult:
    """Time ``engine.run`` on synthetic feeds of the given batch and sequence length.

    Raises InputError when the model's fixed batch axis cannot take ``batch``; ``on_run`` is called
    after each timed run (a progress bar's update).
    """
    check_batch(engine.input_specs, batch)
    feeds = synthetic_feeds(engine.input_specs, batch=batch, sequence=sequence, seed=seed)
    engine.warmup(feeds, runs=warmup)
    times = []
    start = time.perf_counter()
    for _ in range(runs):
        t0 = time.perf_counter()
        engine.run(feeds)
        times.append((time.perf_counter() - t0) * 1000.0)
        if on_run is not None:
            on_run()
        if max_seconds is not None and time.perf_counter() - start > max_seconds and len(times) >= 3:
            break
    has_sequence = any(not isinstance(d, int) for s in engine.input_specs for d in s.shape[1:])
    return BenchResult(_fed_batch(engine.input_specs, feeds, batch), sequence if has_sequence else None, len(times), np.asarray(times))


def benchmark_interleaved(engines: list[Engine], batch: int = 1, sequence: int = 128, runs: int = 50,
                          warmup: int = 5, seed: int = 0,
                          on_run: Callable[[], object] | None = None, feeds: dict[str, np.ndarray] | None = None,
                          min_seconds: float = 0.0, max_runs: int | None = None) -> list[BenchResult]:
    """Time several engines on the same feeds, alternating run by run so machine noise hits all alike.

    ``feeds``: the inputs to time (default: synthetic ones of ``batch`` and ``sequence``). After ``runs``
    rounds, more are run while less than ``min_seconds`` have passed, up to ``max_runs`` (fast models).
    Create ONNX Runtime sessions with ``session.intra_op.allow_spinning=0`` for this: otherwise the idle
    sessions' threads spin and slow the one being timed.
    """
    for eng in engines:
        check_batch(eng.input_specs, batch)
    if feeds is None:
        feeds = synthetic_feeds(engines[0].input_specs, batch=batch, sequence=sequence, seed=seed)
    for eng in engines:
        eng.warmup(feeds, runs=warmup)
    times: list[list[float]] = [[] for _ in engines]
    limit = max(runs, max_runs or runs)
    start, done = time.perf_counter(), 0
    while done < runs or (done < limit and time.perf_counter() - start < min_seconds):
        done += 1
        for eng, bucket in zip(engines, times):
            t0 = time.perf_counter()
            eng.run(feeds)
            bucket.append((time.perf_counter() - t0) * 1000.0)
        if on_run is not None:
            on_run()
    has_sequence = any(not isinstance(d, int) for s in engines[0].input_specs for d in s.shape[1:])
    return [BenchResult(_fed_batch(engines[0].input_specs, feeds, batch), sequence if has_sequence else None, done, np.asarray(t)) for t in times]
