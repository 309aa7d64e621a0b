"""What an experiment reports: :class:`ExperimentResult` (every seed's records, the summary
with paired comparisons, confidence intervals, the primary family's Holm adjustment and
power) and its tables, one row per model with AUC / Logloss / s-Logloss per task, as
Markdown (the terminal and README form), CSV (one number per cell) and JSON, and every
per-seed record as a tidy pandas DataFrame (:meth:`ExperimentResult.to_frame`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._frames import pandas
from ..balancers import LABELS as BALANCER_LABELS
from ..models import BACKBONES
from . import convergence, stats
from .graph import BASELINE, CONTROL, CONTROLS, METRICS, balancer_of, is_balanced
from .stats import ALPHA, TARGET_EFFECT

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "ExperimentResult",
    "PRIMARY",
    "paper_rows",
    "to_markdown",
    "per_seed",
    "to_csv",
    "to_json",
    "undefined_notes",
]

HEADERS = {"auc": "AUC", "logloss": "Logloss", "s_logloss": "s-Logloss"}
COMPARISONS = ("diff", "effect", "vs_static", "vs_permuted", "rmtl_vs")
STATS = (
    ("mean", "std")
    + tuple(f"{c}{s}" for c in COMPARISONS for s in ("", "_low", "_high", "_p"))
    + ("effect_p_holm", "effect_mde", "effect_seeds_for")
)
_AGAINST = {
    "diff": BASELINE,
    "effect": CONTROL,
    "vs_static": "static",
    "vs_permuted": "permuted",
    "rmtl_vs": "rmtl",
}


# the primary family: the critic effect of this variant (against continued) on these metrics
PRIMARY = ("rmtl", ("auc", "logloss"))


@dataclasses.dataclass
class ExperimentResult:
    """Test-set metrics of every (model, variant, seed, task), and their summary.

    ``records`` holds one dict per model, variant, seed and task with ``auc``, ``logloss``,
    ``s_logloss`` and ``flags`` (the convergence checks the run failed, see
    :func:`rmtl.lab.convergence.check`). Variants: ``baseline`` (stage 1 only), a weighting
    name (``rmtl``, ``constant``, ``label``, ``neg_q``: stages 2 and 3 on top of that baseline;
    ``continued``: stage 3 with every weight one, the control for extra training) and
    ``rmtl[critics of X]`` (stage 3 with the critics learned with backbone X: transfer).
    ``oracle`` gives, per task, the AUC and logloss of the true probabilities when the test
    data carries them (synthetic data).

    Parameters
    ----------
    records : list of dict
        One dict per model, variant, seed and task: ``model``, ``variant``, ``seed``,
        ``task``, ``auc``, ``logloss``, ``s_logloss``, ``flags`` and the budget (``epochs``,
        ``kept_epoch``, ``steps``).
    oracle : dict
        Task -> {"auc": ..., "logloss": ...} of the true probabilities (empty without them).
    config : dict
        The experiment's settings, as :func:`rmtl.experiment` records them.

    See Also
    --------
    rmtl.experiment : what makes one.
    to_frame : every record as a tidy pandas DataFrame.
    rmtl.lab.report.to_csv, rmtl.lab.report.to_json : the other output forms.

    Examples
    --------
    >>> res = rmtl.experiment(train, valid, test)  # doctest: +SKIP
    >>> print(res.to_markdown())  # doctest: +SKIP
    >>> res.to_frame().groupby(["name", "task", "metric"])["value"].mean()  # doctest: +SKIP
    """

    records: list[dict[str, Any]]
    oracle: dict[str, dict[str, float]]
    config: dict[str, Any]

    def table(self) -> list[dict[str, Any]]:
        """The summary: one row per (model, variant, task).

        Returns
        -------
        list of dict
            One dict per row, with the keys below.

        Notes
        -----
        Each row has ``model``, ``variant``, ``task``, ``flags``, ``n`` seeds, ``<metric>_mean``,
        ``<metric>_std`` (sample std), the budget the arm ran (``epochs``, ``kept_epoch``,
        ``steps``: means over seeds; ``steps_by_seed``) and its paired comparisons by seed (lower
        logloss is better). Each comparison ``c`` against another variant of the same backbone gives
        ``<metric>_<c>`` (mean difference, this row minus the other), ``<metric>_<c>_low`` and
        ``_high`` (95% confidence interval), ``<metric>_<c>_p`` (two-sided paired t-test; NaN with
        fewer than two seeds or identical differences) and ``<c>_checked`` (True when neither side
        failed a convergence check):

        - ``diff``: against ``baseline`` (every other variant);
        - ``effect``: against ``continued``, the critic effect (every variant but those two);
        - ``vs_static``, ``vs_permuted``: ``rmtl`` against those controls, when they ran.

        The **primary family**, declared before any data: the critic effect (``rmtl`` minus
        ``continued``) of every backbone on every task's AUC and logloss. Only its tests are
        Holm-adjusted (``<metric>_effect_p_holm``, over :meth:`primary` tests), and each gets
        ``<metric>_effect_mde``, the smallest effect the run could detect with 80% power at
        the strictest Holm level (0.05 / family size) given the seeds and the observed spread,
        and ``<metric>_effect_seeds_for``, the seeds that would detect :data:`TARGET_EFFECT`
        there. Every other p-value is exploratory: raw, for orientation only.
        """
        groups: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
        for r in self.records:
            groups.setdefault((r["model"], r["variant"], r["task"]), {})[r["seed"]] = r
        flags = {
            key: convergence.summary([r.get("flags", []) for r in by_seed.values()])
            for key, by_seed in groups.items()
        }
        rows = []
        for (model, variant, task), by_seed in groups.items():
            seeds = sorted(by_seed)
            row: dict[str, Any] = {
                "model": model,
                "variant": variant,
                "task": task,
                "n": len(by_seed),
                "flags": flags[model, variant, task],
            }
            for key in ("epochs", "kept_epoch", "steps"):
                row[key] = float(np.mean([by_seed[s].get(key, np.nan) for s in seeds]))
            row["steps_by_seed"] = {s: by_seed[s].get("steps") for s in seeds}
            for cmp, other in _comparisons(variant):
                ref = groups.get((model, other, task), {})
                pairs = [s for s in seeds if s in ref]
                if not pairs:
                    continue
                row[f"{cmp}_checked"] = not row["flags"] and not flags[model, other, task]
                for m in METRICS:
                    own, theirs = [by_seed[s][m] for s in pairs], [ref[s][m] for s in pairs]
                    # rmtl_vs: RMTL minus this row (RMTL against the balancer)
                    d = stats.paired(theirs, own) if cmp == "rmtl_vs" else stats.paired(own, theirs)
                    row.update(
                        {
                            f"{m}_{cmp}": d.mean,
                            f"{m}_{cmp}_low": d.low,
                            f"{m}_{cmp}_high": d.high,
                            f"{m}_{cmp}_p": d.p,
                            f"{m}_{cmp}_sd": d.sd,
                        }
                    )
            for m in METRICS:
                v = np.array([by_seed[s][m] for s in seeds], np.float64)
                row[f"{m}_mean"] = float(v.mean())
                row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            rows.append(row)
        family = [
            (row, f"{m}_effect")
            for row in rows
            if row["variant"] == PRIMARY[0]
            for m in PRIMARY[1]
            if f"{m}_effect" in row
        ]
        alpha = ALPHA / max(1, sum(not np.isnan(row[k + "_p"]) for row, k in family))
        for (row, k), adjusted in zip(family, stats.holm([row[k + "_p"] for row, k in family])):
            row[k + "_p_holm"] = adjusted
            row[k + "_mde"] = stats.detectable_effect(row[k + "_sd"], row["n"], alpha)
            row[k + "_seeds_for"] = stats.seeds_needed(TARGET_EFFECT, row[k + "_sd"], alpha)
        balanced = [
            (row, f"{m}_{cmp}")
            for row in rows
            if is_balanced(row["variant"])
            for cmp in ("diff", "rmtl_vs")
            for m in PRIMARY[1]
            if f"{m}_{cmp}" in row
        ]
        for (row, k), adjusted in zip(balanced, stats.holm([row[k + "_p"] for row, k in balanced])):
            row[k + "_p_holm"] = adjusted
        return rows

    def primary(self) -> int:
        """How many tests the primary family holds.

        Returns
        -------
        int
            The critic-effect tests with a p-value (see :meth:`table`).
        """
        return sum(
            1
            for row in self.table()
            for k in row
            if k.endswith("_effect_p_holm") and not np.isnan(row[k])
        )

    def balancer_tests(self) -> int:
        """How many tests the balancer family holds.

        Returns
        -------
        int
            The balancer comparisons with a p-value.
        """
        return sum(
            1
            for row in self.table()
            if is_balanced(row["variant"])
            for k in row
            if k.endswith("_p_holm") and not np.isnan(row[k])
        )

    def correction(self) -> str:
        """The multiple-comparison corrections the table applies, in words.

        Returns
        -------
        str
            One sentence per family, for a report.
        """
        balancers = self.balancer_tests()
        return (
            "primary family: the critic effect (RMTL - Continued) of each backbone on each "
            f"task's AUC and logloss, {self.primary()} paired t-tests, Holm-adjusted "
            "(family-wise error rate "
            f"{ALPHA:g})"
            + (
                f"; balancer family: every balancer row against the equal-weight baseline and "
                f"RMTL against every balancer row on AUC and logloss, {balancers} paired "
                "t-tests, Holm-adjusted"
                if balancers
                else ""
            )
            + "; every other p-value is exploratory (raw, unadjusted)"
        )

    def to_markdown(self) -> str:
        """The paper-style Markdown report.

        Returns
        -------
        str
            See :func:`rmtl.lab.report.to_markdown`.
        """
        return to_markdown(self)

    def to_frame(self) -> pd.DataFrame:
        """Every per-seed record as a tidy (long) pandas DataFrame: one row per model,
        variant, seed, task and metric.

        Returns
        -------
        pandas.DataFrame
            Columns:

            - ``model`` (backbone, e.g. ``mmoe``), ``variant`` (``baseline``, ``rmtl``,
              ``continued``, ...) and ``name`` (the tables' label, e.g. ``RMTL-MMoE``);
            - ``seed`` (int), ``task`` (e.g. ``click``);
            - ``metric`` (``auc``, ``logloss``, ``s_logloss``) and ``value`` (float; NaN where
              the metric is undefined, e.g. an AUC on one class);
            - ``epochs``, ``kept_epoch``, ``steps``: the budget the arm ran in that seed
              (NaN when not recorded);
            - ``flags``: the convergence checks the run failed, comma-separated (empty when
              it passed).

            ``df.attrs["oracle"]`` and ``df.attrs["config"]`` hold :attr:`oracle` and
            :attr:`config`. Summaries are one ``groupby`` away, e.g.
            ``df.groupby(["name", "task", "metric"])["value"].agg(["mean", "std"])``.

        Raises
        ------
        ImportError
            When pandas is not installed (``pip install 'rmtl[data]'``).
        """
        pd = pandas()
        rows = [
            {
                "model": r["model"],
                "variant": r["variant"],
                "name": display_name(r["model"], r["variant"]),
                "seed": int(r["seed"]),
                "task": r["task"],
                "metric": m,
                "value": float("nan") if _missing(r.get(m)) else float(r[m]),
                "epochs": _number(r.get("epochs")),
                "kept_epoch": _number(r.get("kept_epoch")),
                "steps": _number(r.get("steps")),
                "flags": ",".join(r.get("flags") or ()),
            }
            for r in self.records
            for m in METRICS
        ]
        columns = ["model", "variant", "name", "seed", "task", "metric", "value"]
        columns += ["epochs", "kept_epoch", "steps", "flags"]
        df = pd.DataFrame(rows, columns=columns)
        df["seed"] = df["seed"].astype(np.int64)
        df.attrs["oracle"] = self.oracle
        df.attrs["config"] = self.config
        return df


def _number(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _comparisons(variant: str) -> list[tuple[str, str]]:
    """(comparison name, other variant) pairs of a row: see :meth:`ExperimentResult.table`."""
    out = [] if variant == BASELINE else [("diff", BASELINE)]
    if is_balanced(variant):
        return out + [("rmtl_vs", "rmtl")]
    if variant not in (BASELINE, CONTROL):
        out.append(("effect", CONTROL))
    if variant == "rmtl":
        out += [(f"vs_{c}", c) for c in CONTROLS[1:]]
    return out


def display_name(model: str, variant: str) -> str:
    """``("mmoe", "baseline")`` -> ``MMoE``; ``("mmoe", "rmtl")`` -> ``RMTL-MMoE``;
    ``("mmoe", "continued")`` -> ``Continued-MMoE``; the other controls ``Static-MMoE`` and
    ``Permuted-MMoE``; balancers ``UW-MMoE`` (from scratch) and ``Continued[UW]-MMoE``
    (stage 3); other weightings and transfers in brackets: ``RMTL-MMoE (critics of esmm)``."""
    name = BACKBONES[model].__name__ if model in BACKBONES else model
    if variant == BASELINE:
        return name
    balancer = balancer_of(variant)
    if balancer is not None:
        label = BALANCER_LABELS.get(balancer, balancer)
        return (
            f"{label}-{name}" if variant.startswith("balanced[") else f"Continued[{label}]-{name}"
        )
    if variant == "rmtl":
        return f"RMTL-{name}"
    if variant in CONTROLS:
        return f"{variant.capitalize()}-{name}"
    inner = variant[len("rmtl[") : -1] if variant.startswith("rmtl[") else variant
    return f"RMTL-{name} ({inner})"


def paper_rows(result: ExperimentResult) -> list[dict[str, Any]]:
    """One dict per (model, variant): ``name``, ``model``, ``variant``, ``seeds``, the budget
    (``epochs``, ``kept_epoch``, ``steps``: means over seeds; ``steps_by_seed``), ``flags``
    (seeds that failed each convergence check), ``<comparison>_checked`` and, per task and
    metric, ``<task>/<metric>`` -> the statistics of :meth:`ExperimentResult.table` with the
    metric's prefix removed (``mean``, ``std``, ``diff``, ``diff_low``, ``diff_high``,
    ``diff_p``, ``effect``, ..., ``effect_p_holm``, ``effect_mde``, ``effect_seeds_for``).

    Parameters
    ----------
    result : ExperimentResult

    Returns
    -------
    list of dict
        One per (model, variant), as above.
    """
    rows: dict[tuple, dict[str, Any]] = {}
    for r in result.table():
        key = (r["model"], r["variant"])
        row = rows.setdefault(
            key,
            {
                "name": display_name(*key),
                "model": key[0],
                "variant": key[1],
                "seeds": r["n"],
                "flags": r["flags"],
                "epochs": r["epochs"],
                "kept_epoch": r["kept_epoch"],
                "steps": r["steps"],
                "steps_by_seed": r["steps_by_seed"],
            },
        )
        row.update({k: v for k, v in r.items() if k.endswith("_checked")})
        for m in METRICS:
            row[f"{r['task']}/{m}"] = {
                k[len(m) + 1 :]: v for k, v in r.items() if k.startswith(f"{m}_")
            }
    order = {name: i for i, name in enumerate(result.config.get("backbones", []))}
    return sorted(
        rows.values(),
        key=lambda row: (
            row["variant"] != BASELINE,
            order.get(row["model"], len(order)),
            _rank(row["variant"]),
            row["variant"],
        ),
    )


def _rank(variant: str) -> int:
    """Row order within a backbone: balancers from scratch, then RMTL, its controls and other
    weightings (alphabetically), then the controls with balancers."""
    if variant.startswith("balanced["):
        return 0
    return 2 if is_balanced(variant) else 1


def _tasks(result: ExperimentResult) -> list[str]:
    return list(dict.fromkeys(r["task"] for r in result.records))


def _cell(v: dict[str, float]) -> str:
    return f"{v['mean']:.4f}" + ("" if math.isnan(v["std"]) else f" ± {v['std']:.4f}")


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def _diff_cell(v: dict[str, float], cmp: str, star: bool) -> str:
    """``+0.0012* [-0.0003, +0.0027] (0.041)``: mean, 95% CI, p (Holm for the primary family)."""
    ci = (
        "" if math.isnan(v[f"{cmp}_low"]) else f" [{v[f'{cmp}_low']:+.4f}, {v[f'{cmp}_high']:+.4f}]"
    )
    p = v.get(f"{cmp}_p_holm", v[f"{cmp}_p"])
    return f"{v[cmp]:+.4f}{'*' if star else ''}{ci} ({_p(p)})"


def _budget(row: dict[str, Any]) -> str:
    """``8/10 (96)``: epochs kept / run, Adam steps to the kept weights (means over seeds)."""
    if math.isnan(row["epochs"]):
        return "n/a"
    return f"{_short(row['kept_epoch'])}/{_short(row['epochs'])} ({_short(row['steps'])})"


def _short(x: float) -> str:
    """A mean over seeds with at most one decimal: ``23``, ``8.3``."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def markdown_table(
    head: Sequence[str], rows: Iterable[Sequence[str]], align: str = ""
) -> list[str]:
    """A Markdown table as lines: the header, the alignment row and one line per row;
    ``align`` gives each column's alignment by letter (``l`` left, ``r`` right; columns past
    it are left-aligned). Every table of the lab (results, the study, sweeps) is drawn here."""
    marks = ["---:" if a == "r" else "---" for a in align.ljust(len(head), "l")]
    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(marks) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def to_markdown(result: ExperimentResult, metrics: Sequence[str] = METRICS) -> str:
    """The results as Markdown: a table of mean ± std over seeds per model with the budget
    each arm ran and its convergence checks (and what to change for each failed one); the
    primary family, the critic effect RMTL − Continued per backbone on AUC and logloss (mean
    paired difference, 95% confidence interval, Holm-adjusted p over the family, starred
    below 0.05 when neither row is flagged) with the smallest effect the run could detect
    and the seeds a 0.001 effect needs; then every other paired difference as exploratory
    (raw p, never starred); the oracle (true probabilities) when the data knows it; a note
    for each task whose AUC is undefined (nan), saying why (:func:`undefined_notes`).

    Parameters
    ----------
    result : ExperimentResult
    metrics : sequence of str
        The table's metrics (default ``auc``, ``logloss``, ``s_logloss``).

    Returns
    -------
    str
        Markdown.
    """
    tasks = _tasks(result)
    values = [f"{t} {HEADERS[m]}" for t in tasks for m in metrics]
    rows = paper_rows(result)
    main = []
    for row in rows:
        checks = ", ".join(f"{flag} {n}/{row['seeds']}" for flag, n in row["flags"].items()) or "ok"
        main.append(
            [row["name"], str(row["seeds"]), _budget(row)]
            + [_cell(row[f"{t}/{m}"]) for t in tasks for m in metrics]
            + [checks]
        )
    if result.oracle:
        oracle = [
            f"{result.oracle[t][m]:.4f}" if m in result.oracle[t] else ""
            for t in tasks
            for m in metrics
        ]
        main.append(["Oracle (true p)", "", ""] + oracle + [""])
    numbers = "l" + "r" * (len(values) + 2)
    lines = markdown_table(["Model", "Seeds", "Epochs", *values, "Checks"], main, numbers)
    lines += [
        "",
        "Epochs: kept / run (Adam steps to the kept weights), means over seeds; baselines: "
        "stage 1, the other rows: stage 3.",
    ]
    raised = [flag for flag in convergence.ADVICE if any(flag in row["flags"] for row in rows)]
    if raised:
        lines += [
            "",
            "Convergence checks failed (flag: seeds that failed / all); a comparison involving a "
            "flagged row is never starred:",
        ]
        lines += [f"- {flag}: {convergence.ADVICE[flag]}." for flag in raised]
    names = {(row["model"], row["variant"]): row["name"] for row in rows}
    primary = [m for m in ("auc", "logloss") if m in metrics]
    first = [row for row in rows if row["variant"] == "rmtl" and "effect" in row[f"{tasks[0]}/auc"]]
    if first and primary:
        keys = [(t, m) for t in tasks for m in primary]
        effects, mde = [], []
        for row in first:
            label = [
                f"{row['name']} − {names.get((row['model'], CONTROL), CONTROL)}",
                str(row["seeds"]),
            ]
            star = [
                row["effect_checked"] and row[f"{t}/{m}"]["effect_p_holm"] < 0.05 for t, m in keys
            ]
            effects.append(
                label + [_diff_cell(row[f"{t}/{m}"], "effect", s) for (t, m), s in zip(keys, star)]
            )
            mde.append(label + [_detectable(row[f"{t}/{m}"]) for t, m in keys])
        head = [f"{t} {HEADERS[m]}" for t, m in keys]
        lines += [
            "",
            "Critic effect, the primary family (RMTL − Continued, paired by seed; mean [95% CI] "
            "(Holm-adjusted p)):",
            "",
            *markdown_table(
                ["Critic effect (primary)", "Seeds", *head], effects, "l" + "r" * (len(head) + 1)
            ),
            "",
            "Smallest critic effect this run could detect with 80% power (two-sided paired t-test "
            f"at 0.05 / {result.primary()}, the strictest Holm level, given the seeds and the "
            "observed spread), "
            f"and in brackets the seeds that would detect an effect of {TARGET_EFFECT:g}:",
            "",
            *markdown_table(["Detectable", "Seeds", *head], mde, "l" + "r" * (len(head) + 1)),
        ]
    lines += _balancer_lines(result, rows, names, tasks, metrics)
    explo = []
    for row in rows:
        for cmp in COMPARISONS:
            if (
                cmp not in row[f"{tasks[0]}/{metrics[0]}"]
                or (cmp == "effect" and row["variant"] == "rmtl")
                or is_balanced(row["variant"])
            ):
                continue
            other = _AGAINST[cmp]
            explo.append(
                [f"{row['name']} − {names.get((row['model'], other), other)}", str(row["seeds"])]
                + [_diff_cell(row[f"{t}/{m}"], cmp, False) for t in tasks for m in metrics]
            )
    if explo:
        lines += [
            "",
            "Exploratory paired differences by seed (mean [95% CI] (raw p); lower logloss is "
            "better; never starred):",
            "",
            *markdown_table(["Comparison", "Seeds", *values], explo, "l" + "r" * (len(values) + 1)),
        ]
    lines += [
        "",
        f"{result.correction()}; * Holm-adjusted p < 0.05 and both rows pass the convergence "
        "checks.",
    ]
    lines += undefined_notes(result)
    return "\n".join(lines)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))  # None: NaN after JSON


def undefined_notes(result: ExperimentResult) -> list[str]:
    """A line for each task whose AUC is NaN in some record, saying why (the test set's
    labels of that task hold one class only, or the records' count where the reason is not
    known); none when every AUC is defined.

    Parameters
    ----------
    result : ExperimentResult

    Returns
    -------
    list of str
    """
    notes = []
    rows = result.config.get("rows", {}).get("test")
    positives = result.config.get("test_positives", {})
    for task in _tasks(result):
        undefined = [r for r in result.records if r["task"] == task and _missing(r.get("auc"))]
        if not undefined:
            continue
        if task in positives and rows is not None and positives[task] in (0, rows):
            why = (
                f"task {task} has only one class in the test set ({positives[task]} positive "
                f"of {rows} rows)"
            )
        else:
            why = f"task {task} has no AUC in {len(undefined)} of its records"
        notes.append(f"AUC undefined (nan): {why}.")
    return ["", *notes] if notes else []


def _balancer_lines(
    result: ExperimentResult,
    rows: Sequence[dict[str, Any]],
    names: dict[tuple[str, str], str],
    tasks: Sequence[str],
    metrics: Sequence[str],
) -> list[str]:
    """The balancer family's table: each balancer row against the equal-weight baseline and
    RMTL against it (Holm over the family on AUC and logloss; raw p on the other metrics)."""
    out = []
    for row in rows:
        if not is_balanced(row["variant"]):
            continue
        for cmp, label in (
            ("diff", f"{row['name']} − {names.get((row['model'], BASELINE), BASELINE)}"),
            ("rmtl_vs", f"{names.get((row['model'], 'rmtl'), 'RMTL')} − {row['name']}"),
        ):
            if cmp not in row[f"{tasks[0]}/{metrics[0]}"]:
                continue
            cells = []
            for t in tasks:
                for m in metrics:
                    v = row[f"{t}/{m}"]
                    star = bool(row.get(f"{cmp}_checked")) and v.get(f"{cmp}_p_holm", 1.0) < 0.05
                    cells.append(_diff_cell(v, cmp, star))
            out.append([label, str(row["seeds"]), *cells])
    if not out:
        return []
    head = [f"{t} {HEADERS[m]}" for t in tasks for m in metrics]
    return [
        "",
        "Balancers against equal weights and RMTL against each balancer (paired by seed; mean "
        f"[95% CI] (p: Holm-adjusted over the {result.balancer_tests()} AUC and logloss tests "
        "of this table, raw for s-Logloss)):",
        "",
        *markdown_table(["Balancer comparison", "Seeds", *head], out, "l" + "r" * (len(head) + 1)),
    ]


def per_seed(result: ExperimentResult, metric: str = "auc") -> str:
    """Per backbone and seed, what every arm ran and did, as Markdown: the epochs kept / run
    and, for the first task, ``metric`` minus the same seed's baseline. Shows whether arms
    compared with each other trained equal budgets, and how a difference follows them.

    Parameters
    ----------
    result : ExperimentResult
    metric : str
        ``auc``, ``logloss`` or ``s_logloss``.

    Returns
    -------
    str
        Markdown.
    """
    task = _tasks(result)[0]
    by = {(r["model"], r["seed"], r["variant"]): r for r in result.records if r["task"] == task}
    variants = list(dict.fromkeys(r["variant"] for r in result.records if r["variant"] != BASELINE))
    staged = dict.fromkeys(r["model"] for r in result.records if r["variant"] != BASELINE)
    table = []
    for model, seed in sorted(
        {(r["model"], r["seed"]) for r in result.records if r["model"] in staged},
        key=lambda ms: (list(staged).index(ms[0]), ms[1]),
    ):
        base = by[model, seed, BASELINE]
        cells = [display_name(model, BASELINE), str(seed), f"{base['kept_epoch']}/{base['epochs']}"]
        for v in variants:
            r = by.get((model, seed, v))
            cells.append(
                ""
                if r is None
                else f"{r['kept_epoch']}/{r['epochs']}: {r[metric] - base[metric]:+.4f}"
            )
        table.append(cells)
    head = ["Model", "Seed", "Baseline", *variants]
    title = f"Per seed: epochs kept / run and {task} {HEADERS[metric]} minus the baseline"
    return "\n".join([title, "", *markdown_table(head, table, "l" + "r" * (len(head) - 1))])


def _detectable(v: dict[str, float]) -> str:
    mde, n = v.get("effect_mde", math.nan), v.get("effect_seeds_for")
    if math.isnan(mde):
        return "n/a"
    return f"{mde:.4f} ({n if n <= 100_000 else '> 100000'})"


def to_csv(result: ExperimentResult) -> str:
    """The summary as CSV, in long form.

    Parameters
    ----------
    result : ExperimentResult

    Returns
    -------
    str
        CSV text with the columns model, variant, name, task, metric, seeds, epochs,
        kept_epoch, steps and :data:`STATS` (see :func:`paper_rows`; empty where a statistic
        does not apply), and one ``oracle`` row per task and metric when the data knows them.
    """
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        [
            "model",
            "variant",
            "name",
            "task",
            "metric",
            "seeds",
            "epochs",
            "kept_epoch",
            "steps",
            *STATS,
        ]
    )
    for row in paper_rows(result):
        for t in _tasks(result):
            for m in METRICS:
                v = row[f"{t}/{m}"]
                w.writerow(
                    [
                        row["model"],
                        row["variant"],
                        row["name"],
                        t,
                        m,
                        row["seeds"],
                        row["epochs"],
                        row["kept_epoch"],
                        row["steps"],
                    ]
                    + [v.get(s, "") for s in STATS]
                )
    for t, o in result.oracle.items():
        for m, value in o.items():
            w.writerow(
                ["oracle", "", "Oracle (true p)", t, m, "", "", "", "", value]
                + [""] * (len(STATS) - 1)
            )
    return out.getvalue()


def to_json(result: ExperimentResult) -> str:
    """The whole result as JSON.

    Parameters
    ----------
    result : ExperimentResult

    Returns
    -------
    str
        JSON text holding every per-seed record, the summary rows, the multiple-comparison
        correction applied, the oracle and the experiment's config (NaN as null).
    """

    def clean(x: Any) -> Any:
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(
        clean(
            {
                "rows": paper_rows(result),
                "correction": result.correction(),
                "records": result.records,
                "oracle": result.oracle,
                "config": result.config,
            }
        ),
        indent=1,
    )
