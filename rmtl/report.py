"""Paper-style result tables: one row per model, AUC / Logloss / s-Logloss per task.

Built from an :class:`rmtl.experiments.ExperimentResult`; written as Markdown (the
terminal and README form), CSV (one number per cell, for spreadsheets) and JSON.
"""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Dict, List, Sequence

from . import convergence
from .experiments import BASELINE, CONTROL, METRICS, ExperimentResult
from .models import BACKBONES

__all__ = ["paper_rows", "to_markdown", "to_csv", "to_json"]

HEADERS = {"auc": "AUC", "logloss": "Logloss", "s_logloss": "s-Logloss"}
STATS = ("mean", "std", "diff", "p", "p_holm", "effect", "effect_p", "effect_p_holm")


def display_name(model: str, variant: str) -> str:
    """``("mmoe", "baseline")`` -> ``MMoE``; ``("mmoe", "rmtl")`` -> ``RMTL-MMoE``;
    ``("mmoe", "continued")`` -> ``Continued-MMoE``; other weightings and transfers in
    brackets: ``RMTL-MMoE (critics of esmm)``."""
    name = BACKBONES[model].__name__ if model in BACKBONES else model
    if variant == BASELINE:
        return name
    if variant == "rmtl":
        return f"RMTL-{name}"
    if variant == CONTROL:
        return f"Continued-{name}"
    inner = variant[len("rmtl["):-1] if variant.startswith("rmtl[") else variant
    return f"RMTL-{name} ({inner})"


def paper_rows(result: ExperimentResult) -> List[Dict[str, Any]]:
    """One dict per (model, variant): ``name``, ``model``, ``variant``, ``seeds`` and, per
    task and metric, ``<task>/<metric>`` -> {mean, std, diff, p, p_holm, effect, effect_p,
    effect_p_holm}: ``diff`` against the same backbone's baseline (absent for baselines),
    ``effect`` (the critic effect) against its ``continued`` control (only for critic
    variants), both paired by seed; ``p_holm`` Holm-adjusted over the whole table.
    ``flags`` counts the seeds that failed each convergence check; ``diff_checked`` and
    ``effect_checked`` say whether both sides of a comparison passed them."""
    rows: Dict[tuple, Dict[str, Any]] = {}
    for r in result.table():
        key = (r["model"], r["variant"])
        row = rows.setdefault(key, {"name": display_name(*key), "model": key[0], "variant": key[1], "seeds": r["n"],
                                    "flags": r["flags"]})
        row.update({k: r[k] for k in ("diff_checked", "effect_checked") if k in r})
        for m in METRICS:
            row[f"{r['task']}/{m}"] = {s: r[f"{m}_{s}"] for s in STATS if f"{m}_{s}" in r}
    order = {name: i for i, name in enumerate(result.config.get("backbones", []))}
    return sorted(rows.values(), key=lambda row: (row["variant"] != BASELINE, order.get(row["model"], len(order)),
                                                  row["variant"]))


def _tasks(result: ExperimentResult) -> List[str]:
    return list(dict.fromkeys(r["task"] for r in result.records))


def _cell(v: Dict[str, float]) -> str:
    return f"{v['mean']:.4f}" + ("" if math.isnan(v["std"]) else f" ± {v['std']:.4f}")


def _diff_cell(v: Dict[str, float], key: str, p_key: str, checked: bool) -> str:
    p = v[p_key]
    star = "*" if p < 0.05 and checked else ""
    return f"{v[key]:+.4f}{star} ({'n/a' if math.isnan(p) else f'{p:.3f}'})"


def to_markdown(result: ExperimentResult, metrics: Sequence[str] = METRICS) -> str:
    """The results as Markdown: a table of mean ± std over seeds per model with its
    convergence checks (and what to change for each failed one), then a table of
    paired differences by seed: each variant minus its baseline and each critic variant
    minus its ``continued`` control (the critic effect), Holm-adjusted p-value in brackets,
    starred when it is below 0.05 and neither row is flagged; then the correction applied and the oracle (true
    probabilities) when the data knows them."""
    tasks = _tasks(result)
    head = ["Model", "Seeds"] + [f"{t} {HEADERS[m]}" for t in tasks for m in metrics]
    align = "|---|---:|" + "---:|" * (len(head) - 2)
    lines = ["| " + " | ".join(head + ["Checks"]) + " |", align + "---|"]
    rows = paper_rows(result)
    for row in rows:
        cells = [row["name"], str(row["seeds"])] + [_cell(row[f"{t}/{m}"]) for t in tasks for m in metrics]
        checks = ", ".join(f"{flag} {n}/{row['seeds']}" for flag, n in row["flags"].items()) or "ok"
        lines.append("| " + " | ".join(cells + [checks]) + " |")
    if result.oracle:
        cells = ["Oracle (true p)", ""]
        for t in tasks:
            cells += [f"{result.oracle[t][m]:.4f}" if m in result.oracle[t] else "" for m in metrics]
        lines.append("| " + " | ".join(cells + [""]) + " |")
    raised = [flag for flag in convergence.ADVICE if any(flag in row["flags"] for row in rows)]
    if raised:
        lines += ["", "Convergence checks failed (flag: seeds that failed / all); a comparison involving a flagged "
                      "row is never starred:"]
        lines += [f"- {flag}: {convergence.ADVICE[flag]}." for flag in raised]
    names = {(row["model"], row["variant"]): row["name"] for row in rows}
    diffs = []
    for row in rows:
        for key, p_key, other, label in (("diff", "p_holm", BASELINE, ""),
                                         ("effect", "effect_p_holm", CONTROL, " (critic effect)")):
            first = row[f"{tasks[0]}/{metrics[0]}"]
            if key in first:
                cells = [f"{row['name']} − {names.get((row['model'], other), other)}{label}", str(row["seeds"])]
                cells += [_diff_cell(row[f"{t}/{m}"], key, p_key, row[f"{key}_checked"]) for t in tasks
                          for m in metrics]
                diffs.append("| " + " | ".join(cells) + " |")
    if diffs:
        lines += ["", "Paired differences by seed (mean; lower logloss is better):", "",
                  "| " + " | ".join(["Comparison"] + head[1:]) + " |", align] + diffs
        lines += ["", f"In brackets: {result.correction()}; * adjusted p < 0.05 and both rows pass the "
                      "convergence checks."]
    return "\n".join(lines)


def to_csv(result: ExperimentResult) -> str:
    """Long form: model, variant, name, task, metric, seeds, mean, std, diff, p, p_holm,
    effect, effect_p, effect_p_holm (see :func:`paper_rows`)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["model", "variant", "name", "task", "metric", "seeds", *STATS])
    for row in paper_rows(result):
        for t in _tasks(result):
            for m in METRICS:
                v = row[f"{t}/{m}"]
                w.writerow([row["model"], row["variant"], row["name"], t, m, row["seeds"]] + [v.get(s, "") for s in STATS])
    for t, o in result.oracle.items():
        for m, value in o.items():
            w.writerow(["oracle", "", "Oracle (true p)", t, m, "", value] + [""] * (len(STATS) - 1))
    return out.getvalue()


def to_json(result: ExperimentResult) -> str:
    """Every per-seed record, the summary rows, the multiple-comparison correction applied,
    the oracle and the experiment's config."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean({"rows": paper_rows(result), "correction": result.correction(),
                             "records": result.records, "oracle": result.oracle,
                             "config": result.config}), indent=1)
