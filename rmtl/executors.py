"""Where an experiment's jobs run: in this process one after another, in N local worker
processes, on any ``concurrent.futures.Executor``, or on a Ray cluster.

:func:`run_graph` submits every job whose inputs are ready, in the graph's order, and
collects outputs as they finish; the executor decides only where and when a job runs, never
what it computes (each job's randomness comes from its own seed).
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from . import _threads
from .jobs import Job, JobOutput, Settings, Splits, run

__all__ = ["ExecutorSpec", "backend", "run_graph"]

ExecutorSpec = Union[None, int, str, cf.Executor]


class Backend:
    """Runs jobs: ``submit`` returns a future of the :class:`JobOutput`; ``handle`` turns a
    finished future into what dependent jobs receive; ``capacity`` jobs are in flight at once."""

    capacity: int = 1 << 30
    threads: Optional[int] = None

    def submit(self, job: Job, settings: Settings, inputs: Sequence[Any]) -> cf.Future:
        """Start ``job`` with the handles of its inputs (in ``job.deps`` order)."""
        raise NotImplementedError

    def handle(self, future: cf.Future) -> Any:
        """What jobs depending on the finished ``future`` receive: its output here."""
        return future.result()

    def close(self) -> None:
        """Release workers (cancelling what has not started)."""


class Inline(Backend):
    """Each job runs in this process when submitted: the serial run."""

    capacity = 1

    def __init__(self, data: Splits, threads: Optional[int]) -> None:
        self.data, self.threads = data, threads

    def submit(self, job: Job, settings: Settings, inputs: Sequence[Any]) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(run(job, settings, self.data, inputs))
        return future


class Pool(Backend):
    """A ``concurrent.futures.Executor``: ours (N spawned processes that receive the data once,
    when they start; ``data`` None) or the caller's (``data`` travel with every job)."""

    def __init__(self, executor: cf.Executor, data: Optional[Splits], threads: Optional[int],
                 capacity: Optional[int] = None, own: bool = False) -> None:
        self.executor, self.data, self.threads, self.own = executor, data, threads, own
        if capacity is not None:
            self.capacity = capacity

    def submit(self, job: Job, settings: Settings, inputs: Sequence[Any]) -> cf.Future:
        if self.data is None:
            return self.executor.submit(_run_on_worker_data, job, settings, list(inputs))
        return self.executor.submit(run, job, settings, self.data, list(inputs))

    def close(self) -> None:
        if self.own:
            self.executor.shutdown(wait=True, cancel_futures=True)


_WORKER_DATA: Optional[Splits] = None


def _keep_worker_data(data: Splits) -> None:
    global _WORKER_DATA
    _WORKER_DATA = data


def _run_on_worker_data(job: Job, settings: Settings, inputs: Sequence[JobOutput]) -> JobOutput:
    assert _WORKER_DATA is not None, "worker started without data"
    return run(job, settings, _WORKER_DATA, inputs)


def backend(executor: ExecutorSpec, data: Splits, threads_per_job: Optional[int]) -> Backend:
    """The backend for ``executor`` (see :func:`rmtl.experiment`)."""
    if threads_per_job is not None and threads_per_job < 1:
        raise ValueError(f"threads_per_job: expected >= 1 or None, got {threads_per_job}")
    if executor is None:
        return Inline(data, threads_per_job)
    if isinstance(executor, bool) or not isinstance(executor, (int, str, cf.Executor)):
        raise TypeError(f"executor: expected None, a number of processes, a concurrent.futures.Executor or "
                        f"'ray', got {executor!r}")
    if isinstance(executor, int):
        if executor < 1:
            raise ValueError(f"executor: expected at least 1 worker process, got {executor}")
        threads = threads_per_job or max(1, _threads.available_cores() // executor)
        # spawned, not forked: rmtl's pool survives a fork, but a fork of a process whose other
        # libraries ran OpenMP loops (torch's) can hang in the child
        pool = cf.ProcessPoolExecutor(executor, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_keep_worker_data, initargs=(data,))
        return Pool(pool, None, threads, capacity=executor, own=True)
    if isinstance(executor, str):
        if executor != "ray":
            raise ValueError(f"executor: expected 'ray' as the only string, got {executor!r}")
        from ._ray import RayBackend

        return RayBackend(data, threads_per_job or 1)
    return Pool(executor, data, threads_per_job)


def run_graph(jobs: Sequence[Job], settings: Settings, runner: Backend,
              on_done: Optional[Callable[[Job, Dict[Job, JobOutput]], None]] = None) -> Dict[Job, JobOutput]:
    """Run ``jobs`` (a graph: every job's deps come before it) and return every output.

    Ready jobs are submitted in list order up to the backend's capacity; ``on_done(job,
    outputs)`` is called in this process as each job finishes. A failure (or Ctrl-C) cancels
    the jobs not yet started and is raised."""
    outputs: Dict[Job, JobOutput] = {}
    handles: Dict[Job, Any] = {}
    running: Dict[cf.Future, Job] = {}
    waiting: List[Job] = list(jobs)
    # bars from many workers would interleave: only a serial run shows them
    settings = dataclasses.replace(settings, threads=runner.threads,
                                   progress=settings.progress and isinstance(runner, Inline))
    try:
        while waiting or running:
            for job in [j for j in waiting if all(d in outputs for d in j.deps)]:
                if len(running) >= runner.capacity:
                    break
                waiting.remove(job)
                running[runner.submit(job, settings, [handles[d] for d in job.deps])] = job
            if not running:
                missing = sorted({d.key for j in waiting for d in j.deps} - {j.key for j in jobs})
                raise ValueError(f"jobs: inputs {missing} are not in the graph")
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: jobs.index(running[f])):
                job = running.pop(future)
                outputs[job], handles[job] = future.result(), runner.handle(future)
                if on_done is not None:
                    on_done(job, outputs)
    finally:
        for future in running:
            future.cancel()
        runner.close()
    return outputs
