"""Ray as an executor: the data go into the object store once and every task reads them
zero-copy; one task per job, reserving as many CPUs as the job runs threads; a task whose
worker dies is retried."""
from __future__ import annotations

import concurrent.futures as cf
import os
from typing import Any, Dict, Optional, Sequence

from .graph import Executor, Job, JobOutput, Settings, Splits, execute

INSTALL = "pip install 'rmtl[ray]' (that is ray[default,tune])"
# the directory that holds the rmtl package this process runs
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RETRIES = 3  # a job whose worker process or node dies is run again, at most this often


def require() -> Any:
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"Ray is not installed; it is an optional extra of rmtl: {INSTALL}") from e
    return ray


def connect(address: Optional[str] = None) -> Any:
    """``ray`` connected to a cluster: the one already joined, ``address`` (``auto``,
    ``ray://host:10001``, ``host:6379``), ``$RAY_ADDRESS``, or a new local one."""
    ray = require()
    if not ray.is_initialized():
        init(address=address)
    return ray


def init(**kwargs: Any) -> None:
    """``ray.init(**kwargs)`` started from the directory that holds the rmtl this process runs.

    Ray puts the driver's working directory first on every worker's ``sys.path``; started
    from a source checkout (whose ``rmtl/`` has no built core), the workers would import
    that instead of the installed package the driver uses."""
    here = os.getcwd()
    os.chdir(_ROOT)
    try:
        require().init(**kwargs)
    finally:
        os.chdir(here)


def _task(job: Job, settings: Settings, data: Splits, *inputs: JobOutput) -> JobOutput:
    return execute(job, settings, data, inputs)


class RayExecutor(Executor):
    """Jobs as Ray tasks; dependent jobs receive their inputs as object references, so outputs
    go from worker to worker without passing through this process."""

    def __init__(self, data: Splits, threads: int) -> None:
        self.ray = connect()
        self.threads = threads
        self.data = self.ray.put(data)
        self.task = self.ray.remote(max_retries=RETRIES)(_task).options(num_cpus=threads)
        self.refs: Dict[cf.Future, Any] = {}

    def submit(self, job: Job, settings: Settings, inputs: Sequence[Any]) -> cf.Future:
        ref = self.task.remote(job, settings, self.data, *inputs)
        future = ref.future()
        self.refs[future] = ref
        return future

    def handle(self, future: cf.Future) -> Any:
        return self.refs.pop(future)

    def close(self) -> None:
        for ref in self.refs.values():
            self.ray.cancel(ref)
        self.refs.clear()
