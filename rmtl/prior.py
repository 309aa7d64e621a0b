"""Start a backbone's outputs at the label rates of its training data
(``init_output_bias="prior"``).

A freshly initialised tower predicts about 0.5 for every task; with a 5% click rate and a
0.8% purchase rate, much of early training only moves the output biases towards the
rates, and with few optimizer steps (small data) early stopping can fire before it got
there. Starting each output bias at the logit of its rate removes that phase. A deviation
from the authors' code, which starts every bias at PyTorch's default.
"""

from __future__ import annotations

import re

import numpy as np

from .models import Backbone

__all__ = ["set_output_prior", "output_bias_keys"]

_TOWER_BIAS = re.compile(r"^tower\.(\d+)\.mlp\.(\d+)\.bias$")


def output_bias_keys(model: Backbone) -> dict[int, str]:
    """Task index -> state-dict key of its output layer's bias (the last layer of its tower).

    Parameters
    ----------
    model : Backbone
        Any backbone (its ``tower.<k>.mlp.<layer>.bias`` parameters of one element).

    Returns
    -------
    dict of int to str
        One entry per task, in task order.
    """
    last: dict[int, tuple] = {}
    for name, value in model.named_parameters():
        m = _TOWER_BIAS.match(name)
        if m and value.shape == (1,):
            k, layer = int(m.group(1)), int(m.group(2))
            if layer >= last.get(k, (-1, ""))[0]:
                last[k] = (layer, name)
    return {k: name for k, (_, name) in sorted(last.items())}


def set_output_prior(model: Backbone, labels: np.ndarray) -> None:
    """Set each task's output bias of ``model`` (in place) to the logit of the task's rate in
    ``labels`` (n, T), clipped to [1e-4, 1 - 1e-4]. For ESMM, whose second output is the
    product of the CTR and CVR towers, the CVR tower gets the rate of task 1 among task-0
    positives (purchases per click).

    Parameters
    ----------
    model : Backbone
        The backbone whose output biases to set.
    labels : array-like (n, T)
        Training labels, n > 0 rows and one column per task (a ValueError otherwise).

    Raises
    ------
    ValueError
        When ``model`` does not have one single-element output bias
        (``tower.<k>.mlp.<layer>.bias``) for each task ``0..T-1``, or when ``labels`` is not
        2-D with at least one row and ``model.config.num_tasks`` columns.
    """
    keys = output_bias_keys(model)
    T = model.config.num_tasks
    if sorted(keys) != list(range(T)):
        raise ValueError(
            f"model: expected one single-element output bias (tower.<k>.mlp.<layer>.bias) for "
            f"each task 0..{T - 1}, got output biases for tasks {sorted(keys)}"
        )
    try:
        labels = np.asarray(labels, np.float64)
    except (TypeError, ValueError):  # not numbers, or a ragged nesting
        raise ValueError(
            f"labels: expected a numeric array of shape (n > 0, {T}), "
            f"got a non-numeric {type(labels).__name__}"
        ) from None
    if labels.ndim != 2 or labels.shape[1] != T or len(labels) == 0:
        raise ValueError(f"labels: expected shape (n > 0, {T}), got {labels.shape}")
    rates = labels.mean(0)
    if model.config.name == "esmm" and T > 1:
        rates[1] = rates[1] / rates[0] if rates[0] > 0 else rates[1]
    params = dict(model.named_parameters())
    for k, key in keys.items():
        r = float(np.clip(rates[k], 1e-4, 1 - 1e-4))
        params[key][...] = np.float32(np.log(r / (1 - r)))
