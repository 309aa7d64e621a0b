"""Paper-style result tables: one row per model, AUC / Logloss / s-Logloss per task.

Built from an :class:`rmtl.lab.experiment.ExperimentResult`; written as Markdown (the
terminal and README form), CSV (one number per cell, for spreadsheets) and JSON.
"""
from __future__ import annotations

import csv
import io
import json
import math
from typing import TYPE_CHECKING, Any, Dict, List, Sequence

from ..models import BACKBONES
from . import convergence
from .graph import BASELINE, CONTROL, CONTROLS, METRICS
from .stats import TARGET_EFFECT

if TYPE_CHECKING:
    from .experiment import ExperimentResult

__all__ = ["paper_rows", "to_markdown", "per_seed", "to_csv", "to_json"]

HEADERS = {"auc": "AUC", "logloss": "Logloss", "s_logloss": "s-Logloss"}
COMPARISONS = ("diff", "effect", "vs_static", "vs_permuted")
STATS = ("mean", "std") + tuple(f"{c}{s}" for c in COMPARISONS for s in ("", "_low", "_high", "_p")) + (
    "effect_p_holm", "effect_mde", "effect_seeds_for")
_AGAINST = {"diff": BASELINE, "effect": CONTROL, "vs_static": "static", "vs_permuted": "permuted"}


def display_name(model: str, variant: str) -> str:
    """``("mmoe", "baseline")`` -> ``MMoE``; ``("mmoe", "rmtl")`` -> ``RMTL-MMoE``;
    ``("mmoe", "continued")`` -> ``Continued-MMoE``; the other controls ``Static-MMoE`` and
    ``Permuted-MMoE``; other weightings and transfers in brackets:
    ``RMTL-MMoE (critics of esmm)``."""
    name = BACKBONES[model].__name__ if model in BACKBONES else model
    if variant == BASELINE:
        return name
    if variant == "rmtl":
        return f"RMTL-{name}"
    if variant in CONTROLS:
        return f"{variant.capitalize()}-{name}"
    inner = variant[len("rmtl["):-1] if variant.startswith("rmtl[") else variant
    return f"RMTL-{name} ({inner})"


def paper_rows(result: "ExperimentResult") -> List[Dict[str, Any]]:
    """One dict per (model, variant): ``name``, ``model``, ``variant``, ``seeds``, the budget
    (``epochs``, ``kept_epoch``, ``steps``: means over seeds; ``steps_by_seed``), ``flags``
    (seeds that failed each convergence check), ``<comparison>_checked`` and, per task and
    metric, ``<task>/<metric>`` -> the statistics of :meth:`ExperimentResult.table` with the
    metric's prefix removed (``mean``, ``std``, ``diff``, ``diff_low``, ``diff_high``,
    ``diff_p``, ``effect``, ..., ``effect_p_holm``, ``effect_mde``, ``effect_seeds_for``)."""
    rows: Dict[tuple, Dict[str, Any]] = {}
    for r in result.table():
        key = (r["model"], r["variant"])
        row = rows.setdefault(key, {"name": display_name(*key), "model": key[0], "variant": key[1], "seeds": r["n"],
                                    "flags": r["flags"], "epochs": r["epochs"], "kept_epoch": r["kept_epoch"],
                                    "steps": r["steps"], "steps_by_seed": r["steps_by_seed"]})
        row.update({k: v for k, v in r.items() if k.endswith("_checked")})
        for m in METRICS:
            row[f"{r['task']}/{m}"] = {k[len(m) + 1:]: v for k, v in r.items() if k.startswith(f"{m}_")}
    order = {name: i for i, name in enumerate(result.config.get("backbones", []))}
    return sorted(rows.values(), key=lambda row: (row["variant"] != BASELINE, order.get(row["model"], len(order)),
                                                  row["variant"]))


def _tasks(result: "ExperimentResult") -> List[str]:
    return list(dict.fromkeys(r["task"] for r in result.records))


def _cell(v: Dict[str, float]) -> str:
    return f"{v['mean']:.4f}" + ("" if math.isnan(v["std"]) else f" ± {v['std']:.4f}")


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def _diff_cell(v: Dict[str, float], cmp: str, star: bool) -> str:
    """``+0.0012* [-0.0003, +0.0027] (0.041)``: mean, 95% CI, p (Holm for the primary family)."""
    ci = "" if math.isnan(v[f"{cmp}_low"]) else f" [{v[f'{cmp}_low']:+.4f}, {v[f'{cmp}_high']:+.4f}]"
    p = v.get(f"{cmp}_p_holm", v[f"{cmp}_p"])
    return f"{v[cmp]:+.4f}{'*' if star else ''}{ci} ({_p(p)})"


def _budget(row: Dict[str, Any]) -> str:
    """``8/10 (96)``: epochs kept / run, Adam steps to the kept weights (means over seeds)."""
    if math.isnan(row["epochs"]):
        return "n/a"
    return f"{_short(row['kept_epoch'])}/{_short(row['epochs'])} ({_short(row['steps'])})"


def _short(x: float) -> str:
    """A mean over seeds with at most one decimal: ``23``, ``8.3``."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def to_markdown(result: "ExperimentResult", metrics: Sequence[str] = METRICS) -> str:
    """The results as Markdown: a table of mean ± std over seeds per model with the budget
    each arm ran and its convergence checks (and what to change for each failed one); the
    primary family, the critic effect RMTL − Continued per backbone on AUC and logloss (mean
    paired difference, 95% confidence interval, Holm-adjusted p over the family, starred
    below 0.05 when neither row is flagged) with the smallest effect the run could detect
    and the seeds a 0.001 effect needs; then every other paired difference as exploratory
    (raw p, never starred); the oracle (true probabilities) when the data knows it."""
    tasks = _tasks(result)
    head = ["Model", "Seeds", "Epochs"] + [f"{t} {HEADERS[m]}" for t in tasks for m in metrics]
    lines = ["| " + " | ".join(head + ["Checks"]) + " |", "|---|---:|---:|" + "---:|" * (len(head) - 3) + "---|"]
    rows = paper_rows(result)
    for row in rows:
        cells = [row["name"], str(row["seeds"]), _budget(row)]
        cells += [_cell(row[f"{t}/{m}"]) for t in tasks for m in metrics]
        checks = ", ".join(f"{flag} {n}/{row['seeds']}" for flag, n in row["flags"].items()) or "ok"
        lines.append("| " + " | ".join(cells + [checks]) + " |")
    if result.oracle:
        cells = ["Oracle (true p)", "", ""]
        for t in tasks:
            cells += [f"{result.oracle[t][m]:.4f}" if m in result.oracle[t] else "" for m in metrics]
        lines.append("| " + " | ".join(cells + [""]) + " |")
    lines += ["", "Epochs: kept / run (Adam steps to the kept weights), means over seeds; baselines: stage 1, "
                  "the other rows: stage 3."]
    raised = [flag for flag in convergence.ADVICE if any(flag in row["flags"] for row in rows)]
    if raised:
        lines += ["", "Convergence checks failed (flag: seeds that failed / all); a comparison involving a flagged "
                      "row is never starred:"]
        lines += [f"- {flag}: {convergence.ADVICE[flag]}." for flag in raised]
    names = {(row["model"], row["variant"]): row["name"] for row in rows}
    primary = [m for m in ("auc", "logloss") if m in metrics]
    first = [row for row in rows if row["variant"] == "rmtl" and "effect" in row[f"{tasks[0]}/auc"]]
    if first and primary:
        ph = ["Critic effect (primary)", "Seeds"] + [f"{t} {HEADERS[m]}" for t in tasks for m in primary]
        lines += ["", "Critic effect, the primary family (RMTL − Continued, paired by seed; mean [95% CI] "
                      "(Holm-adjusted p)):", "", "| " + " | ".join(ph) + " |", "|---|---:|" + "---:|" * (len(ph) - 2)]
        mde = []
        for row in first:
            label = f"{row['name']} − {names.get((row['model'], CONTROL), CONTROL)}"
            cells = [label, str(row["seeds"])]
            for t in tasks:
                for m in primary:
                    v = row[f"{t}/{m}"]
                    cells.append(_diff_cell(v, "effect", row["effect_checked"] and v["effect_p_holm"] < 0.05))
            lines.append("| " + " | ".join(cells) + " |")
            mde.append("| " + " | ".join([label, str(row["seeds"])] + [
                _detectable(row[f"{t}/{m}"]) for t in tasks for m in primary]) + " |")
        lines += ["", f"Smallest critic effect this run could detect with 80% power (two-sided paired t-test at "
                      f"0.05 / {result.primary()}, the strictest Holm level, given the seeds and the observed spread), "
                      f"and in brackets the seeds that would detect an effect of {TARGET_EFFECT:g}:", "",
                  "| " + " | ".join(["Detectable", "Seeds"] + ph[2:]) + " |",
                  "|---|---:|" + "---:|" * (len(ph) - 2)] + mde
    explo = []
    for row in rows:
        for cmp in COMPARISONS:
            if cmp not in row[f"{tasks[0]}/{metrics[0]}"] or (cmp == "effect" and row["variant"] == "rmtl"):
                continue
            other = _AGAINST[cmp]
            cells = [f"{row['name']} − {names.get((row['model'], other), other)}", str(row["seeds"])]
            cells += [_diff_cell(row[f"{t}/{m}"], cmp, False) for t in tasks for m in metrics]
            explo.append("| " + " | ".join(cells) + " |")
    if explo:
        lines += ["", "Exploratory paired differences by seed (mean [95% CI] (raw p); lower logloss is better; "
                      "never starred):", "", "| " + " | ".join(["Comparison"] + head[1:2] + head[3:]) + " |",
                  "|---|---:|" + "---:|" * (len(head) - 3)] + explo
    lines += ["", f"{result.correction()}; * Holm-adjusted p < 0.05 and both rows pass the convergence checks."]
    return "\n".join(lines)


def per_seed(result: "ExperimentResult", metric: str = "auc") -> str:
    """Per backbone and seed, what every arm ran and did, as Markdown: the epochs kept / run
    and, for the first task, ``metric`` minus the same seed's baseline. Shows whether arms
    compared with each other trained equal budgets, and how a difference follows them."""
    task = _tasks(result)[0]
    by = {(r["model"], r["seed"], r["variant"]): r for r in result.records if r["task"] == task}
    variants = list(dict.fromkeys(r["variant"] for r in result.records if r["variant"] != BASELINE))
    lines = [f"Per seed: epochs kept / run and {task} {HEADERS[metric]} minus the baseline", "",
             "| Model | Seed | Baseline | " + " | ".join(variants) + " |", "|---|---:|---:|" + "---:|" * len(variants)]
    staged = dict.fromkeys(r["model"] for r in result.records if r["variant"] != BASELINE)
    for model, seed in sorted({(r["model"], r["seed"]) for r in result.records if r["model"] in staged},
                              key=lambda ms: (list(staged).index(ms[0]), ms[1])):
        base = by[model, seed, BASELINE]
        cells = [display_name(model, BASELINE), str(seed), f"{base['kept_epoch']}/{base['epochs']}"]
        for v in variants:
            r = by.get((model, seed, v))
            cells.append("" if r is None else f"{r['kept_epoch']}/{r['epochs']}: {r[metric] - base[metric]:+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _detectable(v: Dict[str, float]) -> str:
    mde, n = v.get("effect_mde", math.nan), v.get("effect_seeds_for")
    if math.isnan(mde):
        return "n/a"
    return f"{mde:.4f} ({n if n <= 100_000 else '> 100000'})"


def to_csv(result: "ExperimentResult") -> str:
    """Long form: model, variant, name, task, metric, seeds, epochs, kept_epoch, steps and
    :data:`STATS` (see :func:`paper_rows`; empty where a statistic does not apply)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["model", "variant", "name", "task", "metric", "seeds", "epochs", "kept_epoch", "steps", *STATS])
    for row in paper_rows(result):
        for t in _tasks(result):
            for m in METRICS:
                v = row[f"{t}/{m}"]
                w.writerow([row["model"], row["variant"], row["name"], t, m, row["seeds"], row["epochs"],
                            row["kept_epoch"], row["steps"]] + [v.get(s, "") for s in STATS])
    for t, o in result.oracle.items():
        for m, value in o.items():
            w.writerow(["oracle", "", "Oracle (true p)", t, m, "", "", "", "", value] + [""] * (len(STATS) - 1))
    return out.getvalue()


def to_json(result: "ExperimentResult") -> str:
    """Every per-seed record, the summary rows, the multiple-comparison correction applied,
    the oracle and the experiment's config."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean({"rows": paper_rows(result), "correction": result.correction(),
                             "records": result.records, "oracle": result.oracle,
                             "config": result.config}), indent=1)
