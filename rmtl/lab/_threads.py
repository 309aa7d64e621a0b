"""How many threads rmtl's loops and matrix products use inside one job: the single place
that sets it, for jobs run by worker processes or Ray tasks."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Optional

from ..backend import get_num_threads, set_num_threads


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# the blocks inside limit() in this process and the count before the first of them: jobs of
# a thread pool overlap, and each restoring the count it found would leave the last one's
# (the limit) in place
_lock = threading.Lock()
_inside = 0
_before = 0


@contextlib.contextmanager
def limit(threads: Optional[int]) -> Iterator[None]:
    """Run the block with ``threads`` threads (:func:`rmtl.set_num_threads`; None: leave them
    as they are); when the last block running in this process ends (jobs on a thread pool
    overlap), the count from before the first is restored. With OpenBLAS or the builtin GEMM
    the results do not depend on it."""
    global _inside, _before
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads: expected >= 1, got {threads}")
    with _lock:
        if _inside == 0:
            _before = get_num_threads()
        set_num_threads(int(threads))
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                set_num_threads(_before)
