"""Which matrix-multiply path the C core uses."""
from __future__ import annotations

import os

from . import _core


def blas_info() -> dict:
    """Describe the active sgemm.

    Returns a dict with ``backend`` (``"blas"``: SciPy's BLAS ``sgemm`` taken from
    ``scipy.linalg.cython_blas``; ``"builtin"``: rmtl's blocked C kernel),
    ``blas_available`` (whether SciPy's sgemm could be loaded), ``forced_builtin``
    (``RMTL_BLAS=builtin`` was set at import) and ``openmp`` (the core was built with
    OpenMP).
    """
    return {
        "backend": _core.gemm_backend(),
        "blas_available": bool(_core.blas_available),
        "forced_builtin": os.environ.get("RMTL_BLAS") == "builtin",
        "openmp": bool(_core.openmp),
    }


def set_gemm_backend(name: str) -> None:
    """Switch the matrix-multiply path for the whole process: ``"blas"`` or ``"builtin"``.

    Both give the same results to float32 rounding; ``"builtin"`` exists as a fallback and
    as the oracle the tests compare BLAS with. Set ``RMTL_BLAS=builtin`` in the environment
    to start with the fallback.
    """
    _core.set_gemm_backend(name)
