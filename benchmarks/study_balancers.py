"""Where does loss balancing matter? Every balancer of :mod:`rmtl.balancers` against equal
weights, and RMTL against Continued, over a grid of synthetic task settings (issue 31, item 6).

Each cell of the grid is synthetic RetailRocket-like data with ``--tasks`` tasks (the first the
click) whose true utilities correlate by the cell's ``task_corr`` with the click's (negative:
conflicting tasks) under one of two rate regimes: ``common`` (every task frequent) and
``rare`` (rates down to 0.1%, label noise on the click and a field only the rarest task reads).
In each cell and seed an MMoE is trained from scratch with equal weights (the baseline) and
with every balancer (rows ``UW-MMoE``, ...); RMTL's three stages and its Continued control run
on the same baseline (budget matched). Per cell, task and balancer the test-AUC difference from
the baseline is paired by seed (mean, 95% CI, p), and so is RMTL − Continued; each family (every
balancer test of the study; every RMTL test) is Holm-adjusted over the whole grid.

    python benchmarks/study_balancers.py [--corr 0.9 0 -0.9] [--regimes common rare]
        [--tasks 4] [--seeds 5] [--n-users 2000] [--critic-epochs 8] [--balancers all]
        [--processes 2] [--json benchmarks/results/balancer_study.json]
        [--png docs/images/balancer_study.png] [--redraw] [--resume]

The JSON (rewritten atomically after every cell) holds the command, CPU model, threads,
seconds and one row per (cell, task, comparison); ``notebooks/balancer_testbed.ipynb`` draws it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import warnings
from typing import Any

import numpy as np
from neighbours import cpu_model

import rmtl
from rmtl._io import write_text
from rmtl.lab import stats

#: the rate regimes: per-task label rates (first task first) and what else the cell sets
REGIMES: dict[str, dict[str, Any]] = {
    "common": {"rates": (0.30, 0.20, 0.12, 0.06, 0.04, 0.03)},
    "rare": {
        "rates": (0.30, 0.03, 0.01, 0.004, 0.002, 0.001),
        "label_noise": "click",  # 5% of the click labels flipped
        "task_field": "last",  # a field only the rarest task reads
    },
}
NET = {"embed_dim": 16, "bottom_dims": (64, 32), "tower_dims": (32,), "num_experts": 4}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--corr", type=float, nargs="+", default=[0.9, 0.0, -0.9])
    p.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    p.add_argument("--tasks", type=int, default=4, help="tasks per cell (2 to 6)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--n-users", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=20, help="most epochs of stages 1 and 3")
    p.add_argument("--critic-epochs", type=int, default=8)
    p.add_argument("--balancers", nargs="+", default=["all"])
    p.add_argument("--processes", type=int, default=None, help="local worker processes")
    p.add_argument("--json", default="benchmarks/results/balancer_study.json")
    p.add_argument(
        "--png",
        help="also draw the AUC heat maps there (rmtl.lab.plots.balancer_maps); with "
        "--redraw, only that, from the existing --json",
    )
    p.add_argument("--redraw", action="store_true", help="draw --png from --json; train nothing")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the cells --json already holds (same settings) and run only the others",
    )
    return p.parse_args()


def cell_data(corr: float, regime: str, tasks: int, n_users: int) -> rmtl.SessionData:
    """The synthetic data of one cell (the same seed in every cell: only the knobs move)."""
    r = REGIMES[regime]
    kw: dict[str, Any] = {"task_rates": r["rates"][:tasks], "task_corr": corr}
    names = ("click", *(f"task{k}" for k in range(1, tasks)))
    if r.get("label_noise") == "click":
        kw["label_noise"] = (0.05,) + (0.0,) * (tasks - 1)
    if r.get("task_field") == "last":
        kw["task_fields"] = {names[-1]: 1.5}
    return rmtl.datasets.synthetic(n_users=n_users, seed=0, task_names=names, **kw)


def comparisons(result: rmtl.ExperimentResult, corr: float, regime: str) -> list[dict[str, Any]]:
    """One row per task and comparison: every balancer row against the baseline, and RMTL
    against Continued (test AUC and logloss, paired by seed)."""
    rows = []
    for row in result.table():
        v = row["variant"]
        if v.startswith("balanced["):
            comparison, key = v[len("balanced[") : -1], "diff"
        elif v == "rmtl":
            comparison, key = "rmtl-continued", "effect"
        else:
            continue
        out = {"corr": corr, "regime": regime, "task": row["task"], "comparison": comparison}
        out["flags"] = row["flags"]
        for m in ("auc", "logloss"):
            for s in ("", "_low", "_high", "_p"):
                out[f"{m}{s}"] = row.get(f"{m}_{key}{s}", float("nan"))
            out[f"{m}_mean"] = row[f"{m}_mean"]
        rows.append(out)
    return rows


def adjust(rows: list[dict[str, Any]]) -> None:
    """Holm over each family of the whole study: the balancer tests, and RMTL's."""
    for family in (
        lambda r: r["comparison"] != "rmtl-continued",
        lambda r: r["comparison"] == "rmtl-continued",
    ):
        for m in ("auc", "logloss"):
            members = [r for r in rows if family(r) and not np.isnan(r[f"{m}_p"])]
            for r, p in zip(members, stats.holm([r[f"{m}_p"] for r in members])):
                r[f"{m}_p_holm"] = p


def draw(rows: list[dict[str, Any]], path: str) -> None:
    """The AUC heat maps of ``rows`` into ``path`` (atomically: a temporary name, then rename)."""
    from rmtl.lab.plots import balancer_maps

    tmp = f"{path}.{os.getpid()}.tmp.png"
    balancer_maps(rows, metric="auc").savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main() -> None:
    args = parse()
    if args.redraw:
        with open(args.json) as f:
            draw(json.load(f)["rows"], args.png)
        return
    warnings.simplefilter("ignore")  # flags are kept in the rows
    names = rmtl.balancers.names() if args.balancers == ["all"] else args.balancers
    # small data: more, smaller steps, a step floor for stage 1 and outputs starting at the
    # label rates, so the rare tasks calibrate (else every arm is flagged)
    settings = {
        "epochs": args.epochs,
        "critic_epochs": args.critic_epochs,
        "batch_size": 512,
        "min_steps": 500,
        "init_output_bias": "prior",
    }
    rows: list[dict[str, Any]] = []
    spent = 0.0
    if args.resume and os.path.exists(args.json):
        with open(args.json) as f:
            saved = json.load(f)
        same = (saved["tasks"], saved["seeds"], saved["n_users"], saved["rmtl"]) == (
            args.tasks,
            args.seeds,
            args.n_users,
            settings,
        )
        if not same:
            sys.exit(f"--resume: {args.json} holds a study of other settings")
        rows, spent = saved["rows"], saved["seconds"]
    done = {(r["regime"], r["corr"]) for r in rows}
    t0 = time.perf_counter() - spent
    for regime in args.regimes:
        for corr in args.corr:
            if (regime, corr) in done:
                continue
            data = cell_data(corr, regime, args.tasks, args.n_users)
            train, valid, test = data.split()
            common = dict(
                backbones=("mmoe",),
                seeds=range(args.seeds),
                transfer=(),
                backbone_kwargs=NET,
                rmtl_kwargs=settings,
                executor=args.processes,
            )
            balanced = rmtl.experiment(
                train, valid, test, rmtl_backbones=(), balancers=names, **common
            )
            staged = rmtl.experiment(train, valid, test, weightings=("rmtl", "continued"), **common)
            rows += comparisons(balanced, corr, regime) + comparisons(staged, corr, regime)
            adjust(rows)
            print(
                f"cell corr={corr:+g} {regime}: {len(test)} test rows, "
                f"{time.perf_counter() - t0:.0f} s so far",
                flush=True,
            )
            write_text(
                args.json,
                json.dumps(
                    {
                        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
                        "cpu": cpu_model(),
                        "threads": rmtl.get_num_threads(),
                        "seconds": time.perf_counter() - t0,
                        "tasks": args.tasks,
                        "seeds": args.seeds,
                        "n_users": args.n_users,
                        "regimes": {k: REGIMES[k] for k in args.regimes},
                        "net": NET,
                        "rmtl": settings,
                        "rows": rows,
                    },
                    indent=1,
                    default=float,
                ),
            )
    if args.png:
        draw(rows, args.png)
    best = max(
        (r for r in rows if r["comparison"] != "rmtl-continued"),
        key=lambda r: abs(r["auc"]) if not np.isnan(r["auc"]) else -1,
    )
    print(
        f"largest balancer AUC effect: {best['comparison']} on {best['task']} at corr "
        f"{best['corr']:+g}, {best['regime']}: {best['auc']:+.4f} "
        f"(Holm p {best.get('auc_p_holm', float('nan')):.3g})"
    )
    rmtl_rows = [r for r in rows if r["comparison"] == "rmtl-continued"]
    hits = [r for r in rmtl_rows if r.get("auc_p_holm", 1.0) < 0.05]
    print(f"RMTL - Continued differs from zero (Holm p < 0.05) in {len(hits)} of {len(rmtl_rows)}")


if __name__ == "__main__":
    main()
