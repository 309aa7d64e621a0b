"""The critic-effect study as a map (issue 29, item 5; see :mod:`rmtl.lab.study`): per cell of a
two-axis grid of synthetic settings and task, the critic effect (RMTL - continued) and the
controls RMTL - static, RMTL - permuted, static - continued and permuted - continued, paired
by seed with 95% CIs; Holm only over the critic effect on AUC and logloss.

    python benchmarks/study_critic_effect.py [--x momentum 0 0.3 0.6 0.9]
        [--y click_rate 0.05 0.15 0.3] [--context critic]
        [--synth fatigue=0.1 'target_rates=(0.3,0.1)'] [--n-users 1000] [--seeds 5]
        [--backbone esmm] [--critic-epochs 96] [--lam 0.7] [--gamma 0.9] [--batch-size 512]
        [--md FILE.md] [--json FILE.json] ...

An axis is a knob and its values: a float field of the synthetic preset (momentum, fatigue,
leave_base, ...), click_rate (the click-rate target; the pay-rate target keeps its ratio) or
context (none critic backbone both). --synth, --net and --rmtl take KEY=VALUE pairs (Python
literals) on top of the defaults. The table is printed at the end; --md and --json are
rewritten atomically after every cell, with the command, CPU model, threads and seconds.
"""

from __future__ import annotations

import argparse
import ast
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

from neighbours import cpu_model

import rmtl
from rmtl._io import write_text
from rmtl.lab.graph import BUDGETS
from rmtl.lab.study import (
    CONTEXT,
    CONTEXTS,
    RMTL_FIELDS,
    Axis,
    Cell,
    SavedStudy,
    StudyConfig,
    run_study,
    save_study,
    study_markdown,
    study_rows,
)


def literal(text: str) -> Any:
    """A Python literal (number, tuple, None, ...), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def pairs(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict of literals."""
    bad = [s for s in items if "=" not in s]
    if bad:
        raise ValueError(f"expected KEY=VALUE pairs, got {bad}")
    return {k: literal(v) for k, v in (s.split("=", 1) for s in items)}


def axis(tokens: Sequence[str]) -> Axis:
    """``KNOB VALUE...`` as an axis (numbers unless the knob is the context)."""
    if len(tokens) < 2:
        raise ValueError(f"an axis: expected KNOB VALUE..., got {list(tokens)}")
    knob, values = tokens[0], tokens[1:]
    return Axis(knob, tuple(values) if knob == CONTEXT else tuple(float(v) for v in values))


def parser(d: StudyConfig) -> argparse.ArgumentParser:
    """The command line, every option defaulting to ``d``'s value."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name in ("x", "y"):
        a = getattr(d, name)
        p.add_argument(
            f"--{name}",
            nargs="+",
            metavar="KNOB VALUE",
            default=None,
            help=(
                f"axis {name}: a knob and its values "
                f"(default {a.knob} {' '.join(map(str, a.values))})"
            ),
        )
    p.add_argument(
        "--context",
        choices=CONTEXTS,
        default=d.context,
        help="where the session context goes when no axis varies it (default %(default)s)",
    )
    p.add_argument(
        "--synth",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"fixed synthetic overrides on top of {d.synth}",
    )
    p.add_argument(
        "--n-users",
        type=int,
        default=d.n_users,
        help="synthetic users per cell (default %(default)s)",
    )
    p.add_argument(
        "--data-seed", type=int, default=d.data_seed, help="seed of the data (default %(default)s)"
    )
    p.add_argument(
        "--backbone", default=d.backbone, help="the backbone of every cell (default %(default)s)"
    )
    p.add_argument(
        "--net",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"backbone keyword arguments on top of {d.backbone_kwargs}",
    )
    p.add_argument(
        "--seeds", type=int, default=d.seeds, help="seeds 0..n-1 per cell (default %(default)s)"
    )
    for name in RMTL_FIELDS:
        kind = float if name in ("lam", "gamma") else int
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=getattr(d, name),
            help="RMTL's " + name + " (default %(default)s)",
        )
    p.add_argument(
        "--budget",
        choices=BUDGETS,
        default=d.budget,
        help="stage-3 budget of the controls (default %(default)s)",
    )
    p.add_argument(
        "--rmtl",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"other rmtl.RMTLConfig fields on top of {d.rmtl_kwargs}",
    )
    p.add_argument(
        "--md", metavar="FILE.md", help="write the Markdown table here (after every cell)"
    )
    p.add_argument(
        "--json", metavar="FILE.json", help="write config, run and rows here (after every cell)"
    )
    return p


def config_from(args: argparse.Namespace, d: StudyConfig) -> StudyConfig:
    """The study config the parsed arguments ask for."""
    return StudyConfig(
        x=axis(args.x) if args.x else d.x,
        y=axis(args.y) if args.y else d.y,
        context=args.context,
        synth={**d.synth, **pairs(args.synth)},
        n_users=args.n_users,
        data_seed=args.data_seed,
        backbone=args.backbone,
        backbone_kwargs={**d.backbone_kwargs, **pairs(args.net)},
        seeds=args.seeds,
        critic_epochs=args.critic_epochs,
        lam=args.lam,
        gamma=args.gamma,
        batch_size=args.batch_size,
        critic_batch_size=args.critic_batch_size,
        budget=args.budget,
        finetune_epochs=args.finetune_epochs,
        rmtl_kwargs={**d.rmtl_kwargs, **pairs(args.rmtl)},
    )


def main() -> None:
    defaults = StudyConfig()
    p = parser(defaults)
    args = p.parse_args()
    try:
        config = config_from(args, defaults)
    except (TypeError, ValueError) as e:
        p.error(str(e))
    t0 = time.perf_counter()
    done: list[Cell] = []
    seconds: list[float] = []
    run = {
        "command": "python benchmarks/study_critic_effect.py " + shlex.join(sys.argv[1:]),
        "cpu": cpu_model(),
        "threads": rmtl.get_num_threads(),
        "rmtl": rmtl.__version__,
        "cells_planned": len(config.grid()),
    }

    def on_cell(cell: Cell) -> None:
        seconds.append(time.perf_counter() - t0 - sum(seconds))
        done.append(cell)
        run.update(
            cells=len(done),
            seconds=round(sum(seconds), 1),
            cell_seconds=[round(s, 1) for s in seconds],
        )
        print(
            f"[{sum(seconds):6.0f} s] cell {len(done)}/{len(config.grid())} {cell.at} done",
            file=sys.stderr,
        )
        rows = study_rows(done)
        if args.md:
            write_text(args.md, f"{study_markdown(rows)}\n\n{footer()}\n")
        if args.json:
            save_study(args.json, SavedStudy(config, rows, dict(run)))

    def footer() -> str:
        return (
            f"Command: `{run['command']}`; {len(done)} of {run['cells_planned']} cells in "
            f"{sum(seconds):.0f} s on {run['cpu']}, {run['threads']} threads."
        )

    run_study(config, on_cell=on_cell)
    print(f"{study_markdown(study_rows(done))}\n\n{footer()}")


if __name__ == "__main__":
    main()
