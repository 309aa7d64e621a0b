"""Turning user arrays into the exact dtypes and layouts the core reads, with errors that
name the argument and say what was expected."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

_INT32_MAX = np.iinfo(np.int32).max


def as_codes(x: Any, num_fields: int, name: str = "sparse") -> np.ndarray:
    """Categorical codes as C-contiguous int32 (n, num_fields); any integer dtype accepted.
    Checks that codes are non-negative and fit in int32; the C core checks each field's range
    ``[0, field_dims[f])``."""
    a = np.asarray(_detach(x))
    if a.dtype.kind not in "iu":
        raise TypeError(
            f"{name}: expected an integer array of categorical codes, got dtype {a.dtype}"
        )
    if a.ndim != 2 or a.shape[1] != num_fields:
        raise ValueError(f"{name}: expected shape (n, {num_fields}), got {a.shape}")
    if a.size:
        lo, hi = int(a.min()), int(a.max()) if a.dtype != np.int32 else 0
        if lo < 0 or hi > _INT32_MAX:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{name}: expected non-negative codes that fit in int32 (at most {_INT32_MAX}), "
                f"got {bad}"
            )
    return np.ascontiguousarray(a, dtype=np.int32)


def as_float(
    x: Any, shape: tuple, name: str, finite: bool = True, dtype: type = np.float32
) -> np.ndarray:
    """A real-valued array as C-contiguous float32 (or ``dtype``) of the given shape (-1: any
    size)."""
    a = np.asarray(_detach(x))
    if a.dtype.kind not in "iufb":
        raise TypeError(f"{name}: expected a real numeric array, got dtype {a.dtype}")
    if a.ndim != len(shape) or any(s >= 0 and s != d for s, d in zip(shape, a.shape)):
        want = "(" + ", ".join("n" if s < 0 else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {a.shape}")
    a = np.ascontiguousarray(a, dtype=dtype)
    if finite and a.size and not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinity; clean or impute it first")
    return a


def as_dense(x: Optional[Any], n: int, num_dense: int, name: str = "dense") -> np.ndarray:
    """Dense features as float32 (n, num_dense); None is allowed when num_dense == 0."""
    if x is None:
        if num_dense:
            raise ValueError(f"{name}: the model expects {num_dense} dense features, got None")
        return np.zeros((n, 0), np.float32)
    return as_float(x, (n, num_dense), name)


def as_labels(x: Any, n: int, num_tasks: int, name: str = "labels") -> np.ndarray:
    """0/1 labels as float32 (n, num_tasks)."""
    a = as_float(x, (n, num_tasks), name)
    if a.size and not np.isin(a, (0.0, 1.0)).all():
        bad = a[~np.isin(a, (0.0, 1.0))][0]
        raise ValueError(f"{name}: expected 0/1 labels, got {bad}")
    return a


def _detach(x: Any) -> Any:
    """Torch tensors and the like: take a CPU, gradient-free view before np.asarray."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return x


def run_offsets(ids: np.ndarray, name: str) -> np.ndarray:
    """CSR boundaries (int64) of the runs of equal values of the 1-D integer array ``ids``;
    ValueError naming ``name`` when an id forms more than one run."""
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    offsets = np.concatenate(([0], change, [len(ids)])).astype(np.int64)
    starts = ids[offsets[:-1]]
    if np.unique(starts).size != starts.size:
        dup = starts[np.flatnonzero(np.bincount(np.unique(starts, return_inverse=True)[1]) > 1)[0]]
        raise ValueError(
            f"{name}: the rows of session {dup} are not contiguous; sort rows by session"
        )
    return offsets
