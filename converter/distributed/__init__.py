"""Run embarrassingly parallel work (sensitivity variants, calibration shards, sweep models) locally or on Ray.

    from converter.distributed import make_executor
    with make_executor("ray", address="auto") as ex:
        scores = ex.map(score_variant, variants, context=job, label=str)
"""
from .executor import (DistributedError, Executor, LocalExecutor, RayExecutor, TaskFailedError, make_executor,
                       worker_cached)

__all__ = ["DistributedError", "Executor", "LocalExecutor", "RayExecutor", "TaskFailedError", "make_executor",
           "worker_cached"]
