"""``Executor.map(fn, items, context)``: the one abstraction the parallel stages use.

``fn(context, item)`` runs once per item. The ``context`` (a model, a calibration table, evaluation data)
is shared by every task: the Ray executor puts it into the object store once and each worker process
fetches it once (:func:`worker_cached`), so no task carries a pickled graph. Ray is imported lazily: the
local executor needs nothing beyond the base install.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ..errors import ConverterError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("local", "ray")
INSTALL_HINT = "pip install 'qdq[distributed]'"


class DistributedError(ConverterError):
    """The executor could not start (Ray missing, cluster unreachable) or lost a task for good."""


class TaskFailedError(DistributedError):
    """One task raised: the message names the item (layer, model, shard) and the worker that ran it."""

    def __init__(self, message: str, item: str = "", worker: str = "") -> None:
        super().__init__(message)
        self.item = item
        self.worker = worker


def _worker_label() -> str:
    """Where this code runs: the Ray node id and pid inside a Ray worker, else host and pid."""
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            return f"node {ctx.get_node_id()[:12]}, pid {os.getpid()}"
    except Exception:  # noqa: BLE001 - only a label
        pass
    return f"host {socket.gethostname()}, pid {os.getpid()}"


def _run_task(fn: Callable[[Any, Any], Any], context: Any, item: Any, label: str) -> Any:
    try:
        return fn(context, item)
    except TaskFailedError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the item and the worker named
        worker = _worker_label()
        first = (str(exc).strip().splitlines() or [""])[0]
        raise TaskFailedError(f"{label} failed on {worker}: {type(exc).__name__}: {first}", label, worker) from exc


class Executor:
    """Maps ``fn(context, item)`` over items, results in item order."""

    name = "?"

    @property
    def parallelism(self) -> int:
        """How many tasks run at once (how many shards a sharded stage cuts its data into)."""
        return 1

    def map(self, fn: Callable[[Any, T], R], items: Iterable[T], context: Any = None,
            label: Callable[[T], str] = str, on_result: Callable[[int], None] | None = None) -> list[R]:
        """``[fn(context, item) for item in items]``; ``on_result(index)`` is called as each one finishes."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor started."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """In this process, one item after the other: the reference every other executor must equal."""

    name = "local"

    def map(self, fn: Callable[[Any, T], R], items: Iterable[T], context: Any = None,
            label: Callable[[T], str] = str, on_result: Callable[[int], None] | None = None) -> list[R]:
        results = []
        for index, item in enumerate(items):
            results.append(_run_task(fn, context, item, label(item)))
            if on_result:
                on_result(index)
        return results


_WORKER_CACHE: dict[str, Any] = {}


class _Shared:
    """A job's context in the object store; Ray does not fetch object references nested in an argument,
    so each task carries this small handle and :func:`worker_cached` fetches once per worker."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref


def worker_cached(context: Any) -> Any:
    """The context object: fetched from the object store once per worker process, then reused.

    Anything but a Ray executor's handle is returned as it is (the local executor passes the object itself).
    """
    if isinstance(context, _Shared):
        key = context.ref.hex()
        if key not in _WORKER_CACHE:
            import ray

            _WORKER_CACHE.clear()  # one job's context at a time per worker: bounded memory
            _WORKER_CACHE[key] = ray.get(context.ref)
        return _WORKER_CACHE[key]
    return context


def _ray_task(fn: Callable[[Any, Any], Any], context: Any, item: Any, label: str) -> Any:
    return _run_task(lambda ctx, it: fn(worker_cached(ctx), it), context, item, label)


class RayExecutor(Executor):
    """Tasks on a Ray cluster (``address``), or on a local Ray started here when there is none.

    ``max_parallel`` caps the tasks in flight (default: as many as the cluster has CPUs for);
    ``max_retries``: how often a task whose worker process died is re-run (Ray's task retries;
    a task that raises is not retried, its error is re-raised naming the item and the worker).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_parallel: int | None = None,
                 max_retries: int = 3, cpus_per_task: float = 1) -> None:
        try:
            import ray
        except ImportError:
            raise DistributedError(f"--executor ray needs Ray: {INSTALL_HINT}") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            # joining a cluster takes its resources as they are; a local Ray gets ours
            kwargs: dict[str, Any] = ({"address": address} if address else
                                      {"num_cpus": num_cpus, "include_dashboard": False})
            try:
                ray.init(**kwargs, log_to_driver=False, configure_logging=False)
            except Exception as exc:  # noqa: BLE001 - connection errors come in many types
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise DistributedError(f"could not start {where}: {type(exc).__name__}: {exc}") from None
            self._started = True
        self.max_parallel = max_parallel
        self.max_retries = max_retries
        self._remote = ray.remote(max_retries=max_retries, num_cpus=cpus_per_task)(_ray_task)

    @property
    def parallelism(self) -> int:
        return self.max_parallel or max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable[[Any, T], R], items: Iterable[T], context: Any = None,
            label: Callable[[T], str] = str, on_result: Callable[[int], None] | None = None) -> list[R]:
        ray = self._ray
        items = list(items)
        ctx = _Shared(ray.put(context))  # once; tasks get the reference, workers fetch it once each
        labels = [label(i) for i in items]
        limit = self.parallelism
        pending: dict[Any, int] = {}
        results: list[Any] = [None] * len(items)
        next_index = 0
        try:
            while next_index < len(items) or pending:
                while next_index < len(items) and len(pending) < limit:
                    ref = self._remote.remote(fn, ctx, items[next_index], labels[next_index])
                    pending[ref] = next_index
                    next_index += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                results[index] = self._get(done[0], labels[index])
                if on_result:
                    on_result(index)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        return results

    def _get(self, ref: Any, label: str) -> Any:
        from ray import exceptions as rex

        try:
            return self._ray.get(ref)
        except rex.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else None
            if isinstance(cause, TaskFailedError):
                raise TaskFailedError(str(cause), cause.item, cause.worker) from None
            # Ray's own failure around the task (e.g. its code or arguments cannot be loaded there)
            text = str(cause) if cause is not None else str(exc)
            lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
            worker = f"{getattr(exc, 'ip', '?')}, pid {getattr(exc, 'pid', '?')}"
            raise TaskFailedError(f"{label} failed on {worker}: {lines[-1] if lines else type(exc).__name__}",
                                  label, worker) from None
        except rex.RayError as exc:  # worker or node died more than max_retries times
            first = (str(exc).strip().splitlines() or [""])[0]
            raise TaskFailedError(f"{label} was lost after {self.max_retries} retries: {type(exc).__name__}: {first}",
                                  label) from None

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(kind: str = "local", address: str | None = None, **ray_options: Any) -> Executor:
    """``local`` or ``ray``; the Ray address defaults to ``RAY_ADDRESS`` (none: a local Ray is started)."""
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(address or os.environ.get("RAY_ADDRESS") or None, **ray_options)
    raise DistributedError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    """``items`` cut into at most ``parts`` contiguous, nearly equal, non-empty runs (order kept)."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for p in range(parts):
        stop = start + size + (1 if p < extra else 0)
        out.append(list(items[start:stop]))
        start = stop
    return out
