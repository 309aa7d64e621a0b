"""Convergence checks: is a trained model fit to enter a comparison?

A difference between two models says something about a method only when both trained.
:func:`check` looks at a model's training history and its predictions on validation data
and names what went wrong; :data:`ADVICE` says what to change. Experiments record the flags
per run, tables show them, and a comparison involving a flagged row is never starred.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np

from .data import SessionData

__all__ = ["check", "summary", "ADVICE", "PLATEAU_TOL", "CALIBRATION_TOL", "IMPROVING_TOL"]

PLATEAU_TOL = 0.02
"""Early stopping fired with the best mean validation AUC below ``0.5 + PLATEAU_TOL``."""
CALIBRATION_TOL = 0.25
"""Relative tolerance of the calibration check (plus three standard errors of the rate)."""
IMPROVING_TOL = 1e-3
"""The last epoch beat every earlier one by more than this mean validation AUC."""

ADVICE: Dict[str, str] = {
    "nonfinite": "a training loss or a prediction is not finite: lower the learning rate (lr)",
    "plateau": f"early stopping fired while the mean validation AUC was below {0.5 + PLATEAU_TOL:.2f}, on the "
               "initial plateau: give it more optimizer steps before stopping (min_steps, epochs, patience), "
               "more data, a higher learning rate, or init_output_bias='prior'",
    "calibration": f"the mean predicted probability on validation is off the label rate by more than "
                   f"{CALIBRATION_TOL:.0%} of the rate (+ 3 standard errors): the model has not calibrated; give "
                   "it more optimizer steps (min_steps, epochs), more data, or init_output_bias='prior'",
    "epoch_limit": "the validation AUC was still improving at the epoch limit: raise epochs (or min_steps)",
}


def check(history: Any, model: Any, valid: SessionData) -> List[str]:
    """The flags (keys of :data:`ADVICE`, in that order) of a model trained with ``history``
    (an :class:`rmtl.History` with per-epoch ``train_loss`` and ``valid_auc``), judged on
    ``valid``; an empty list when the model passes:

    - ``nonfinite``: a training loss or a validation prediction is NaN or infinite;
    - ``plateau``: training stopped before its last epoch was the best (early stopping) while
      the best mean validation AUC was below ``0.5 + PLATEAU_TOL``;
    - ``calibration``: for some task, ``|mean p - rate| > CALIBRATION_TOL * rate + 3 se``
      on ``valid``, with ``se = sqrt(rate (1 - rate) / n)``;
    - ``epoch_limit``: the last epoch was the best and beat the earlier ones by more than
      ``IMPROVING_TOL`` (or was the only one): training ended while still improving.
    """
    epochs = list(history.epochs)
    prob = np.asarray(model.predict(valid.sparse, valid.dense), np.float64)
    losses = [e.get("train_loss", 0.0) for e in epochs]
    flags = []
    if not np.isfinite(prob).all() or not all(math.isfinite(x) for x in losses):
        flags.append("nonfinite")
    aucs = [e.get("valid_auc", float("nan")) for e in epochs]
    best = history.best_epoch
    if best is not None and best < len(epochs) and history.best_score < 0.5 + PLATEAU_TOL:
        flags.append("plateau")
    if "nonfinite" not in flags:
        rate, n = valid.labels.mean(0), len(valid)
        se = np.sqrt(rate * (1 - rate) / max(n, 1))
        if (np.abs(prob.mean(0) - rate) > CALIBRATION_TOL * rate + 3 * se).any():
            flags.append("calibration")
    if best is not None and best == len(epochs) and (
            len(epochs) == 1 or aucs[-1] - max(aucs[:-1]) > IMPROVING_TOL):
        flags.append("epoch_limit")
    return flags


def summary(flags_per_seed: List[List[str]]) -> Dict[str, int]:
    """How many seeds raised each flag, in :data:`ADVICE` order."""
    return {f: n for f in ADVICE if (n := sum(f in fl for fl in flags_per_seed))}
