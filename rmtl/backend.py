"""Which matrix-multiply path the C core uses, and how many threads the core and it run on."""

from __future__ import annotations

import os

from . import _core


def blas_info() -> dict:
    """Describe the active sgemm.

    Returns a dict with ``backend`` (``"blas"``: SciPy's BLAS ``sgemm`` taken from
    ``scipy.linalg.cython_blas``; ``"builtin"``: rmtl's blocked C kernel),
    ``blas_available`` (whether SciPy's sgemm could be loaded), ``forced_builtin``
    (``RMTL_BLAS=builtin`` was set at import) and ``blas_per_thread`` (the BLAS lets each
    thread set its own thread count, as OpenBLAS does: then rmtl splits large products over
    its own thread pool, each part on one thread).
    """
    return {
        "backend": _core.gemm_backend(),
        "blas_available": bool(_core.blas_available),
        "forced_builtin": os.environ.get("RMTL_BLAS") == "builtin",
        "blas_per_thread": bool(_core.blas_per_thread),
    }


def set_gemm_backend(name: str) -> None:
    """Switch the matrix-multiply path for the whole process: ``"blas"`` or ``"builtin"``.

    Both give the same results to float32 rounding; ``"builtin"`` exists as a fallback and
    as the oracle the tests compare BLAS with. Set ``RMTL_BLAS=builtin`` in the environment
    to start with the fallback.
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

    Both run on rmtl's own thread pool (``n - 1`` workers beside the calling thread, started
    on first use; idle workers sleep), which large products split into parts that each call
    the BLAS on one thread, so SciPy's and numpy's BLAS settings stay yours. Where the BLAS
    cannot be told per thread (not OpenBLAS), SciPy's BLAS is set to ``n`` threads too and
    splits the products itself. Process-wide and effective at once, from any thread
    (``torch.set_num_threads`` likewise). One thread per worker is what scale-out needs; the
    results do not depend on ``n`` (same seed, same bits for any thread count). The default
    is ``OMP_NUM_THREADS``, else the cores the process may run on."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    _core.set_num_threads(n)
    if not _core.blas_per_thread:
        for c in _blas_controllers():
            c.set_num_threads(n)


def get_num_threads() -> int:
    """The thread count of rmtl's loops and products (see :func:`set_num_threads`)."""
    return _core.get_num_threads()
