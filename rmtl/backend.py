"""Which matrix-multiply path the C core uses, and how many threads the core and it run on."""

from __future__ import annotations

import operator
import os

import numpy as np

from . import _core


def blas_info() -> dict:
    """Describe the active sgemm.

    Returns
    -------
    dict
        ``backend`` (``"blas"``: SciPy's BLAS ``sgemm`` taken from
        ``scipy.linalg.cython_blas``; ``"builtin"``: rmtl's blocked C kernel),
        ``blas_available`` (whether SciPy's sgemm could be loaded), ``forced_builtin``
        (``RMTL_BLAS=builtin`` was set at import), ``address_space_limited`` (the process
        ran under an address-space limit, ``ulimit -v``, at import: the default is then
        ``"builtin"``, because OpenBLAS hangs, retrying forever, when it cannot map the buffer
        a new calling thread needs, where the built-in kernel raises MemoryError) and
        ``blas_per_thread`` (the BLAS is an OpenBLAS whose thread count rmtl can hold at 1
        while its products run: then rmtl splits large products over its own thread pool,
        each part one single-threaded call).

    Notes
    -----
    Under an address-space limit ``import rmtl`` also has NumPy's own BLAS map the work
    buffers of its threads at once (one small matrix product): an OpenBLAS that cannot map
    them later, when memory has run out, ends the whole process with status 1 instead of
    raising, while NumPy's own allocations raise MemoryError, which rmtl reports.
    """
    return {
        "backend": _core.gemm_backend(),
        "blas_available": bool(_core.blas_available),
        "forced_builtin": os.environ.get("RMTL_BLAS") == "builtin",
        "address_space_limited": bool(_core.address_space_limited),
        "blas_per_thread": bool(_core.blas_per_thread),
    }


def set_gemm_backend(name: str) -> None:
    """Switch the matrix-multiply path for the whole process.

    Parameters
    ----------
    name : "blas" or "builtin"
        The path.

    Notes
    -----
    Both give the same results to float32 rounding; ``"builtin"`` exists as a fallback and
    as the oracle the tests compare BLAS with. Set ``RMTL_BLAS=builtin`` in the environment
    to start with the fallback; under an address-space limit (``ulimit -v``) it is the
    default (:func:`blas_info`), and ``"blas"`` there risks a hang when memory runs out. A
    switch while another thread is inside a call of the core (training, prediction, a
    critic step) raises RuntimeError: a call runs on one path from start to end; switch
    between calls.
    """
    _core.set_gemm_backend(name)


def _blas_controllers() -> list:
    """threadpoolctl's controllers of the BLAS the core's products run on when it cannot be
    told per thread (not OpenBLAS): SciPy's own copy, or every BLAS when SciPy links a shared
    system one."""
    from threadpoolctl import ThreadpoolController

    blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    scipy_own = [c for c in blas if "scipy" in os.path.basename(os.path.dirname(c.filepath))]
    return scipy_own or blas


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for rmtl's loops and matrix products.

    Parameters
    ----------
    n : int
        Any integer (``numpy.int64`` included) from 1 to the pool's maximum,
        ``rmtl._core.max_threads`` (256); anything else raises ValueError.

    Raises
    ------
    ValueError
        When ``n`` is not an integer (a bool included: ``True`` is refused) or is outside
        1 to ``rmtl._core.max_threads``.

    Notes
    -----
    Both run on rmtl's own thread pool (``n - 1`` workers beside the calling thread, started
    on first use; idle workers sleep), which large products split into parts that each call
    the BLAS on one thread. SciPy's OpenBLAS is held at 1 thread while rmtl's products run
    and put back to its own count after them, so its splits cannot change rmtl's bits
    (numpy's BLAS is not touched). Where the BLAS cannot be told so (not OpenBLAS, or an
    OpenMP OpenBLAS), SciPy's BLAS is set to ``n`` threads too and splits the products itself.
    Process-wide and effective at once, from any thread, also while another thread trains
    (the change waits for the parallel loop running then); ``torch.set_num_threads``
    likewise. One thread per worker is what scale-out needs; the results do not depend on
    ``n`` (same seed, same bits for any thread count). The default is ``OMP_NUM_THREADS``,
    else the cores the process may run on.
    """
    try:
        count = operator.index(n)
    except TypeError:
        count = None
    most = _core.max_threads
    if isinstance(n, bool) or count is None or not 1 <= count <= most:
        raise ValueError(f"n: expected an integer 1..{most} (the pool's maximum), got {n!r}")
    n = count
    _core.set_num_threads(n)
    if not _core.blas_per_thread:
        for c in _blas_controllers():
            c.set_num_threads(n)


def get_num_threads() -> int:
    """The thread count of rmtl's loops and products (see :func:`set_num_threads`).

    Returns
    -------
    int
    """
    return _core.get_num_threads()


def _reserve_numpy_blas() -> None:
    """Have NumPy's BLAS map the work buffers of all its threads now (OpenBLAS keeps them for
    later calls), while the address space is still free: see :func:`blas_info`."""
    a = np.ones((256, 256))
    a @ a


if _core.address_space_limited:
    _reserve_numpy_blas()
