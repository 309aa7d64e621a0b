"""Matplotlib figures of results and critic diagnostics.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so it
works with any backend: Jupyter shows it, ``fig.savefig(path)`` writes it. matplotlib is
an optional dependency (``pip install 'rmtl[plots]'``).
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

import numpy as np

from .study import COMPARISONS, grid_values, significant, value_label

__all__ = ["training_curves", "critic_curves", "weight_distribution", "q_by_position", "effect_maps"]


def _figure(ncols: int, width: float = 4.6, height: float = 3.4) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'rmtl[plots]'") from e
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _integer_epochs(*axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def training_curves(histories: Mapping[str, Mapping[str, Any]]) -> Any:
    """Training loss and mean validation AUC per epoch, one line per run.

    ``histories`` maps a label (e.g. ``"MMoE stage 1"``) to a history as
    :class:`rmtl.History` or its dict form (``{"epochs": [{"epoch", "train_loss",
    "valid_auc", ...}, ...]}``, as ``RMTL.history`` holds it).
    """
    fig, (ax_loss, ax_auc) = _figure(2)
    for label, hist in histories.items():
        epochs = hist["epochs"] if isinstance(hist, Mapping) else hist.epochs
        x = [e["epoch"] for e in epochs]
        ax_loss.plot(x, [e["train_loss"] for e in epochs], marker="o", ms=3, label=label)
        ax_auc.plot(x, [e.get("valid_auc", np.nan) for e in epochs], marker="o", ms=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_auc.set(xlabel="epoch", ylabel="mean validation AUC", title="validation AUC")
    ax_auc.legend(fontsize="small")
    _integer_epochs(ax_loss, ax_auc)
    return fig


def critic_curves(records: Mapping[str, Sequence[Mapping[str, float]]], task_names: Sequence[str]) -> Any:
    """Mean TD loss per critic-training epoch, one panel per task, one line per run.
    ``records`` maps a label to the epoch records :meth:`rmtl.RMTL.fit_critics` returns."""
    fig, axes = _figure(len(task_names))
    for ax, task in zip(axes, task_names):
        for label, recs in records.items():
            ax.plot([r["epoch"] for r in recs], [r[f"td_loss_{task}"] for r in recs], label=label)
        ax.set(xlabel="critic epoch", ylabel="TD loss", title=f"critic {task}", yscale="log")
    axes[-1].legend(fontsize="small")
    _integer_epochs(*axes)
    return fig


def weight_distribution(weights: Mapping[str, np.ndarray], task_names: Sequence[str], bins: int = 50) -> Any:
    """Histograms of stage-3 loss weights (n, T) per task, one outline per run."""
    fig, axes = _figure(len(task_names))
    for k, (ax, task) in enumerate(zip(axes, task_names)):
        for label, w in weights.items():
            ax.hist(np.asarray(w)[:, k], bins=bins, histtype="step", density=True, label=label)
        ax.set(xlabel="weight 1 - lambda Q", ylabel="density", title=f"stage-3 weights, {task}")
    axes[-1].legend(fontsize="small")
    return fig


def q_by_position(q: Mapping[str, np.ndarray], position: np.ndarray, task_names: Sequence[str],
                  max_position: int = 30) -> Any:
    """Mean critic value Q(s, a) (n, T) by step in session (``SessionData.position``), with
    a band of one standard error; positions beyond ``max_position`` are pooled into the last."""
    fig, axes = _figure(len(task_names))
    pos = np.minimum(np.asarray(position), max_position)
    count = np.bincount(pos, minlength=max_position + 1)
    x = np.flatnonzero(count)
    for k, (ax, task) in enumerate(zip(axes, task_names)):
        for label, values in q.items():
            v = np.asarray(values, np.float64)[:, k]
            mean = np.bincount(pos, v, max_position + 1)[x] / count[x]
            var = np.bincount(pos, v * v, max_position + 1)[x] / count[x] - mean ** 2
            se = np.sqrt(np.maximum(var, 0) / count[x])
            ax.plot(x, mean, label=label)
            ax.fill_between(x, mean - se, mean + se, alpha=0.25)
        ax.set(xlabel=f"step in session (last = {max_position}+)", ylabel="mean Q", title=f"critic {task}")
    axes[-1].legend(fontsize="small")
    return fig


def _annotate(ax: Any, image: Any, i: int, j: int, lines: Sequence[str]) -> None:
    """Write ``lines`` in cell (row i, column j) of ``image``, white on dark colours."""
    r, g, b, _ = image.cmap(image.norm(image.get_array()[i, j]))
    colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
    ax.text(j, i, "\n".join(lines), ha="center", va="center", fontsize="x-small", color=colour)


def _effect_lines(row: Mapping[str, Any], comparison: str, metric: str, star: bool) -> List[str]:
    """A heat-map cell's text: the mean (``*`` when significant), its 95% CI, ``flagged``."""
    key = f"{metric}_{comparison}"
    lines = [f"{row[key]:+.4f}{'*' if star else ''}", f"[{row[key + '_low']:+.4f},", f"{row[key + '_high']:+.4f}]"]
    return lines + ([] if row[f"{comparison}_checked"] else ["flagged"])


def effect_maps(rows: Sequence[Mapping[str, Any]], task: str, metric: str = "auc",
                comparisons: Optional[Sequence[str]] = None) -> Any:
    """Heat maps of a critic-effect study (:func:`rmtl.lab.study.study_rows`) over its two axes,
    one panel per comparison (default every one of :data:`rmtl.lab.study.COMPARISONS`: the
    critic effect and its controls) for one ``task`` and ``metric``.

    Colour is the mean paired difference on one diverging scale centred on 0 (blue: the first
    side better, i.e. higher AUC or lower logloss); each cell shows the mean and its 95% CI,
    with ``*`` where the comparison is significant and checked (critic effect: Holm p < 0.05;
    controls: the CI excludes 0) and ``flagged`` where a convergence check failed.
    """
    chosen = [c for c in COMPARISONS if comparisons is None or c.name in comparisons]
    mine = [r for r in rows if r["task"] == task]
    if not mine or not chosen:
        raise ValueError(f"task, comparisons: expected a task of the rows and names from "
                         f"{[c.name for c in COMPARISONS]}, got {task!r}, {comparisons}")
    (xk, xs), (yk, ys) = grid_values(rows)
    where = [(ys.index(r["axes"][yk]), xs.index(r["axes"][xk])) for r in mine]
    means = {c.name: np.full((len(ys), len(xs)), np.nan) for c in chosen}
    for c in chosen:
        for (i, j), r in zip(where, mine):
            means[c.name][i, j] = r[f"{metric}_{c.name}"]
    limit = float(np.nanmax(np.abs(np.stack(list(means.values()))), initial=0.0)) or 1e-12  # one scale, centred
    fig, axes = _figure(len(chosen), width=1.1 * len(xs) + 1.2, height=0.9 * len(ys) + 1.4)
    for ax, c in zip(axes, chosen):
        image = ax.imshow(np.ma.masked_invalid(means[c.name]), cmap="RdBu" if metric == "auc" else "RdBu_r",
                          vmin=-limit, vmax=limit, origin="lower", aspect="auto")
        for (i, j), r in zip(where, mine):
            _annotate(ax, image, i, j, _effect_lines(r, c.name, metric, significant(r, c.name, metric)))
        ax.set(xticks=range(len(xs)), xticklabels=[value_label(v) for v in xs],
               yticks=range(len(ys)), yticklabels=[value_label(v) for v in ys],
               xlabel=xk, ylabel=yk, title=c.label)
        ax.title.set_fontsize("small")
    fig.colorbar(image, ax=list(axes), label=f"{task} {metric} difference", shrink=0.9)
    fig.suptitle(f"{task} {metric}: mean paired difference over seeds [95% CI]; * significant (critic effect: Holm "
                 "p < 0.05; controls: CI excludes 0)", fontsize="small")
    return fig
