"""Convergence checks: is a trained model fit to enter a comparison?

A difference between two models says something about a method only when both trained.
:func:`check` looks at a model's training history and its predictions on validation data
and names what went wrong; :data:`ADVICE` says what to change. Experiments record the flags
per run, tables show them, and a comparison involving a flagged row is never starred.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from ..data import SessionData
from ..metrics import bce_rows

__all__ = [
    "check",
    "summary",
    "prior_logloss",
    "ADVICE",
    "PLATEAU_TOL",
    "CALIBRATION_TOL",
    "IMPROVING_TOL",
    "OVERFIT_Z",
]

PLATEAU_TOL = 0.02
"""Early stopping fired with the kept epoch's mean validation AUC below ``0.5 + PLATEAU_TOL``."""
CALIBRATION_TOL = 0.25
"""Relative tolerance of the calibration check (plus three standard errors of the rate)."""
IMPROVING_TOL = {"auc": 1e-3, "logloss": 1e-4}
"""The last epoch beat every earlier one by more than this (mean validation AUC, or mean
validation logloss, by the early-stopping score the training followed)."""
OVERFIT_Z = 2.0
"""Standard errors (over validation rows) by which a task's validation logloss may rise above
the stage's start before the stage counts as over-trained."""

ADVICE: dict[str, str] = {
    "nonfinite": "a training loss or a prediction is not finite: lower the learning rate (lr)",
    "plateau": (
        "early stopping fired while the mean validation AUC was below "
        f"{0.5 + PLATEAU_TOL:.2f}, on the initial plateau: give it more optimizer steps before "
        "stopping (min_steps, epochs, patience), more data, a higher learning rate, or "
        "init_output_bias='prior'"
    ),
    "calibration": (
        "the mean predicted probability on validation is off the label rate by more than "
        f"{CALIBRATION_TOL:.0%} of the rate (+ 3 standard errors): the model has not calibrated; "
        "give it more optimizer steps (min_steps, epochs), more data, or init_output_bias='prior'"
    ),
    "epoch_limit": (
        "the validation score was still improving at the epoch limit: raise epochs (or min_steps)"
    ),
    "overfit": (
        "a task's validation logloss at the kept weights is worse than at the stage's start by "
        f"more than {OVERFIT_Z:g} standard errors: the stage trained past its best; stop on "
        "validation logloss (early_stopping='logloss'), give it fewer epochs (finetune_epochs, "
        "epochs) or a lower lr, and never a step floor after pretraining"
    ),
    "worse_than_prior": (
        "a task's validation or test logloss is worse than predicting its training label rate "
        "for every row: the model is over-trained or uncalibrated; stop on validation logloss, "
        "train fewer epochs, or start at init_output_bias='prior'"
    ),
}


def prior_logloss(rates: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per task, the logloss of predicting ``rates`` (T,) (clipped to [1e-7, 1 - 1e-7]) for
    every row of ``labels`` (n, T): the constant predictor a trained model must beat.

    Parameters
    ----------
    rates : array-like (T,)
        The constant probability predicted for each task.
    labels : array-like (n, T)
        The labels.

    Returns
    -------
    ndarray (T,) float64
        The mean binary cross-entropy per task.
    """
    r = np.clip(np.asarray(rates, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, np.float64).mean(0)
    return -(y * np.log(r) + (1 - y) * np.log1p(-r))


def check(
    history: Any,
    model: Any,
    valid: SessionData,
    test: Optional[SessionData] = None,
    rates: Optional[np.ndarray] = None,
) -> list[str]:
    """The flags (keys of :data:`ADVICE`, in that order) of a model trained with ``history``
    (an :class:`rmtl.History`), judged on ``valid`` (and ``test``); an empty list when the
    model passes:

    - ``nonfinite``: a training loss or a validation prediction is NaN or infinite;
    - ``plateau``: training stopped before its last epoch was the best (early stopping) while
      the kept epoch's mean validation AUC was below ``0.5 + PLATEAU_TOL``;
    - ``calibration``: for some task, ``|mean p - rate| > CALIBRATION_TOL * rate + 3 se``
      on ``valid``, with ``se = sqrt(rate (1 - rate) / n)``;
    - ``epoch_limit``: early stopping was on, the last epoch was the best and beat the earlier
      ones by more than ``IMPROVING_TOL`` of its score (or was the only one): training ended
      while still improving;
    - ``overfit``: for some task, the validation logloss of the kept weights exceeds the one
      of the weights the stage started from by more than ``OVERFIT_Z`` standard errors of the
      per-row change (:attr:`rmtl.History.logloss_change`);
    - ``worse_than_prior``: with ``rates`` (T,), the training label rates, some task's
      logloss on ``valid`` or ``test`` is above :func:`prior_logloss` of those rates.

    Parameters
    ----------
    history : rmtl.History
        The training history of the stage judged.
    model : Backbone
        The trained model (anything with ``predict(sparse, dense)``).
    valid : SessionData
        The validation split.
    test : SessionData, optional
        The test split, read only for ``worse_than_prior``.
    rates : ndarray (T,), optional
        The training label rates; None leaves out ``worse_than_prior``.

    Returns
    -------
    list of str
        The flags raised, in :data:`ADVICE` order.
    """
    epochs = list(history.epochs)
    prob = np.asarray(model.predict(valid.sparse, valid.dense), np.float64)
    losses = [e.get("train_loss", 0.0) for e in epochs]
    flags = []
    if not np.isfinite(prob).all() or not all(math.isfinite(x) for x in losses):
        flags.append("nonfinite")
    best = history.best_epoch
    kept_auc = epochs[best - 1].get("valid_auc", float("nan")) if best else float("nan")
    if best is not None and best < len(epochs) and kept_auc < 0.5 + PLATEAU_TOL:
        flags.append("plateau")
    if "nonfinite" not in flags:
        rate, n = valid.labels.mean(0), len(valid)
        se = np.sqrt(rate * (1 - rate) / max(n, 1))
        if (np.abs(prob.mean(0) - rate) > CALIBRATION_TOL * rate + 3 * se).any():
            flags.append("calibration")
    criterion = getattr(history, "early_stopping", None)
    if criterion is not None and best is not None and best == len(epochs):
        scores = [
            e.get("valid_auc", np.nan) if criterion == "auc" else -e.get("valid_logloss", np.nan)
            for e in epochs
        ]
        if len(epochs) == 1 or scores[-1] - max(scores[:-1]) > IMPROVING_TOL[criterion]:
            flags.append("epoch_limit")
    if any(se > 0 and mean > OVERFIT_Z * se for mean, se in history.logloss_change.values()):
        flags.append("overfit")
    if rates is not None and "nonfinite" not in flags:
        for part in (valid, test):
            if part is None:
                continue
            p = (
                prob
                if part is valid
                else np.asarray(model.predict(part.sparse, part.dense), np.float64)
            )
            if (bce_rows(part.labels, p).mean(0) > prior_logloss(rates, part.labels)).any():
                flags.append("worse_than_prior")
                break
    return flags


def summary(flags_per_seed: list[list[str]]) -> dict[str, int]:
    """How many seeds raised each flag, in :data:`ADVICE` order.

    Parameters
    ----------
    flags_per_seed : list of list of str
        The flags of :func:`check`, one list per seed.

    Returns
    -------
    dict of str to int
        Flag -> number of seeds that raised it (flags no seed raised left out).
    """
    return {f: n for f in ADVICE if (n := sum(f in fl for fl in flags_per_seed))}
