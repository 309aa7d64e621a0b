"""The critic-effect study (issue 12, item 5): RMTL - continued and RMTL - baseline, paired by
seed with Holm-adjusted p-values across the whole table, over a grid of synthetic settings
(label density, session length, session-history effects, backbone capacity) crossed with the
session context modes (none, critic, backbone, both). See :mod:`rmtl.study`.

    python benchmarks/study_critic_effect.py [--n-users 1000] [--seeds 5] [--backbone esmm]
        [--settings NAME ...] [--contexts none critic backbone both] [--out FILE.md]

The default grid (4 settings x 4 contexts, ESMM, 5 seeds, 1,000 users) is sized for about
25 minutes on 2 cores; the table is printed and, with --out, written atomically (also after
every cell, so an interrupted run leaves the cells it finished).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import rmtl
from rmtl._io import write_text
from rmtl.study import SETTINGS, run_study, study_markdown, study_rows


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    names = [s.name for s in SETTINGS]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-users", type=int, default=1000, help="synthetic users per setting")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..n-1 per cell")
    p.add_argument("--backbone", default="esmm", help="the backbone of every cell")
    p.add_argument("--settings", nargs="+", choices=names, default=names, metavar="NAME",
                   help=f"settings of the grid (default all: {names})")
    p.add_argument("--contexts", nargs="+", choices=("none", "critic", "backbone", "both"),
                   default=["none", "critic", "backbone", "both"], help="where the session context goes")
    p.add_argument("--out", metavar="FILE.md", help="also write the table (and the command) to this file")
    args = p.parse_args()
    contexts = [None if c == "none" else c for c in args.contexts]
    settings = [s for s in SETTINGS if s.name in args.settings]
    t0 = time.perf_counter()
    done = []

    def report(cells) -> str:
        return (f"{study_markdown(study_rows(cells))}\n\n"
                f"Command: `python benchmarks/study_critic_effect.py {' '.join(sys.argv[1:])}`; "
                f"{len(cells)} cells in {time.perf_counter() - t0:.0f} s on "
                f"{cpu_model()}, {rmtl.get_num_threads()} threads.\n")

    def progress(setting, ctx, result):
        print(f"[{time.perf_counter() - t0:6.0f} s] {setting} / context {ctx or 'none'} done", file=sys.stderr)
        done.append((setting, ctx, result))
        if args.out:
            write_text(args.out, report(done))

    cells = run_study(settings, contexts, n_users=args.n_users, seeds=args.seeds, backbone=args.backbone,
                      on_cell=progress)
    print(report(cells))


if __name__ == "__main__":
    main()
