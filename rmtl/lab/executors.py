"""Where an experiment's jobs run: in this process one after another, in N local worker
processes, on any ``concurrent.futures.Executor``, or on a Ray cluster.

:func:`run_graph` submits every job whose inputs are ready, in the graph's order, and
collects outputs as they finish; the executor decides only where and when a job runs, never
what it computes (each job's randomness comes from its own seed).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import ctypes.util
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import context as mp_context
from multiprocessing import popen_spawn_posix, reduction, resource_tracker, spawn, util
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

# how often a worker checks that the process that started it is still alive
PARENT_POLL = 0.5

MAIN_GUARD = (
    'scripts that use executor=N need `if __name__ == "__main__":` around the call '
    "(multiprocessing's spawn start method re-imports the script in every worker)"
)


class SerialExecutor(Executor):
    """Each job runs in this process when submitted: the serial run.

    Parameters
    ----------
    work : Work
        What runs one job (:func:`rmtl.lab.units.execute`).
    data : tuple of SessionData
        The (train, valid, test) splits every job reads.
    threads : int or None
        Threads each job runs with (None: as the process is set).
    """

    capacity = 1

    def __init__(self, work: Work, data: Splits, threads: Optional[int]) -> None:
        self.work, self.data, self.threads = work, data, threads

    def submit(self, job: Job, settings: Settings, inputs: Sequence[Any]) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(self.work(job, settings, self.data, inputs))
        return future


class FuturesExecutor(Executor):
    """A ``concurrent.futures.Executor``: ours (N spawned processes that receive the data once,
    when they start; ``data`` None) or the caller's (``data`` travel with every job).

    Ours (``own``) raises a clear error when a worker dies (at start-up, as in a script without
    a main guard, or later) instead of hanging, and while it runs a SIGTERM of this process
    (from the main thread, where no handler was set) terminates its workers and exits 143.

    Parameters
    ----------
    work : Work
        What runs one job (:func:`rmtl.lab.units.execute`, a module-level function).
    executor : concurrent.futures.Executor
        Where jobs run.
    data : tuple of SessionData or None
        The (train, valid, test) splits sent with every job; None when the workers already
        hold them (ours).
    threads : int or None
        Threads each job runs with (None: as the worker is set).
    capacity : int, optional
        Jobs in flight at once (None: no limit but the graph's).
    own : bool, default False
        Whether ``executor`` is ours (:func:`executor_for` started it): its workers' deaths
        are reported clearly, SIGTERM terminates them, and :meth:`close` shuts it down.
    """

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
        self.sigterm: Any = None
        if own and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                self.sigterm = signal.signal(signal.SIGTERM, _terminated)

    def submit(self, job: Job, settings: Settings, inputs: Sequence[Any]) -> cf.Future:
        try:
            if self.data is None:
                return self.executor.submit(
                    _run_on_worker_data, self.work, job, settings, list(inputs)
                )
            return self.executor.submit(self.work, job, settings, self.data, list(inputs))
        except BrokenProcessPool as e:
            raise self._died(e) from e

    def result(self, future: cf.Future) -> JobOutput:
        try:
            return future.result()
        except BrokenProcessPool as e:
            raise self._died(e) from e

    def _died(self, error: BaseException) -> BaseException:
        if not self.own:
            return error
        return RuntimeError(
            "a worker process died (at start-up, or killed while running a job, e.g. for "
            f"memory); {MAIN_GUARD}"
        )

    def close(self) -> None:
        if not self.own:
            return
        try:
            if sys.exc_info()[0] is _Terminated:
                _terminate_workers(self.executor)
            self.executor.shutdown(wait=True, cancel_futures=True)
        finally:
            if self.sigterm is not None:
                signal.signal(signal.SIGTERM, self.sigterm)
                self.sigterm = None


class _Terminated(SystemExit):
    """SIGTERM while our worker processes run: they are terminated and this process exits."""


def _terminated(signum: int, frame: Any) -> None:
    raise _Terminated(128 + signum)


def _terminate_workers(pool: cf.Executor) -> None:
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.terminate()
        except (OSError, ValueError):  # already gone
            pass


class _Popen(popen_spawn_posix.Popen):
    """multiprocessing's spawn, except that this process closes its copy of the child's end of
    the pipe before writing the child's arguments (the data) into it: a child that dies before
    reading them (a script without a main guard fails in its re-import) then breaks the pipe
    and raises here, where multiprocessing's own write blocks forever once the data fill the
    pipe."""

    def _launch(self, process_obj: Any) -> None:
        tracker_fd = resource_tracker.getfd()
        self._fds.append(tracker_fd)
        prep_data = spawn.get_preparation_data(process_obj._name)
        fp = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, fp)
            reduction.dump(process_obj, fp)
        finally:
            mp_context.set_spawning_popen(None)
        parent_r = child_w = child_r = parent_w = None
        try:
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            cmd = spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
            self._fds.extend([child_r, child_w])
            self.pid = util.spawnv_passfds(spawn.get_executable(), cmd, self._fds)
            self.sentinel = parent_r
            os.close(child_r)
            os.close(child_w)
            child_r = child_w = None
            try:
                with open(parent_w, "wb", closefd=False) as f:
                    f.write(fp.getbuffer())
            except BrokenPipeError:
                self.wait(10)  # reap it
                raise RuntimeError(f"a worker process died at start-up; {MAIN_GUARD}") from None
        finally:
            self.finalizer = util.Finalize(
                self, util.close_fds, [fd for fd in (parent_r, parent_w) if fd is not None]
            )
            for fd in (child_r, child_w):
                if fd is not None:
                    os.close(fd)


class _SpawnProcess(mp_context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _Popen(process_obj)


class _SpawnContext(mp_context.SpawnContext):
    Process = _SpawnProcess


_WORKER_DATA: Optional[Splits] = None


def _keep_worker_data(data: Splits, parent: Optional[int] = None) -> None:
    """A worker's initializer: keep the data, and exit when ``parent`` (the pid that started
    this worker) dies, so that no worker outlives it holding a copy of the data."""
    global _WORKER_DATA
    _WORKER_DATA = data
    if parent is not None:
        _exit_with_parent(parent)


_PR_SET_PDEATHSIG = 1


def _exit_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):  # the kernel kills us when the parent dies
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # died before we asked
        os._exit(1)

    def watch() -> None:  # everywhere, and where the signal was not set
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(1)

    threading.Thread(target=watch, name="rmtl-parent-watch", daemon=True).start()


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
    module-level function, so worker processes and Ray can receive it).

    Parameters
    ----------
    executor : None, int, "ray" or concurrent.futures.Executor
        None runs serially in this process; an int starts that many worker processes (1 to
        ``MAX_PROCESSES``); ``"ray"`` runs Ray tasks; an executor of the caller's is used as
        it is.
    work : Work
        What runs one job.
    data : tuple of SessionData
        The (train, valid, test) splits.
    threads_per_job : int or None
        Threads each job runs with, >= 1 (None: as the process is set for a serial run or
        the caller's executor, the cores shared out over our worker processes, 1 per Ray
        task).

    Returns
    -------
    Executor
        A :class:`SerialExecutor`, :class:`FuturesExecutor` or :class:`RayExecutor`.

    Raises
    ------
    TypeError
        When ``executor`` is a bool or none of None, an int, a str and a
        ``concurrent.futures.Executor``.
    ValueError
        When ``threads_per_job`` is below 1, ``executor`` is an int outside 1 to
        ``MAX_PROCESSES``, or a string other than ``"ray"``.
    """
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
            mp_context=_SpawnContext(),
            initializer=_keep_worker_data,
            initargs=(data, os.getpid()),
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
    go from worker to worker without passing through this process.

    Parameters
    ----------
    work : Work
        What runs one job (:func:`rmtl.lab.units.execute`).
    data : tuple of SessionData
        The (train, valid, test) splits, put into Ray's object store once.
    threads : int
        CPUs (and threads) each Ray task takes.
    """

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
