"""The speed check `qdq quantize` ends with: the INT8 model against its FP32 original at batch 1 and 8,
a few interleaved runs each, on one real calibration sample (synthetic feeds without data)."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAX_SINGLE_RUN_S = 0.5  # auto mode: models whose FP32 batch-1 run takes longer are not checked
MAX_AUTO_BYTES = 200_000_000  # auto mode: larger FP32 files are not even loaded twice
MIN_SECONDS, MAX_RUNS = 0.2, 200  # fast models get more runs than ``runs``, up to this time per batch


@dataclass(frozen=True)
class SpeedResult:
    batch: int
    fp32_ms: float
    int8_ms: float

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms


@dataclass(frozen=True)
class SpeedCheck:
    results: list[SpeedResult]
    skipped: str | None = None  # why nothing (or not every batch) was measured

    @property
    def slower(self) -> list[SpeedResult]:
        return [r for r in self.results if r.speedup < 1.0]

    def line(self) -> str:
        """One line: the speed-ups, or a warning naming the batches where INT8 is slower."""
        if not self.results:
            return f"speed check skipped: {self.skipped}"
        shown = ", ".join(f"batch {r.batch} {r.speedup:.2f}x ({r.int8_ms:.2f} vs {r.fp32_ms:.2f} ms)"
                          for r in self.results)
        note = f"; {self.skipped}" if self.skipped else ""
        if self.slower:
            return (f"WARNING: the INT8 model is slower than FP32 ({shown}){note}: exclude the slow layers "
                    f"(qdq sensitivity, --exclude) or keep the model in float")
        return f"speed vs FP32: {shown}{note}"


def _session_options():  # noqa: ANN202
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle twin does not steal cores
    return opts


def _feeds_for(specs: Sequence, sample: Mapping[str, np.ndarray] | None, batch: int) -> dict[str, np.ndarray] | None:
    """``batch`` copies of the sample's first item (synthetic feeds without one); None if the model
    fixes its batch at another size."""
    from runtime.bench import check_batch
    from runtime.errors import InputError
    from runtime.synthetic import synthetic_feeds

    try:
        check_batch(specs, batch)
    except InputError:
        return None
    if sample is None:
        return synthetic_feeds(specs, batch=batch, sequence=128)
    return {s.name: np.repeat(np.asarray(sample[s.name])[:1], batch, axis=0) if s.rank else sample[s.name]
            for s in specs}


def check_speed(fp32: str | os.PathLike[str], int8: str | os.PathLike[str],
                sample: Mapping[str, np.ndarray] | None = None, batches: Sequence[int] = (1, 8), runs: int = 5,
                max_single_run_s: float | None = MAX_SINGLE_RUN_S) -> SpeedCheck:
    """Time both models at each batch, interleaved run by run; ``max_single_run_s``: skip (and say so)
    when one FP32 batch-1 run takes longer (None: always measure)."""
    from runtime import Engine
    from runtime.bench import benchmark_interleaved

    size = Path(fp32).stat().st_size
    if max_single_run_s is not None and size > MAX_AUTO_BYTES:
        return SpeedCheck([], f"the FP32 file has {size / 1e6:.0f} MB (--speed-check measures anyway)")
    with Engine.load(fp32, session_options=_session_options()) as ref, \
            Engine.load(int8, session_options=_session_options()) as cand:
        results, missing = [], []
        for batch in batches:
            feeds = _feeds_for(ref.input_specs, sample, batch)
            if feeds is None:
                missing.append(f"batch {batch} not measured: the model fixes its batch size")
                continue
            if max_single_run_s is not None and not results:
                t0 = time.perf_counter()
                ref.run(feeds)
                single = time.perf_counter() - t0
                if single > max_single_run_s:
                    return SpeedCheck([], f"one FP32 run takes {single:.1f}s (--speed-check measures anyway)")
            ref_run, cand_run = benchmark_interleaved([ref, cand], batch, feeds=feeds, runs=runs, warmup=1,
                                                      min_seconds=MIN_SECONDS, max_runs=MAX_RUNS)
            fp32_ms, int8_ms = ref_run.p50, cand_run.p50
            results.append(SpeedResult(batch, fp32_ms, int8_ms))
            log.info("speed check batch %d: FP32 %.2f ms, INT8 %.2f ms", batch, fp32_ms, int8_ms)
    return SpeedCheck(results, "; ".join(missing) or None)
