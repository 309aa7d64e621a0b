"""How many threads rmtl's loops and matrix products use inside one job: the single place
that sets it, for jobs run by worker processes or Ray tasks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Optional

from ..backend import get_num_threads, set_num_threads


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def limit(threads: Optional[int]) -> Iterator[None]:
    """Run the block with ``threads`` threads (:func:`rmtl.set_num_threads`; None: leave them
    as they are), restoring the previous count afterwards. With OpenBLAS or the builtin GEMM
    the results do not depend on it."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads: expected >= 1, got {threads}")
    before = get_num_threads()
    set_num_threads(int(threads))
    try:
        yield
    finally:
        set_num_threads(before)
