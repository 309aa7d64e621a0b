"""The critic-effect study as a map (issue 29, item 5): where, if anywhere, RMTL's critics help.

A grid over two axes (:class:`Axis`: a knob of the synthetic RetailRocket preset such as
``momentum``, the click-rate target ``click_rate``, or where the session context goes,
``context``), everything else fixed by a :class:`StudyConfig`. Each cell is one
:func:`rmtl.experiment` of one backbone over several seeds with the weightings ``rmtl`` and
its three controls ``continued``, ``static`` and ``permuted``, each trained exactly as many
stage-3 epochs as ``rmtl`` kept in the same seed (``budget="matched"``).

:func:`study_rows` gives, per cell and task, the **critic effect** (RMTL - continued) and the
controls (:data:`COMPARISONS`), paired by seed with mean, 95% confidence interval and raw
p-value. Only the study's **primary family**, the critic effect on AUC and logloss of every
cell and task, is Holm-adjusted (``<metric>_effect_p_holm``); every other p-value is
exploratory. :func:`rmtl.lab.plots.effect_maps` draws the rows as heat maps,
``benchmarks/study_critic_effect.py`` runs the study from the command line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

import numpy as np

from .. import models
from .._io import CorruptFileError, write_text
from ..config import COUNT, NON_NEGATIVE_COUNT, Range, RMTLConfig
from ..context import with_context
from ..data import SessionData
from ..datasets import synthetic
from ..datasets.synth import PRESETS, SyntheticConfig
from . import plots, stats
from .experiment import ExperimentResult, experiment
from .graph import BUDGETS
from .report import markdown_table

__all__ = [
    "Axis",
    "StudyConfig",
    "Cell",
    "Comparison",
    "COMPARISONS",
    "CONTEXT",
    "CONTEXTS",
    "KNOBS",
    "METRICS",
    "PRIMARY",
    "RMTL_FIELDS",
    "SavedStudy",
    "run_study",
    "study_rows",
    "study_markdown",
    "save_study",
    "load_study",
    "primary_size",
    "significant",
    "grid_values",
    "value_label",
    "effect_maps",
]

PRESET = "retailrocket"
WEIGHTINGS = ("rmtl", "continued", "static", "permuted")
METRICS = ("auc", "logloss")
CONTEXTS = ("none", "critic", "backbone", "both")
"""Where the session context goes (:func:`rmtl.with_context`; ``"none"``: nowhere)."""
QUICK_NET: dict[str, Any] = {
    "embed_dim": 16,
    "bottom_dims": (64, 32),
    "tower_dims": (32, 16),
    "dropout": 0.2,
}
# small batches: enough Adam steps per epoch on ~8k training rows; the critics at quick widths
QUICK_RMTL: dict[str, Any] = {
    "critic_bottom_dims": (64, 32),
    "critic_tower_dims": (32, 16),
    "epochs": 12,
    "patience": 2,
    "min_steps": 200,
    "init_output_bias": "prior",
}
CLICK_RATE, CONTEXT = "click_rate", "context"
_FIELD_TYPES = {
    f.name: getattr(f.type, "__name__", f.type) for f in dataclasses.fields(SyntheticConfig)
}
KNOBS: tuple[str, ...] = (
    *(n for n, t in _FIELD_TYPES.items() if t == "float"),
    CLICK_RATE,
    CONTEXT,
)
"""What an axis can vary: a float field of :class:`rmtl.datasets.synth.SyntheticConfig`
(``momentum``, ``fatigue``, ``leave_base``, ...), ``click_rate`` (the click-rate target; the
pay-rate target keeps its ratio to it) or ``context`` (values from :data:`CONTEXTS`)."""
_FINITE = Range(-math.inf)
_RATE = Range(0.0, 1.0, open_low=True, open_high=True)
_NUMBERS = {
    "float": _FINITE,
    "int": Range(-math.inf, integer=True),
}  # SyntheticConfig field type: its check


@dataclasses.dataclass(frozen=True)
class Axis:
    """One axis of the grid: a knob from :data:`KNOBS` and its values (in plotting order).

    Parameters
    ----------
    knob : str
        A key of :data:`KNOBS`.
    values : tuple
        Its values, in plotting order.

    Raises
    ------
    ValueError
        When ``knob`` is not in :data:`KNOBS`; ``values`` is a string or not a non-empty
        sequence, or holds a value twice; for ``context``, a value is not in
        :data:`CONTEXTS`; for ``click_rate``, a value is not in (0, 1); for any other knob,
        a value is not finite.
    TypeError
        When a value of a numeric knob (any but ``context``) is not a number (or is a bool).
    """

    knob: str
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if self.knob not in KNOBS:
            raise ValueError(f"knob: expected one of {list(KNOBS)}, got {self.knob!r}")
        if (
            isinstance(self.values, (str, bytes))
            or not isinstance(self.values, Sequence)
            or not self.values
        ):
            raise ValueError(
                f"{self.knob} values: expected a non-empty sequence, got {self.values!r}"
            )
        values = tuple(
            self._check(f"{self.knob} values[{i}]", v) for i, v in enumerate(self.values)
        )
        if len(set(values)) != len(values):
            raise ValueError(f"{self.knob} values: expected distinct values, got {list(values)}")
        object.__setattr__(self, "values", values)

    def _check(self, name: str, value: Any) -> Any:
        if self.knob == CONTEXT:
            if value not in CONTEXTS:
                raise ValueError(f"{name}: expected one of {list(CONTEXTS)}, got {value!r}")
            return value
        return (_RATE if self.knob == CLICK_RATE else _FINITE).check(name, value)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything a study runs: the grid (``x`` by ``y``) and what stays fixed.

    ``context`` is where the session context goes in every cell (unless an axis varies it);
    ``synth`` fixes other knobs of the synthetic RetailRocket preset (numeric fields of
    :class:`rmtl.datasets.synth.SyntheticConfig` and ``target_rates``); ``n_users`` users are
    generated with ``data_seed`` and split 60/20/20 by session start. ``backbone`` with
    ``backbone_kwargs`` (quick widths by default) runs over seeds ``0..seeds-1``; RMTL with
    ``critic_epochs`` (the authors' 96), ``lam``, ``gamma``, ``batch_size``,
    ``critic_batch_size``, the stage-3 ``budget`` (``"matched"`` or ``"fixed"``,
    :func:`rmtl.experiment`) and ``finetune_epochs``; ``rmtl_kwargs`` set any other
    :class:`rmtl.RMTLConfig` field. Construction checks every value once (ValueError or
    TypeError naming the field, the expected and the actual value).

    Parameters
    ----------
    x, y : Axis
        The grid's axes (default: momentum 0 to 0.9 by click rate 0.05 to 0.3).
    context : str, default "critic"
        Where the session context goes (``"critic"``, ``"backbone"``, ``"both"`` or
        ``"none"``).
    synth : mapping
        Other knobs of the synthetic preset.
    n_users : int, default 1000
        Users generated.
    data_seed : int, default 0
        Seed of the generated data.
    backbone : str, default "esmm"
        The backbone.
    backbone_kwargs : mapping
        Its keyword arguments (default the quick widths).
    seeds : int, default 10
        Seeds per cell.
    critic_epochs : int, default 96
        Epochs of the critics' training.
    lam, gamma : float, default 0.7, 0.9
        RMTL's weight of the critic value in the loss weights, and its discount.
    batch_size, critic_batch_size : int, default 512, 2048
        Batch sizes of the backbone's and the critics' training.
    budget : {"matched", "fixed"}, default "matched"
        The stage-3 budget.
    finetune_epochs : int, optional
        Stage 3's most epochs.
    rmtl_kwargs : mapping
        Any other :class:`rmtl.RMTLConfig` field (default the quick settings).

    Raises
    ------
    TypeError
        When ``x`` or ``y`` is not an :class:`Axis`; ``synth``, ``backbone_kwargs`` or
        ``rmtl_kwargs`` is not a mapping; ``n_users``, ``data_seed`` or ``seeds`` is not an
        integer; a value of ``synth`` (or of its ``target_rates``) is not a number, or not an
        integer for an integer field; or the backbone (built once with
        ``backbone_kwargs``) or :class:`rmtl.RMTLConfig` (from the RMTL fields and
        ``rmtl_kwargs``) rejects an argument or a value's type.
    ValueError
        When ``x`` and ``y`` vary the same knob; ``context`` is not in :data:`CONTEXTS`;
        ``budget`` is neither ``"matched"`` nor ``"fixed"``; ``n_users`` is below 1,
        ``data_seed`` below 0 or ``seeds`` below 2; ``synth`` sets an axis's knob,
        ``n_users``, a key that is neither a numeric field of
        :class:`rmtl.datasets.synth.SyntheticConfig` nor ``target_rates``, a non-finite
        number, or ``target_rates`` other than a (click, pay) pair of rates in (0, 1) with
        pay below click; ``backbone`` is unknown or ``backbone_kwargs`` holds ``seed``;
        ``rmtl_kwargs`` sets a field of this class (:data:`RMTL_FIELDS`) or no field of
        :class:`rmtl.RMTLConfig`; or the backbone or :class:`rmtl.RMTLConfig` rejects a
        value (e.g. ``lam`` below 0).
    """

    x: Axis = Axis("momentum", (0.0, 0.3, 0.6, 0.9))
    y: Axis = Axis(CLICK_RATE, (0.05, 0.15, 0.3))
    context: str = "critic"
    synth: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {"fatigue": 0.1, "target_rates": (0.3, 0.1)}
    )
    n_users: int = 1000
    data_seed: int = 0
    backbone: str = "esmm"
    backbone_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(QUICK_NET))
    seeds: int = 10
    critic_epochs: int = 96
    lam: float = 0.7
    gamma: float = 0.9
    batch_size: int = 512
    critic_batch_size: int = 2048
    budget: str = "matched"
    finetune_epochs: Optional[int] = None
    rmtl_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(QUICK_RMTL))

    def __post_init__(self) -> None:
        for name in ("x", "y"):
            if not isinstance(getattr(self, name), Axis):
                raise TypeError(
                    f"{name}: expected an rmtl.lab.study.Axis, got {getattr(self, name)!r}"
                )
        if self.x.knob == self.y.knob:
            raise ValueError(f"x, y: expected two different knobs, got {self.x.knob!r} twice")
        if self.context not in CONTEXTS:
            raise ValueError(f"context: expected one of {list(CONTEXTS)}, got {self.context!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget: expected one of {list(BUDGETS)}, got {self.budget!r}")
        COUNT.check("n_users", self.n_users)
        NON_NEGATIVE_COUNT.check("data_seed", self.data_seed)
        Range(2, integer=True).check("seeds (paired t-tests need at least 2)", self.seeds)
        object.__setattr__(self, "synth", _check_synth(self.synth, (self.x.knob, self.y.knob)))
        object.__setattr__(
            self, "backbone_kwargs", _check_backbone(self.backbone, self.backbone_kwargs)
        )
        object.__setattr__(self, "rmtl_kwargs", _check_rmtl(self.rmtl_kwargs))
        # the one check of the RMTL settings; kept (not a field: to_dict and == leave it out)
        object.__setattr__(self, "_rmtl_config", RMTLConfig(**self.rmtl_settings()))

    def rmtl_settings(self) -> dict[str, Any]:
        """The keyword arguments of :class:`rmtl.RMTL` every cell uses.

        Returns
        -------
        dict
            ``rmtl_kwargs`` updated with the config's own agent fields that are set.
        """
        own = {k: getattr(self, k) for k in RMTL_FIELDS}
        return {**self.rmtl_kwargs, **{k: v for k, v in own.items() if v is not None}}

    def rmtl_config(self) -> RMTLConfig:
        """The :class:`rmtl.RMTLConfig` every cell uses (:meth:`rmtl_settings`), built and
        checked once, with the config.

        Returns
        -------
        RMTLConfig
        """
        return self._rmtl_config

    def grid(self) -> list[dict[str, Any]]:
        """The cells' axis values, x varying slowest.

        Returns
        -------
        list of dict
            One ``{x.knob: value, y.knob: value}`` per cell.
        """
        return [{self.x.knob: a, self.y.knob: b} for a in self.x.values for b in self.y.values]

    def context_of(self, at: Mapping[str, Any]) -> str:
        """Where the session context goes in the cell ``at``.

        Parameters
        ----------
        at : mapping
            The cell's axis values (:meth:`grid`).

        Returns
        -------
        str
        """
        return at.get(CONTEXT, self.context)

    def synthetic_overrides(self, at: Mapping[str, Any]) -> dict[str, Any]:
        """The :func:`rmtl.datasets.synthetic` overrides of the cell ``at``: ``synth`` and the
        axis values (``click_rate`` scales both target rates).

        Parameters
        ----------
        at : mapping
            The cell's axis values (:meth:`grid`).

        Returns
        -------
        dict
            Keyword arguments of :func:`rmtl.datasets.synthetic`.
        """
        out = dict(self.synth)
        for knob, value in at.items():
            if knob == CLICK_RATE:
                click, pay = out.get("target_rates", PRESETS[PRESET].target_rates)
                out["target_rates"] = (value, value * pay / click)
            elif knob != CONTEXT:
                out[knob] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-ready values (:meth:`from_dict` reads it back).

        Returns
        -------
        dict
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudyConfig:
        """The config :meth:`to_dict` wrote (lists read back as tuples).

        Parameters
        ----------
        d : mapping
            What :meth:`to_dict` returned (or its JSON, read back).

        Returns
        -------
        StudyConfig
        """
        return cls(**{**d, "x": Axis(**d["x"]), "y": Axis(**d["y"])})


# the RMTL settings a study exposes as its own fields (the CLI's options)
RMTL_FIELDS = (
    "critic_epochs",
    "lam",
    "gamma",
    "batch_size",
    "critic_batch_size",
    "finetune_epochs",
)


def _tuples(value: Any) -> Any:
    """Lists (as JSON gives them back) as tuples, recursively."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _mapping(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected a mapping of names to values, got {value!r}")
    return {str(k): _tuples(v) for k, v in value.items()}


def _check_synth(synth: Any, axes: Sequence[str]) -> dict[str, Any]:
    """The fixed synthetic overrides, checked: numeric fields of the preset's config and
    ``target_rates`` (a click and a lower pay rate), none of them an axis."""
    out = _mapping("synth", synth)
    for key, value in out.items():
        if key in axes or key == "n_users":
            raise ValueError(
                f"synth: {key!r} is set by {'an axis' if key in axes else 'the field n_users'}; "
                "remove it from synth"
            )
        if key == "target_rates":
            if not isinstance(value, tuple) or len(value) != 2:
                raise ValueError(
                    f"synth target_rates: expected (click rate, pay rate), got {value!r}"
                )
            click, pay = (_RATE.check(f"synth target_rates[{i}]", v) for i, v in enumerate(value))
            if pay >= click:
                raise ValueError(
                    "synth target_rates: every pay is a click, so expected pay < click, "
                    f"got {value}"
                )
        elif _FIELD_TYPES.get(key) in _NUMBERS:
            out[key] = _NUMBERS[_FIELD_TYPES[key]].check(f"synth {key}", value)
        else:
            raise ValueError(
                f"synth: expected numeric fields of rmtl.datasets.synth.SyntheticConfig or "
                f"'target_rates', got {key!r}"
            )
    return out


def _check_backbone(backbone: str, kwargs: Any) -> dict[str, Any]:
    """The backbone's keyword arguments, checked by building it once on a one-field input."""
    out = _mapping("backbone_kwargs", kwargs)
    if backbone not in models.BACKBONES:
        raise ValueError(f"backbone: expected one of {sorted(models.BACKBONES)}, got {backbone!r}")
    if "seed" in out:
        raise ValueError("backbone_kwargs: the seed is the experiment's; remove 'seed'")
    try:
        models.create(backbone, (2,), 1, 2, **out)
    except (TypeError, ValueError) as e:
        raise type(e)(f"backbone_kwargs of {backbone}: {e}") from None
    return out


def _check_rmtl(kwargs: Any) -> dict[str, Any]:
    """The other RMTL settings: fields of :class:`rmtl.RMTLConfig` not set by the study's own."""
    out = _mapping("rmtl_kwargs", kwargs)
    fields = {f.name for f in dataclasses.fields(RMTLConfig)}
    for key in out:
        if key in RMTL_FIELDS:
            raise ValueError(f"rmtl_kwargs: {key!r} is a field of StudyConfig; set it there")
        if key not in fields:
            raise ValueError(f"rmtl_kwargs: expected fields of rmtl.RMTLConfig, got {key!r}")
    return out


@dataclasses.dataclass(frozen=True)
class Cell:
    """One finished cell: its axis values ``at``, its ``context`` and the experiment.

    Parameters
    ----------
    at : dict
        The cell's axis values.
    context : str
        Where the session context went.
    result : ExperimentResult
        The cell's experiment.
    """

    at: dict[str, Any]
    context: str
    result: ExperimentResult


def _split(config: StudyConfig, overrides: Mapping[str, Any]) -> tuple[SessionData, ...]:
    """The synthetic data of ``overrides``, split 60/20/20 by session start."""
    return synthetic(PRESET, n_users=config.n_users, seed=config.data_seed, **overrides).split(
        (0.6, 0.2, 0.2)
    )


def run_study(config: StudyConfig, on_cell: Optional[Callable[[Cell], None]] = None) -> list[Cell]:
    """Run every cell of ``config.grid()`` (weightings ``rmtl``, ``continued``, ``static``,
    ``permuted``); ``on_cell(cell)`` after each. Returns the cells in grid order. Consecutive
    cells with the same data (``y`` over the context) generate it once.

    Parameters
    ----------
    config : StudyConfig
        The study (a TypeError otherwise).
    on_cell : callable, optional
        ``on_cell(cell)`` after each cell.

    Returns
    -------
    list of Cell

    Raises
    ------
    TypeError
        When ``config`` is not a :class:`StudyConfig`.
    """
    if not isinstance(config, StudyConfig):
        raise TypeError(
            f"config: expected an rmtl.lab.study.StudyConfig, got {type(config).__name__}"
        )
    cells: list[Cell] = []
    overrides, parts = None, ()
    for at in config.grid():
        if config.synthetic_overrides(at) != overrides:
            overrides = config.synthetic_overrides(at)
            parts = _split(config, overrides)
        mode = config.context_of(at)
        train, valid, test = (with_context(p, None if mode == "none" else mode) for p in parts)
        result = experiment(
            train,
            valid,
            test,
            backbones=(config.backbone,),
            seeds=range(config.seeds),
            weightings=WEIGHTINGS,
            transfer=(),
            backbone_kwargs=config.backbone_kwargs,
            rmtl_kwargs=config.rmtl_config(),
            budget=config.budget,
        )
        cells.append(Cell(dict(at), mode, result))
        if on_cell is not None:
            on_cell(cells[-1])
    return cells


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A paired comparison of a study row: ``variant`` minus another, read from the
    ``key`` comparison of that variant's row in
    :meth:`rmtl.lab.experiment.ExperimentResult.table`.

    Parameters
    ----------
    name : str
        Its name in the study's rows and column keys.
    label : str
        Its label in tables and plots.
    variant : str
        The variant whose row holds it.
    key : str
        The comparison's key in that row.
    """

    name: str
    label: str
    variant: str
    key: str


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("effect", "critic effect: RMTL - continued", "rmtl", "effect"),
    Comparison("vs_static", "RMTL - static", "rmtl", "vs_static"),
    Comparison("vs_permuted", "RMTL - permuted", "rmtl", "vs_permuted"),
    Comparison("static_effect", "static - continued", "static", "effect"),
    Comparison("permuted_effect", "permuted - continued", "permuted", "effect"),
)
"""The study's comparisons; the first is the critic effect, the only primary one."""
PRIMARY = COMPARISONS[0].name
_STATS = ("", "_low", "_high", "_p")  # mean, 95% CI, raw paired t-test p


def _cell_rows(cell: Cell) -> list[dict[str, Any]]:
    """The study rows of one cell: one per task of its ``rmtl`` variant."""
    table = {(r["variant"], r["task"]): r for r in cell.result.table()}
    rows = []
    for (variant, task), rm in table.items():
        if variant != "rmtl":
            continue
        row: dict[str, Any] = {
            "axes": dict(cell.at),
            "context": cell.context,
            "task": task,
            "n": rm["n"],
            "epochs": rm["epochs"],
            "kept_epoch": rm["kept_epoch"],
            "flags": {
                v: table[v, task]["flags"]
                for v in ("baseline", *WEIGHTINGS)
                if table.get((v, task), {}).get("flags")
            },
        }
        for c in COMPARISONS:
            src = table.get((c.variant, task), {})
            row[f"{c.name}_checked"] = bool(src.get(f"{c.key}_checked", False))
            for m in METRICS:
                row.update(
                    {
                        f"{m}_{c.name}{s}": float(src.get(f"{m}_{c.key}{s}", math.nan))
                        for s in _STATS
                    }
                )
        rows.append(row)
    return rows


def study_rows(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One row per cell and task: ``axes`` (the cell's axis values), ``context``, ``task``,
    ``n`` seeds, the stage-3 ``epochs`` RMTL ran and its ``kept_epoch`` (means over seeds),
    ``flags`` (per arm with a failed convergence check: seeds per check), and for each
    comparison ``c`` of :data:`COMPARISONS` and metric ``m`` of :data:`METRICS` ``<m>_<c>``
    (mean paired difference over seeds), ``<m>_<c>_low``, ``_high`` (95% CI),
    ``<m>_<c>_p`` (raw two-sided paired t-test) and ``<c>_checked`` (no convergence flag on
    either side). The primary family, the critic effect on AUC and logloss of every row, is
    Holm-adjusted together: ``<m>_effect_p_holm``.

    Parameters
    ----------
    cells : sequence of Cell
        The finished cells.

    Returns
    -------
    list of dict
    """
    rows = [row for cell in cells for row in _cell_rows(cell)]
    keys = [(row, f"{m}_{PRIMARY}_p") for row in rows for m in METRICS]
    for (row, key), adjusted in zip(keys, stats.holm([row[key] for row, key in keys])):
        row[key + "_holm"] = adjusted
    return rows


def primary_size(rows: Sequence[Mapping[str, Any]]) -> int:
    """How many tests the primary family of ``rows`` holds (those with a p-value).

    Parameters
    ----------
    rows : sequence of mapping
        The study's rows (:func:`study_rows`).

    Returns
    -------
    int
    """
    return sum(not math.isnan(r[f"{m}_{PRIMARY}_p"]) for r in rows for m in METRICS)


def significant(row: Mapping[str, Any], comparison: str, metric: str) -> bool:
    """Whether a checked comparison is significant: for the critic effect a Holm-adjusted
    p below 0.05, for the exploratory ones a 95% CI that excludes 0.

    Parameters
    ----------
    row : mapping
        A study row (:func:`study_rows`).
    comparison : str
        The comparison's name (:data:`COMPARISONS`).
    metric : str
        ``"auc"`` or ``"logloss"``.

    Returns
    -------
    bool
    """
    if not row[f"{comparison}_checked"]:
        return False
    key = f"{metric}_{comparison}"
    if comparison == PRIMARY:
        return bool(row[key + "_p_holm"] < stats.ALPHA)
    return bool(row[key + "_low"] > 0 or row[key + "_high"] < 0)


def _entry(row: Mapping[str, Any], comparison: str, metric: str) -> str:
    key = f"{metric}_{comparison}"
    p = row[key + "_p_holm"] if comparison == PRIMARY else row[key + "_p"]
    star = "*" if significant(row, comparison, metric) else ""
    return f"{row[key]:+.4f}{star} [{row[key + '_low']:+.4f}, {row[key + '_high']:+.4f}] ({p:.2g})"


def value_label(value: Any) -> str:
    """An axis value as a label: numbers in the shortest form (``0.3``), the rest as text.

    Parameters
    ----------
    value : object
        The axis value.

    Returns
    -------
    str
    """
    return f"{value:g}" if isinstance(value, float) else str(value)


def _flags(row: Mapping[str, Any]) -> str:
    """The checks column: ``ok`` or, per flagged arm, each failed check and its seeds."""
    flagged = "; ".join(
        f"{arm} " + ", ".join(f"{f} {k}/{row['n']}" for f, k in fl.items())
        for arm, fl in row["flags"].items()
    )
    return flagged or "ok"


def _metric_table(rows: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
    axes = list(rows[0]["axes"])
    context = [] if CONTEXT in axes else ["context"]
    head = (
        axes
        + context
        + ["task", "seeds", "RMTL epochs (kept)"]
        + [c.label for c in COMPARISONS]
        + ["checks"]
    )
    table = [
        [value_label(r["axes"][a]) for a in axes]
        + [r[k] for k in context]
        + [r["task"], str(r["n"]), f"{r['epochs']:.1f} ({r['kept_epoch']:.1f})"]
        + [_entry(r, c.name, metric) for c in COMPARISONS]
        + [_flags(r)]
        for r in rows
    ]
    return [f"**{metric}**", "", *markdown_table(head, table)]


def study_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The study in Markdown: one table per metric, a row per cell and task, each comparison
    as mean paired difference over seeds ``[95% CI] (p)``; ``*`` marks a checked comparison
    whose CI excludes 0 (critic effect: whose Holm-adjusted p is below 0.05).

    Parameters
    ----------
    rows : sequence of mapping
        The study's rows (:func:`study_rows`).

    Returns
    -------
    str
    """
    if not rows:
        return "(no cells yet)"
    lines: list[str] = []
    for m in METRICS:
        lines += _metric_table(rows, m) + [""]
    lines.append(
        "Paired by seed; lower logloss is better. Critic effect p: Holm-adjusted over the "
        "study's primary family (the critic effect on AUC and logloss of every cell and task, "
        f"{primary_size(rows)} paired t-tests). Every other p is raw and exploratory. *: "
        "significant (critic effect: Holm p < 0.05; others: 95% CI excludes 0) with no "
        "convergence flag on either side."
    )
    return "\n".join(lines)


@dataclasses.dataclass
class SavedStudy:
    """A study on file: its ``config``, its ``rows`` (:func:`study_rows`) and ``run``, how it
    ran (command, CPU, threads, seconds, ...).

    Parameters
    ----------
    config : StudyConfig
        What the study ran.
    rows : list of dict
        Its rows (:func:`study_rows`).
    run : dict
        How it ran.
    """

    config: StudyConfig
    rows: list[dict[str, Any]]
    run: dict[str, Any]


def _json_safe(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def save_study(path: str | os.PathLike[str], study: SavedStudy) -> None:
    """Write ``study`` as JSON (NaN as null), atomically; :func:`load_study` reads it back.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    study : SavedStudy
        The study.
    """
    doc = {
        "config": study.config.to_dict(),
        "run": study.run,
        "rows": [_json_safe(r) for r in study.rows],
    }
    write_text(path, json.dumps(doc, allow_nan=False, separators=(",", ":")) + "\n")


def load_study(path: str | os.PathLike[str]) -> SavedStudy:
    """The study :func:`save_study` wrote to ``path`` (null read back as NaN); a file that is
    not one raises :class:`rmtl.CorruptFileError` naming it.

    Parameters
    ----------
    path : str or os.PathLike
        The file :func:`save_study` wrote.

    Returns
    -------
    SavedStudy

    Raises
    ------
    CorruptFileError
        When the file is not UTF-8 JSON holding ``rows`` (a list of objects), ``config`` (a
        valid :class:`StudyConfig`, as :meth:`StudyConfig.to_dict` wrote it) and ``run``,
        naming the file.
    """
    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
            rows = [{k: math.nan if v is None else v for k, v in r.items()} for r in doc["rows"]]
            return SavedStudy(StudyConfig.from_dict(doc["config"]), rows, doc["run"])
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise CorruptFileError(
                path, f"not a study written by rmtl.lab.study.save_study ({e!r})"
            ) from None


def grid_values(
    rows: Sequence[Mapping[str, Any]],
) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]:
    """The two axes of ``rows``: (knob, its values in order of first appearance), x then y.

    Parameters
    ----------
    rows : sequence of mapping
        The study's rows (:func:`study_rows`).

    Returns
    -------
    ((str, list), (str, list))
        (knob, values) of x, then of y; a ValueError unless the rows have two axes.

    Raises
    ------
    ValueError
        When ``rows`` is empty, its first row's ``axes`` do not hold exactly two knobs, or
        another row's ``axes`` hold other knobs than the first's.
    """
    knobs = list(rows[0]["axes"]) if rows else []
    if len(knobs) != 2:
        raise ValueError(f"rows: expected study rows over two axes, got axes {knobs}")
    other = next((list(r["axes"]) for r in rows if set(r["axes"]) != set(knobs)), None)
    if other is not None:
        raise ValueError(
            f"rows: expected every row over the first row's axes {knobs}, got a row over {other}"
        )
    x, y = (list(dict.fromkeys(r["axes"][k] for r in rows)) for k in knobs)
    return (knobs[0], x), (knobs[1], y)


def _effect_lines(row: Mapping[str, Any], comparison: str, metric: str, star: bool) -> list[str]:
    """A heat-map cell's text: the mean (``*`` when significant), its 95% CI, ``flagged``."""
    key = f"{metric}_{comparison}"
    lines = [
        f"{row[key]:+.4f}{'*' if star else ''}",
        f"[{row[key + '_low']:+.4f},",
        f"{row[key + '_high']:+.4f}]",
    ]
    return lines + ([] if row[f"{comparison}_checked"] else ["flagged"])


def effect_maps(
    rows: Sequence[Mapping[str, Any]],
    task: str,
    metric: str = "auc",
    comparisons: Optional[Sequence[str]] = None,
) -> Any:
    """Heat maps of a critic-effect study (:func:`rmtl.lab.study.study_rows`) over its two axes,
    one panel per comparison (default every one of :data:`rmtl.lab.study.COMPARISONS`: the
    critic effect and its controls) for one ``task`` and ``metric``.

    Colour is the mean paired difference on one diverging scale centred on 0 (blue: the first
    side better, i.e. higher AUC or lower logloss); each cell shows the mean and its 95% CI,
    with ``*`` where the comparison is significant and checked (critic effect: Holm p < 0.05;
    controls: the CI excludes 0) and ``flagged`` where a convergence check failed.

    Parameters
    ----------
    rows : sequence of mapping
        The study's rows (:func:`study_rows`).
    task : str
        The task shown.
    metric : str, default "auc"
        ``"auc"`` or ``"logloss"``.
    comparisons : str or sequence of str, optional
        Names of the comparisons shown (a string: one name; None: all).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When no row is of ``task``, ``comparisons`` is empty or holds a name not in
        :data:`COMPARISONS`, or the rows are not over two axes (:func:`grid_values`).
    """
    known = [c.name for c in COMPARISONS]
    if isinstance(comparisons, str):  # one name, not a substring of names
        comparisons = [comparisons]
    names = None if comparisons is None else list(comparisons)
    unknown = [n for n in names or () if n not in known]
    if names is not None and (unknown or not names):
        raise ValueError(
            f"comparisons: expected names from {known}, got {names}"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    chosen = [c for c in COMPARISONS if names is None or c.name in names]
    mine = [r for r in rows if r["task"] == task]
    if not mine:
        raise ValueError(
            f"task: expected a task of the rows, {sorted({r['task'] for r in rows})}, got {task!r}"
        )
    (xk, xs), (yk, ys) = grid_values(rows)
    where = [(ys.index(r["axes"][yk]), xs.index(r["axes"][xk])) for r in mine]
    means = {c.name: np.full((len(ys), len(xs)), np.nan) for c in chosen}
    for c in chosen:
        for (i, j), r in zip(where, mine):
            means[c.name][i, j] = r[f"{metric}_{c.name}"]
    limit = (
        float(np.nanmax(np.abs(np.stack(list(means.values()))), initial=0.0)) or 1e-12
    )  # one scale, centred
    fig, axes = plots.figure(len(chosen), width=1.1 * len(xs) + 1.2, height=0.9 * len(ys) + 1.4)
    for ax, c in zip(axes, chosen):
        image = ax.imshow(
            np.ma.masked_invalid(means[c.name]),
            cmap="RdBu" if metric == "auc" else "RdBu_r",
            vmin=-limit,
            vmax=limit,
            origin="lower",
            aspect="auto",
        )
        for (i, j), r in zip(where, mine):
            plots.annotate_cell(
                ax, image, i, j, _effect_lines(r, c.name, metric, significant(r, c.name, metric))
            )
        ax.set(
            xticks=range(len(xs)),
            xticklabels=[value_label(v) for v in xs],
            yticks=range(len(ys)),
            yticklabels=[value_label(v) for v in ys],
            xlabel=xk,
            ylabel=yk,
            title=c.label,
        )
        ax.title.set_fontsize("small")
    fig.colorbar(image, ax=list(axes), label=f"{task} {metric} difference", shrink=0.9)
    fig.suptitle(
        f"{task} {metric}: mean paired difference over seeds [95% CI]; * significant "
        "(critic effect: Holm p < 0.05; controls: CI excludes 0)",
        fontsize="small",
    )
    return fig
