"""Where an experiment's jobs run: in this process one after another, in N local worker
processes, on any ``concurrent.futures.Executor``, or on a Ray cluster.

:func:`run_graph` submits every job whose inputs are ready, in the graph's order, and
collects outputs as they finish; the executor decides only where and when a job runs, never
what it computes (each job's randomness comes from its own seed).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Sequence
from typing import Any, Optional, Union

from . import _threads
from ._ray import RETRIES, connect
from .graph import Executor, Job, JobOutput, Settings, Splits, Work

__all__ = ["ExecutorSpec", "SerialExecutor", "FuturesExecutor", "RayExecutor", "executor_for"]

ExecutorSpec = Union[None, int, str, cf.Executor]

# the most local worker processes: each holds a copy of the data and of the interpreter, so
# far fewer are ever useful; more is a typo (and beyond a C int, an OverflowError deep inside
# multiprocessing)
MAX_PROCESSES = 256


class SerialExecutor(Executor):
    """Each job runs in this process when submitted: the serial run."""

    capacity = 1

    def __init__(self, work: Work, data: Splits, threads: Optional[int]) -> None:
        self.work, self.data, self.threads = work, data, threads

    def submit(self, job: Job, settings: Settings, inputs: Sequence[Any]) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(self.work(job, settings, self.data, inputs))
        return future


class FuturesExecutor(Executor):
    """A ``concurrent.futures.Executor``: ours (N spawned processes that receive the data once,
    when they start; ``data`` None) or the caller's (``data`` travel with every job)."""

    def __init__(
        self,
        work: Work,
        executor: cf.Executor,
        data: Optional[Splits],
        threads: Optional[int],
        capacity: Optional[int] = None,
        own: bool = False,
    ) -> None:
        self.work, self.executor, self.data, self.threads, self.own = (
            work,
            executor,
            data,
            threads,
            own,
        )
        if capacity is not None:
            self.capacity = capacity

    def submit(self, job: Job, settings: Settings, inputs: Sequence[Any]) -> cf.Future:
        if self.data is None:
            return self.executor.submit(_run_on_worker_data, self.work, job, settings, list(inputs))
        return self.executor.submit(self.work, job, settings, self.data, list(inputs))

    def close(self) -> None:
        if self.own:
            self.executor.shutdown(wait=True, cancel_futures=True)


_WORKER_DATA: Optional[Splits] = None


def _keep_worker_data(data: Splits) -> None:
    global _WORKER_DATA
    _WORKER_DATA = data


def _run_on_worker_data(
    work: Work, job: Job, settings: Settings, inputs: Sequence[JobOutput]
) -> JobOutput:
    assert _WORKER_DATA is not None, "worker started without data"
    return work(job, settings, _WORKER_DATA, inputs)


def executor_for(
    executor: ExecutorSpec, work: Work, data: Splits, threads_per_job: Optional[int]
) -> Executor:
    """The :class:`Executor` for ``executor`` (see :func:`rmtl.experiment`) that runs each
    job as ``work(job, settings, data, inputs)`` (:func:`rmtl.lab.units.execute`; a
    module-level function, so worker processes and Ray can receive it)."""
    if threads_per_job is not None and threads_per_job < 1:
        raise ValueError(f"threads_per_job: expected >= 1 or None, got {threads_per_job}")
    if executor is None:
        return SerialExecutor(work, data, threads_per_job)
    if isinstance(executor, bool) or not isinstance(executor, (int, str, cf.Executor)):
        raise TypeError(
            f"executor: expected None, a number of processes, a concurrent.futures.Executor or "
            f"'ray', got {executor!r}"
        )
    if isinstance(executor, int):
        if not 1 <= executor <= MAX_PROCESSES:
            raise ValueError(
                f"executor: expected 1 to {MAX_PROCESSES} worker processes, got {executor}"
            )
        threads = threads_per_job or max(1, _threads.available_cores() // executor)
        # spawned, not forked: rmtl's pool survives a fork, but a fork of a process whose other
        # libraries ran OpenMP loops (torch's) can hang in the child
        pool = cf.ProcessPoolExecutor(
            executor,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_keep_worker_data,
            initargs=(data,),
        )
        return FuturesExecutor(work, pool, None, threads, capacity=executor, own=True)
    if isinstance(executor, str):
        if executor != "ray":
            raise ValueError(f"executor: expected 'ray' as the only string, got {executor!r}")
        return RayExecutor(work, data, threads_per_job or 1)
    return FuturesExecutor(work, executor, data, threads_per_job)


def _task(work: Work, job: Job, settings: Settings, data: Splits, *inputs: JobOutput) -> JobOutput:
    return work(job, settings, data, inputs)


class RayExecutor(Executor):
    """Jobs as Ray tasks; dependent jobs receive their inputs as object references, so outputs
    go from worker to worker without passing through this process."""

    def __init__(self, work: Work, data: Splits, threads: int) -> None:
        self.ray, self.work = connect(), work
        self.threads = threads
        self.data = self.ray.put(data)
        self.task = self.ray.remote(max_retries=RETRIES)(_task).options(num_cpus=threads)
        self.refs: dict[cf.Future, Any] = {}

    def submit(self, job: Job, settings: Settings, inputs: Sequence[Any]) -> cf.Future:
        ref = self.task.remote(self.work, job, settings, self.data, *inputs)
        future = ref.future()
        self.refs[future] = ref
        return future

    def handle(self, future: cf.Future) -> Any:
        return self.refs.pop(future)

    def close(self) -> None:
        for ref in self.refs.values():
            self.ray.cancel(ref)
        self.refs.clear()
