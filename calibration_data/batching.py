"""Batch sizing shared by every reader: fixed batch axes, ``num_samples`` and chunking."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from runtime.specs import Dim, TensorSpec

from .errors import DataError

log = logging.getLogger(__name__)
T = TypeVar("T")


def fixed(dim: Dim) -> int | None:
    """The size of a dimension when it is fixed, else None."""
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def check_positive(name: str, value: object) -> None:
    """Raise DataError unless ``value`` is a positive int (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class BatchPlan:
    """How samples are grouped: ``batch_size`` per batch, at most ``num_samples`` in all."""

    batch_size: int
    num_samples: int | None
    drop_last: bool
    """True when the model fixes its batch axis, so a short last batch cannot be fed."""

    def batches(self, samples: Iterable[T], source: object) -> Iterator[list[T]]:
        """Group ``samples`` into lists of ``batch_size``, honouring ``num_samples`` and ``drop_last``."""
        it = iter(samples) if self.num_samples is None else islice(samples, self.num_samples)
        count = 0
        while chunk := list(islice(it, self.batch_size)):
            if len(chunk) < self.batch_size and self.drop_last:
                if not count:
                    raise DataError(f"no complete batch in {source}: {len(chunk)} sample(s), "
                                    f"but the model's batch axis is fixed at {self.batch_size}")
                log.warning("dropping last %d sample(s) of %s: the model's batch axis is fixed at %d",
                            len(chunk), source, self.batch_size)
                return
            count += 1
            yield chunk


def plan_batches(specs: Sequence[TensorSpec], batch_size: int, num_samples: int | None) -> BatchPlan:
    """Check the batching arguments against the specs; a fixed batch axis overrides ``batch_size``."""
    if not specs:
        raise DataError("the model has no inputs to feed (input_specs is empty)")
    check_positive("batch_size", batch_size)
    if num_samples is not None:
        check_positive("num_samples", num_samples)
    fixed_batches = {spec.name: fixed(spec.shape[0]) for spec in specs if spec.rank > 0 and fixed(spec.shape[0])}
    if len(set(fixed_batches.values())) > 1:
        raise DataError(f"inputs fix different batch sizes: {fixed_batches}")
    if not fixed_batches:
        return BatchPlan(batch_size, num_samples, drop_last=False)
    size = next(iter(fixed_batches.values()))
    if size != batch_size:
        log.warning("the model fixes its batch axis at %d (input %r); using batch_size=%d instead of %d",
                    size, next(iter(fixed_batches)), size, batch_size)
    if num_samples is not None and num_samples < size:
        raise DataError(f"num_samples={num_samples} is fewer than the batch of {size} that input "
                        f"{next(iter(fixed_batches))!r} fixes")
    return BatchPlan(size, num_samples, drop_last=True)
