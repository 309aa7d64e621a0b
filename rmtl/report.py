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

from .experiments import BASELINE, METRICS, ExperimentResult
from .models import BACKBONES

__all__ = ["paper_rows", "to_markdown", "to_csv", "to_json"]

HEADERS = {"auc": "AUC", "logloss": "Logloss", "s_logloss": "s-Logloss"}


def display_name(model: str, variant: str) -> str:
    """``("mmoe", "baseline")`` -> ``MMoE``; ``("mmoe", "rmtl")`` -> ``RMTL-MMoE``; other
    weightings and transfers in brackets: ``RMTL-MMoE (critics of esmm)``."""
    name = BACKBONES[model].__name__ if model in BACKBONES else model
    if variant == BASELINE:
        return name
    if variant == "rmtl":
        return f"RMTL-{name}"
    inner = variant[len("rmtl["):-1] if variant.startswith("rmtl[") else variant
    return f"RMTL-{name} ({inner})"


def paper_rows(result: ExperimentResult) -> List[Dict[str, Any]]:
    """One dict per (model, variant): ``name``, ``model``, ``variant``, ``seeds`` and, per
    task and metric, ``<task>/<metric>`` -> {mean, std, diff, p} (diff and p against the
    same backbone's baseline, paired by seed; absent for baselines)."""
    rows: Dict[tuple, Dict[str, Any]] = {}
    for r in result.table():
        key = (r["model"], r["variant"])
        row = rows.setdefault(key, {"name": display_name(*key), "model": key[0], "variant": key[1], "seeds": r["n"]})
        for m in METRICS:
            row[f"{r['task']}/{m}"] = {s: r[f"{m}_{s}"] for s in ("mean", "std", "diff", "p") if f"{m}_{s}" in r}
    order = {name: i for i, name in enumerate(result.config.get("backbones", []))}
    return sorted(rows.values(), key=lambda row: (row["variant"] != BASELINE, order.get(row["model"], len(order)),
                                                  row["variant"]))


def _tasks(result: ExperimentResult) -> List[str]:
    return list(dict.fromkeys(r["task"] for r in result.records))


def _cell(v: Dict[str, float]) -> str:
    text = f"{v['mean']:.4f}" + ("" if math.isnan(v["std"]) else f" ± {v['std']:.4f}")
    if "diff" in v:
        star = "*" if v["p"] < 0.05 else ""
        text += f" ({v['diff']:+.4f}{star})"
    return text


def to_markdown(result: ExperimentResult, metrics: Sequence[str] = METRICS) -> str:
    """The table as Markdown: mean ± std over seeds; for RMTL rows the paired difference to
    the backbone's baseline in brackets, starred when p < 0.05 (paired t-test). Below the
    table: the oracle (true probabilities) when the data knows them."""
    tasks = _tasks(result)
    head = ["Model", "Seeds"] + [f"{t} {HEADERS[m]}" for t in tasks for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for row in paper_rows(result):
        cells = [row["name"], str(row["seeds"])] + [_cell(row[f"{t}/{m}"]) for t in tasks for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if result.oracle:
        cells = ["Oracle (true p)", ""]
        for t in tasks:
            cells += [f"{result.oracle[t][m]:.4f}" if m in result.oracle[t] else "" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(result: ExperimentResult) -> str:
    """Long form: model, variant, name, task, metric, seeds, mean, std, diff, p."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["model", "variant", "name", "task", "metric", "seeds", "mean", "std", "diff", "p"])
    for row in paper_rows(result):
        for t in _tasks(result):
            for m in METRICS:
                v = row[f"{t}/{m}"]
                w.writerow([row["model"], row["variant"], row["name"], t, m, row["seeds"], v["mean"], v["std"],
                            v.get("diff", ""), v.get("p", "")])
    for t, o in result.oracle.items():
        for m, value in o.items():
            w.writerow(["oracle", "", "Oracle (true p)", t, m, "", value, "", "", ""])
    return out.getvalue()


def to_json(result: ExperimentResult) -> str:
    """Every per-seed record, the summary rows, the oracle and the experiment's config."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean({"rows": paper_rows(result), "records": result.records, "oracle": result.oracle,
                             "config": result.config}), indent=1)
