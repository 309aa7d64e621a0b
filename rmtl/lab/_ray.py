"""Ray, an optional dependency: importing it with a message that says how to install it, and
connecting to a cluster from the directory that holds this rmtl (the executor that runs jobs
as Ray tasks is :class:`rmtl.lab.executors.RayExecutor`)."""

from __future__ import annotations

import os
from typing import Any, Optional

INSTALL = "pip install 'rmtl[ray]' (that is ray[default,tune])"
# the directory that holds the rmtl package this process runs
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RETRIES = 3  # a job whose worker process or node dies is run again, at most this often


def require() -> Any:
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            f"Ray is not installed; it is an optional extra of rmtl: {INSTALL}"
        ) from e
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
