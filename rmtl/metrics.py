"""Metrics computed in C: AUC (equal to sklearn.metrics.roc_auc_score), logloss with
PyTorch's BCE semantics (each log clamped at -100), session logloss and GAUC, and the
oracle AUC and logloss of known true probabilities (synthetic data)."""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

from . import _core
from ._arrays import as_float, run_offsets

__all__ = [
    "auc",
    "logloss",
    "bce_rows",
    "session_logloss",
    "gauc",
    "oracle_auc",
    "oracle_logloss",
    "evaluate",
    "one_class",
    "UndefinedMetricWarning",
]


def _pair(y_true: Any, y_score: Any, name: str = "y_score", dtype: type = np.float32):
    s = as_float(y_score, (-1,), name, dtype=dtype)
    y = as_float(y_true, (s.shape[0],), "y_true")
    if s.size == 0:
        raise ValueError("y_true: expected at least one row, got 0")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true: expected 0/1 labels")
    return y, s


def _ranked(y_true: Any, y_score: Any):
    """Labels, and scores as float64 for ranking: float32 would merge scores that differ
    beyond its precision into ties, and turn scores past 3.4e38 into infinities."""
    return _pair(y_true, y_score, dtype=np.float64)


def auc(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve, equal to ``sklearn.metrics.roc_auc_score``.

    Parameters
    ----------
    y_true : array (n,)
        0/1 labels.
    y_score : array (n,)
        Scores; tied scores count one half; scores are ranked at their own precision
        (float64 scores exactly).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        When only one class is present (the AUC is undefined), like scikit-learn.

    Examples
    --------
    >>> from rmtl.metrics import auc
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _ranked(y_true, y_score)
    return _core.auc(s, y)


def logloss(y_true: Any, y_prob: Any) -> float:
    """Mean binary cross-entropy, each log clamped at -100 (as ``torch.nn.BCELoss``).

    Parameters
    ----------
    y_true : array (n,)
        0/1 labels.
    y_prob : array (n,)
        Predicted probabilities.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        When ``y_true`` or ``y_prob`` is not a real numeric array.
    ValueError
        When there are no rows; ``y_prob`` is not 1-D or ``y_true`` not of its shape; a value
        is NaN or infinite; a label is not 0/1; or a probability is outside [0, 1].
    """
    y, p = _pair(y_true, y_prob, "y_prob")
    return _core.logloss(p, y)


def bce_rows(labels: Any, prob: Any) -> np.ndarray:
    """Per-row binary cross-entropy, each log clamped at -100 as :func:`logloss`.

    Parameters
    ----------
    labels : array
        0/1 labels.
    prob : array
        Predicted probabilities, the same shape.

    Returns
    -------
    ndarray float64
        The shape of ``prob``; its mean over rows is the logloss.
    """
    y, p = np.asarray(labels, np.float64), np.asarray(prob, np.float64)
    with np.errstate(divide="ignore"):
        return -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))


def session_logloss(y_true: Any, y_prob: Any, sessions: Any) -> float:
    """Session logloss: the mean over sessions of each session's mean BCE.

    Parameters
    ----------
    y_true : array (n,)
        0/1 labels.
    y_prob : array (n,)
        Predicted probabilities.
    sessions : int array (n,)
        The session id of every row, as ``SessionData.session``; the rows of a session must
        be contiguous.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        When ``y_true`` or ``y_prob`` is not a real numeric array.
    ValueError
        When there are no rows; ``y_prob`` is not 1-D or ``y_true`` not of its shape; a value
        is NaN or infinite; a label is not 0/1; a probability is outside [0, 1];
        ``sessions`` is not an integer array of the same shape; or the rows of a session are
        not contiguous.
    """
    y, p = _pair(y_true, y_prob, "y_prob")
    s = np.asarray(sessions)
    if s.dtype.kind not in "iu" or s.shape != p.shape:
        raise ValueError(
            f"sessions: expected integer session ids of shape {p.shape}, got {s.dtype} {s.shape}"
        )
    return _core.logloss(p, y, run_offsets(s, "sessions"))


def gauc(y_true: Any, y_score: Any, groups: Any) -> float:
    """Group AUC: per-group (e.g. per-user) AUC weighted by the group's rows, over the
    groups that hold both classes.

    Parameters
    ----------
    y_true : array (n,)
        0/1 labels.
    y_score : array (n,)
        Scores.
    groups : int array (n,)
        The group id of every row (e.g. ``SessionData.user``).

    Returns
    -------
    float

    Raises
    ------
    TypeError
        When ``y_true`` or ``y_score`` is not a real numeric array.
    ValueError
        When there are no rows; ``y_score`` is not 1-D or ``y_true`` not of its shape; a
        value is NaN or infinite; a label is not 0/1; ``groups`` is not an integer array of
        the same shape; or no group holds both classes (the GAUC is undefined).
    """
    y, s = _ranked(y_true, y_score)
    g = np.asarray(groups)
    if g.dtype.kind not in "iu" or g.shape != s.shape:
        raise ValueError(
            f"groups: expected integer ids of shape {s.shape}, got {g.dtype} {g.shape}"
        )
    return _core.auc(s, y, np.ascontiguousarray(g, dtype=np.int64))


def oracle_auc(truth: Any) -> float:
    """Expected AUC of the scorer that knows the true probabilities ``truth`` (n,), when every
    label is an independent Bernoulli(truth_i).

    Computed exactly in O(n log n) as E[correctly ordered positive-negative pairs] /
    E[positive-negative pairs] = sum_{i != j} p_i (1 - p_j) ([p_i > p_j] + [p_i = p_j] / 2)
    / sum_{i != j} p_i (1 - p_j). This ratio of expectations is the AUC of the population the
    rows represent; the expected AUC of one draw of labels differs from it by O(1/n).

    Parameters
    ----------
    truth : array (n,)
        True probabilities (``SessionData.truth[:, k]``).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        When no positive-negative pair is possible.
    """
    return _core.oracle(as_float(truth, (-1,), "truth"), 0)


def oracle_logloss(truth: Any) -> float:
    """Expected logloss of predicting the true probabilities: the mean over rows of
    -(p log p + (1 - p) log(1 - p)) (each log clamped at -100, as :func:`logloss`).

    Parameters
    ----------
    truth : array (n,)
        True probabilities.

    Returns
    -------
    float
    """
    return _core.oracle(as_float(truth, (-1,), "truth"), 1)


def evaluate(
    model: Any,
    data: Any,
    batch_size: int = 16384,
    prob: Optional[np.ndarray] = None,
    warn: bool = True,
) -> dict[str, dict[str, float]]:
    """Per-task AUC, logloss, s-logloss (and GAUC when the data has user ids).

    Parameters
    ----------
    model : Backbone or object with ``predict(sparse, dense, batch_size)``
        The model scored (ignored when ``prob`` is given).
    data : SessionData
        The rows to score.
    batch_size : int
        Rows per prediction call.
    prob : array (n, T), optional
        Predictions already made, scored instead of the model's.
    warn : bool
        Warn about undefined metrics (below); False: silently.

    Returns
    -------
    dict
        ``{task_name: {metric: value}}`` with metrics ``auc``, ``logloss``, ``s_logloss``
        (and ``gauc``). A metric that is undefined on this data (a task with one class only)
        is NaN.

    Warns
    -----
    UndefinedMetricWarning
        For each NaN metric, saying which task and why.

    Examples
    --------
    >>> rmtl.evaluate(agent.backbone, test)["click"]["auc"]  # doctest: +SKIP
    0.7031
    """
    if prob is None:
        prob = model.predict(data.sparse, data.dense, batch_size=batch_size)
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(data.task_names):
        y, p = data.labels[:, k], np.ascontiguousarray(prob[:, k])
        row = {
            "auc": _or_nan(name, "AUC", warn, auc, y, p),
            "logloss": logloss(y, p),
            "s_logloss": session_logloss(y, p, data.session),
        }
        if data.user is not None:
            row["gauc"] = _or_nan(name, "GAUC", warn, gauc, y, p, data.user)
        out[name] = row
    return out


class UndefinedMetricWarning(UserWarning):
    """:func:`evaluate` reports a metric as NaN because the data cannot define it (a task
    whose labels hold one class only)."""


def one_class(labels: Any) -> Optional[str]:
    """Why an AUC of these labels is undefined.

    Parameters
    ----------
    labels : array
        0/1 labels.

    Returns
    -------
    str or None
        ``"only one class in 90 rows (0 positive)"``, or None when both classes are present.
    """
    y = np.asarray(labels)
    positives = int(np.count_nonzero(y))
    if 0 < positives < y.size:
        return None
    return f"only one class in {y.size} rows ({positives} positive)"


def _or_nan(task: str, metric: str, warn: bool, fn, *args) -> float:
    try:
        return fn(*args)
    except ValueError as e:
        if warn:
            why = one_class(args[0]) or str(e)
            warnings.warn(
                f"{metric} of task {task!r} is undefined (NaN): {why}",
                UndefinedMetricWarning,
                stacklevel=3,
            )
        return float("nan")
