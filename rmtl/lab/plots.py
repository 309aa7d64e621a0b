"""Matplotlib figures of results and critic diagnostics.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so it
works with any backend: Jupyter shows it, ``fig.savefig(path)`` writes it. matplotlib is
an optional dependency (``pip install 'rmtl[plots]'``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "training_curves",
    "critic_curves",
    "weight_distribution",
    "q_by_position",
    "balancer_maps",
    "figure",
    "annotate_cell",
]


def figure(ncols: int, width: float = 4.6, height: float = 3.4) -> Any:
    """A figure of ``ncols`` panels side by side (without pyplot): ``(figure, axes)``.

    Parameters
    ----------
    ncols : int
        Number of panels.
    width, height : float, default 4.6, 3.4
        Size of one panel in inches.

    Returns
    -------
    (matplotlib.figure.Figure, array of Axes)
        The figure and its ``ncols`` axes.

    Raises
    ------
    ImportError
        When matplotlib is not installed (``pip install 'rmtl[plots]'``).
    """
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
    """Training loss per epoch, one panel per run, and mean validation AUC, one line per run.

    ``histories`` maps a label (e.g. ``"MMoE stage 1"``) to a history as
    :class:`rmtl.History` or its dict form (``{"epochs": [{"epoch", "train_loss",
    "valid_auc", ...}, ...]}``, as ``RMTL.history`` holds it). Each run's loss gets its own
    panel and scale: stage 3's loss is weighted (``1 - lam Q`` per row), so it is not on the
    scale of stage 1's unweighted BCE. The validation AUCs are comparable and share a panel.

    Parameters
    ----------
    histories : mapping of str to History or dict
        Label -> the run's history (above).

    Returns
    -------
    matplotlib.figure.Figure
    """
    runs = list(histories.items())
    ncols = min(len(runs) + 1, 3)
    nrows = -(-(len(runs) + 1) // ncols)
    fig, axes = figure(ncols)
    if nrows > 1:  # many runs: panels wrap into rows of three
        fig.set_size_inches(fig.get_figwidth(), fig.get_figheight() * nrows)
        for ax in axes:
            fig.delaxes(ax)
        axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
        for ax in axes[len(runs) + 1 :]:
            ax.set_visible(False)
        axes = axes[: len(runs) + 1]
    ax_auc = axes[len(runs)]
    colours = [f"C{k % 10}" for k in range(len(runs))]
    for (label, hist), ax_loss, colour in zip(runs, axes, colours):
        epochs = hist["epochs"] if isinstance(hist, Mapping) else hist.epochs
        x = [e["epoch"] for e in epochs]
        ax_loss.plot(x, [e["train_loss"] for e in epochs], marker="o", ms=3, color=colour)
        ax_loss.set(xlabel="epoch", ylabel="training loss", title=f"training loss, {label}")
        ax_auc.plot(
            x,
            [e.get("valid_auc", np.nan) for e in epochs],
            marker="o",
            ms=3,
            color=colour,
            label=label,
        )
    ax_auc.set(xlabel="epoch", ylabel="mean validation AUC", title="validation AUC")
    ax_auc.legend(fontsize="small")
    _integer_epochs(*axes)
    return fig


def critic_curves(
    records: Mapping[str, Sequence[Mapping[str, float]]], task_names: Sequence[str]
) -> Any:
    """Mean TD loss per critic-training epoch, one panel per task, one line per run.
    ``records`` maps a label to the epoch records :meth:`rmtl.RMTL.fit_critics` returns.

    Parameters
    ----------
    records : mapping of str to sequence of dict
        Label -> the epoch records of the run's critic training (``td_loss_<task>`` keys).
    task_names : sequence of str
        The tasks, one panel each.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = figure(len(task_names))
    for ax, task in zip(axes, task_names):
        for label, recs in records.items():
            ax.plot([r["epoch"] for r in recs], [r[f"td_loss_{task}"] for r in recs], label=label)
        ax.set(xlabel="critic epoch", ylabel="TD loss", title=f"critic {task}", yscale="log")
    axes[-1].legend(fontsize="small")
    _integer_epochs(*axes)
    return fig


def weight_distribution(
    weights: Mapping[str, np.ndarray], task_names: Sequence[str], bins: int = 50
) -> Any:
    """Histograms of stage-3 loss weights (n, T) per task, one outline per run.

    Parameters
    ----------
    weights : mapping of str to array (n, T)
        Label -> the run's stage-3 loss weights (:meth:`rmtl.RMTL.loss_weights`).
    task_names : sequence of str
        The tasks, one panel each.
    bins : int, default 50
        Histogram bins.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = figure(len(task_names))
    for k, (ax, task) in enumerate(zip(axes, task_names)):
        for label, w in weights.items():
            ax.hist(np.asarray(w)[:, k], bins=bins, histtype="step", density=True, label=label)
        ax.set(xlabel="weight 1 - lambda Q", ylabel="density", title=f"stage-3 weights, {task}")
    axes[-1].legend(fontsize="small")
    return fig


def q_by_position(
    q: Mapping[str, np.ndarray],
    position: np.ndarray,
    task_names: Sequence[str],
    max_position: int = 30,
) -> Any:
    """Mean critic value Q(s, a) (n, T) by step in session (``SessionData.position``), with
    a band of one standard error; positions beyond ``max_position`` are pooled into the last.

    Parameters
    ----------
    q : mapping of str to array (n, T)
        Label -> the run's critic values (:meth:`rmtl.RMTL.q_values`).
    position : int array (n,)
        Step in session of every row.
    task_names : sequence of str
        The tasks, one panel each.
    max_position : int, default 30
        The last position shown (later ones are pooled into it).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = figure(len(task_names))
    pos = np.minimum(np.asarray(position), max_position)
    count = np.bincount(pos, minlength=max_position + 1)
    x = np.flatnonzero(count)
    for k, (ax, task) in enumerate(zip(axes, task_names)):
        for label, values in q.items():
            v = np.asarray(values, np.float64)[:, k]
            mean = np.bincount(pos, v, max_position + 1)[x] / count[x]
            var = np.bincount(pos, v * v, max_position + 1)[x] / count[x] - mean**2
            se = np.sqrt(np.maximum(var, 0) / count[x])
            ax.plot(x, mean, label=label)
            ax.fill_between(x, mean - se, mean + se, alpha=0.25)
        ax.set(
            xlabel=f"step in session (last = {max_position}+)",
            ylabel="mean Q",
            title=f"critic {task}",
        )
    axes[-1].legend(fontsize="small")
    return fig


def annotate_cell(ax: Any, image: Any, i: int, j: int, lines: Sequence[str]) -> None:
    """Write ``lines`` in cell (row i, column j) of ``image``, white on dark colours.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes showing ``image``.
    image : matplotlib.image.AxesImage
        The heat map (its colour map picks the text colour).
    i, j : int
        The cell's row and column.
    lines : sequence of str
        The text, one line each.
    """
    r, g, b, _ = image.cmap(image.norm(image.get_array()[i, j]))
    colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
    ax.text(j, i, "\n".join(lines), ha="center", va="center", fontsize="x-small", color=colour)


def balancer_maps(rows: Sequence[Mapping[str, Any]], metric: str = "auc") -> Any:
    """Heat maps of a balancer study (``benchmarks/study_balancers.py``'s rows: ``corr``,
    ``regime``, ``task``, ``comparison``, ``<metric>``, ``<metric>_p_holm``, ``flags``), one
    panel per task: a row per comparison (each balancer against equal weights, and
    ``rmtl-continued``), a column per cell of the grid (regime, task correlation).

    Colour is the mean paired test difference on one diverging scale centred on 0 (blue:
    better, i.e. higher AUC or lower logloss); ``*`` marks a Holm-adjusted p below 0.05 with
    no convergence flag, ``f`` a flagged pair.

    Parameters
    ----------
    rows : sequence of mapping
        The study's rows (above); at least one.
    metric : str, default "auc"
        The metric shown (``"auc"`` or ``"logloss"``).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When ``rows`` is empty.
    """
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    names = list(dict.fromkeys(r["comparison"] for r in rows))
    cells = list(dict.fromkeys((r["regime"], r["corr"]) for r in rows))
    if not rows:
        raise ValueError("rows: expected the rows of a balancer study, got none")
    values = np.full((len(tasks), len(names), len(cells)), np.nan)
    marks = {}
    for r in rows:
        at = (
            tasks.index(r["task"]),
            names.index(r["comparison"]),
            cells.index((r["regime"], r["corr"])),
        )
        values[at] = r[metric]
        star = r.get(f"{metric}_p_holm", 1.0) < 0.05
        marks[at] = "f" if r["flags"] else "*" if star else ""
    limit = float(np.nanmax(np.abs(values), initial=0.0)) or 1e-12
    fig, axes = figure(len(tasks), width=0.55 * len(cells) + 1.6, height=0.24 * len(names) + 1.6)
    for t, (ax, task) in enumerate(zip(axes, tasks)):
        image = ax.imshow(
            np.ma.masked_invalid(values[t]),
            cmap="RdBu" if metric == "auc" else "RdBu_r",
            vmin=-limit,
            vmax=limit,
            aspect="auto",
        )
        for (tt, i, j), mark in marks.items():
            if tt == t and mark:
                annotate_cell(ax, image, i, j, [mark])
        ax.set(
            xticks=range(len(cells)),
            xticklabels=[f"{regime}\n{corr:+g}" for regime, corr in cells],
            yticks=range(len(names)),
            yticklabels=names if t == 0 else [],
            title=task,
        )
        ax.tick_params(labelsize="x-small")
    fig.colorbar(image, ax=list(axes), label=f"test {metric} difference", shrink=0.8)
    fig.suptitle(
        f"test {metric}: each balancer minus equal weights, RMTL minus Continued\n"
        "per rate regime and task correlation; * Holm p < 0.05 (unflagged), f flagged",
        fontsize="small",
    )
    return fig
