"""The critic-effect study: where, if anywhere, RMTL's critics help (issue 12, item 5).

A grid of synthetic settings (label density, session length, how much the session history
drives the responses, backbone capacity) crossed with where the session context goes
(:func:`rmtl.with_context`: nowhere, the critics, the backbone or both). Each cell is one
:func:`rmtl.experiment` of one backbone over several seeds with the variants ``rmtl`` and its
control ``continued``; the study reports per cell and task the **critic effect** (RMTL minus
continued) and RMTL minus the baseline, paired by seed, with p-values Holm-adjusted across
the whole study table. ``benchmarks/study_critic_effect.py`` runs it from the command line.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .context import CONTEXT_MODES, with_context
from .datasets import synthetic
from .experiments import ExperimentResult, experiment, holm

__all__ = ["Setting", "SETTINGS", "run_study", "study_rows", "study_markdown"]

QUICK_NET = {"embed_dim": 16, "bottom_dims": (64, 32), "tower_dims": (32, 16), "dropout": 0.2}
# small batches: enough Adam steps per epoch on ~10k training rows at a quarter of the cost
QUICK_RMTL = {"critic_bottom_dims": (64, 32), "critic_tower_dims": (32, 16), "critic_epochs": 4, "epochs": 12,
              "patience": 2, "batch_size": 512, "min_steps": 200, "init_output_bias": "prior"}
METRICS = ("auc", "logloss")
_COMPARISONS = (("effect", "effect_p"), ("diff", "p"))  # RMTL - continued, RMTL - baseline


@dataclasses.dataclass(frozen=True)
class Setting:
    """One data and model setting of the study: ``synth`` are :func:`rmtl.datasets.synthetic`
    overrides of the RetailRocket preset (e.g. ``target_rates`` for label density,
    ``leave_base`` for session length, ``momentum`` and ``fatigue`` for how much the session
    history drives the clicks), ``net`` overrides of the quick backbone widths."""

    name: str
    synth: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    net: Mapping[str, Any] = dataclasses.field(default_factory=dict)


_HISTORY = {"momentum": 0.6, "fatigue": 0.1}
SETTINGS: Tuple[Setting, ...] = (
    Setting("history", _HISTORY),
    Setting("history, dense labels", {**_HISTORY, "target_rates": (0.3, 0.1)}),
    Setting("history, long sessions", {**_HISTORY, "leave_base": -3.0}),
    Setting("history, narrow backbone", _HISTORY, {"bottom_dims": (16,), "tower_dims": (8,)}),
)


def run_study(settings: Sequence[Setting] = SETTINGS, contexts: Sequence[Optional[str]] = CONTEXT_MODES,
              n_users: int = 1000, seeds: int = 5, backbone: str = "esmm", data_seed: int = 0,
              rmtl_kwargs: Optional[Mapping[str, Any]] = None,
              on_cell: Optional[Callable[[str, Optional[str], ExperimentResult], None]] = None,
              ) -> List[Tuple[str, Optional[str], ExperimentResult]]:
    """Run every (setting, context) cell: ``n_users`` synthetic users split 60/20/20 by session
    start, ``backbone`` with the quick widths (and the setting's), variants ``rmtl`` and
    ``continued`` over seeds ``0..seeds-1`` (``rmtl_kwargs`` on top of the quick RMTL
    settings). ``on_cell(setting, context, result)`` after each cell. Returns the cells."""
    unknown = [c for c in contexts if c not in CONTEXT_MODES]
    if unknown or not settings or not contexts:
        raise ValueError(f"settings, contexts: expected at least one of each, contexts from {list(CONTEXT_MODES)}; "
                         f"got {len(settings)} settings, unknown contexts {unknown}")
    cells = []
    for s in settings:
        parts = synthetic("retailrocket", n_users=n_users, seed=data_seed, **dict(s.synth)).split((0.6, 0.2, 0.2))
        for ctx in contexts:
            train, valid, test = (with_context(p, ctx) for p in parts)
            result = experiment(train, valid, test, backbones=(backbone,), seeds=range(seeds),
                                weightings=("rmtl", "continued"), transfer=(),
                                backbone_kwargs={**QUICK_NET, **dict(s.net)},
                                rmtl_kwargs={**QUICK_RMTL, **dict(rmtl_kwargs or {})})
            cells.append((s.name, ctx, result))
            if on_cell is not None:
                on_cell(s.name, ctx, result)
    return cells


def study_rows(cells: Sequence[Tuple[str, Optional[str], ExperimentResult]]) -> List[Dict[str, Any]]:
    """One row per (setting, context, task) of the ``rmtl`` variant: ``auc_effect``,
    ``logloss_effect`` (RMTL - continued) and ``auc_diff``, ``logloss_diff`` (RMTL -
    baseline), mean paired differences over seeds; their raw p-values (``*_p``) and the same
    Holm-adjusted over every test of the whole study (``*_p_holm``); ``n`` seeds; ``checked``:
    no convergence flag on either side of either comparison."""
    rows = []
    for setting, ctx, result in cells:
        for r in result.table():
            if r["variant"] != "rmtl":
                continue
            row = {"setting": setting, "context": ctx or "none", "task": r["task"], "n": r["n"],
                   "checked": bool(r.get("effect_checked")) and bool(r.get("diff_checked"))}
            for m in METRICS:
                for key, pkey in _COMPARISONS:
                    row[f"{m}_{key}"] = r.get(f"{m}_{key}", float("nan"))
                    row[f"{m}_{key}_p"] = r.get(f"{m}_{pkey}", float("nan"))
            rows.append(row)
    keys = [(i, k) for i, row in enumerate(rows) for k in row if k.endswith("_p")]
    for (i, k), adjusted in zip(keys, holm([rows[i][k] for i, k in keys])):
        rows[i][k + "_holm"] = adjusted
    return rows


def _sign(d: float, p: float, checked: bool) -> str:
    """``+`` / ``-`` for a Holm-significant (p < 0.05) change of a checked comparison, else ``0``."""
    if not checked or np.isnan(p) or p >= 0.05:
        return "0"
    return "+" if d > 0 else "-"


def study_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    """The study table in Markdown: per setting, context and task the critic effect and RMTL -
    baseline on AUC and logloss (mean paired difference over seeds, Holm-adjusted p), and a
    verdict on the critic effect: ``+`` (AUC up or logloss down, significant), ``-``
    (significantly worse), ``0`` (not significant, or a convergence check failed)."""
    head = ["setting", "context", "task", "seeds", "critic effect AUC (p)", "critic effect logloss (p)",
            "RMTL - baseline AUC (p)", "RMTL - baseline logloss (p)", "checks", "critic effect"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["setting"], r["context"], r["task"], str(r["n"])]
        for key in ("effect", "diff"):
            for m in METRICS:
                cells.append(f"{r[f'{m}_{key}']:+.4f} ({r[f'{m}_{key}_p_holm']:.3f})")
        auc = _sign(r["auc_effect"], r["auc_effect_p_holm"], r["checked"])
        ll = _sign(-r["logloss_effect"], r["logloss_effect_p_holm"], r["checked"])
        cells += ["ok" if r["checked"] else "flagged", auc if auc == ll or ll == "0" else f"{auc} AUC / {ll} logloss"]
        lines.append("| " + " | ".join(cells) + " |")
    n = sum(1 for r in rows for k in r if k.endswith("_p") and not np.isnan(r[k]))
    lines += ["", "critic effect: RMTL - continued (stage 3 with every weight one), RMTL - baseline: RMTL - "
              f"stage 1 alone; paired by seed; p-values Holm-adjusted over all {n} paired t-tests of the table."]
    return "\n".join(lines)
