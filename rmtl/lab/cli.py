"""The command line: ``python -m rmtl <command> ...``, one function per subcommand.

User errors (a missing path, a malformed file, an unknown option value) and running out of
memory print one line to stderr and exit with status 2, without a traceback. Ctrl-C stops at
once and exits with status 130 (``rmtl run --resume DIR`` then continues); a training loss
that diverges prints one line and exits with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import subprocess
import sys
from typing import Optional

from .. import __version__
from ..backend import blas_info
from ..balancers import names as balancer_names
from ..data import SessionData
from ..datasets import load_kuairand, load_retailrocket
from ..models import BACKBONES
from .run import RunResult, run
from .settings import (
    AUTO_MIN_STEPS,
    DATASETS,
    PRESETS,
    RunConfig,
    describe_budgets,
    describe_gemm,
    load_config,
)
from .sweep import describe_best, load_sweep
from .sweep import run_sweep as sweep

__all__ = ["main", "build_parser"]


def add_prepare(sub: argparse._SubParsersAction) -> None:
    """``prepare``: raw dataset files -> one SessionData .npz file."""
    p = sub.add_parser(
        "prepare",
        help="turn raw RetailRocket or KuaiRand files into a .npz dataset",
        description="Load raw dataset files with rmtl's recipe (SPEC section 2) "
        "and save them as a SessionData .npz file.",
    )
    p.add_argument("dataset", choices=("retailrocket", "kuairand"), help="which raw format")
    p.add_argument(
        "--raw", required=True, metavar="DIR", help="directory holding the raw CSV files"
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="where to write the dataset: exactly this path "
        "(conventionally ending in .npz; nothing is appended), written atomically",
    )
    p.add_argument(
        "--session-gap-minutes",
        type=float,
        default=30.0,
        metavar="M",
        help="start a new session after a gap of more than M minutes (default 30)",
    )
    p.add_argument(
        "--variant",
        choices=("pure", "1k"),
        default="pure",
        help="KuaiRand variant: file suffix _pure or _1k (default pure)",
    )
    p.add_argument(
        "--vocab-from",
        metavar="FILE.npz",
        help="code values with the vocabulary of this prepared file (e.g. the training set)",
    )
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    """Check --out, load, save and print a short summary."""
    parent = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out):  # before the load, which can take minutes
        raise IsADirectoryError(
            f"--out: {args.out} is a directory; give the path of the file to write, e.g. "
            f"{os.path.join(args.out, args.dataset + '.npz')}"
        )
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--out: no such directory: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"--out: {parent} is not writable")
    vocab = None
    if args.vocab_from:
        vocab = SessionData.load(args.vocab_from).vocab
        if vocab is None:
            raise ValueError(f"--vocab-from: {args.vocab_from} holds no vocabulary")
    if args.dataset == "retailrocket":
        data = load_retailrocket(args.raw, args.session_gap_minutes, vocab=vocab)
    else:
        data = load_kuairand(args.raw, args.variant, args.session_gap_minutes, vocab=vocab)
    data.save(args.out)
    print(data.describe())
    print(f"saved {args.out}")
    return 0


def add_run(sub: argparse._SubParsersAction) -> None:
    """``run``: the paper's experiment (baselines and RMTL over seeds) and its table."""

    d, quick, paper = RunConfig(), PRESETS["quick"], PRESETS["paper"]
    p = sub.add_parser(
        "run",
        help="run the paper's experiment and print the results table",
        description=(
            "Train the baselines and RMTL (pretrain, critics, weighted fine-tuning) over several "
            "seeds, with the controls Continued (every weight one), Static and Permuted trained "
            "exactly the stage-3 epochs RMTL kept, and print a table shaped like the paper's: the "
            "epochs each arm ran, AUC, Logloss and s-Logloss per task, mean +- std over seeds, the "
            "convergence checks and the oracle on synthetic data; then the critic effect RMTL - "
            "Continued (the primary family: 95%% CIs, Holm-adjusted p-values, * below 0.05 when no "
            "row is flagged, the smallest effect the run could detect) and every other paired "
            "difference as exploratory. Without arguments: the synthetic RetailRocket preset, a "
            "few minutes on 2 cores."
        ),
    )
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        help=f"which data (default {d.dataset}: generated "
        "RetailRocket-like sessions with known true probabilities)",
    )
    p.add_argument(
        "--data",
        metavar="FILE_OR_DIR",
        help="a .npz made by `rmtl prepare` (or SessionData.save), or the raw dataset directory",
    )
    p.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help=(
            f"baseline backbones (default {' '.join(d.models)}; choose from {', '.join(BACKBONES)})"
        ),
    )
    p.add_argument(
        "--rmtl-models",
        nargs="*",
        metavar="NAME",
        help=f"backbones that also get RMTL stages 2 and 3 (default {' '.join(d.rmtl_models)})",
    )
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help=f"number of seeds (default: quick {quick['seeds']}, paper {paper['seeds']})",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="quick: small widths and few epochs, minutes; "
        "paper: the reference hyperparameters (embed 128, bottom 512-256, tower 128-64, 96 critic "
        "epochs), hours (default quick)",
    )
    p.add_argument(
        "--lam", type=float, metavar="L", help=f"stage-3 weight w = 1 - L Q (default {d.lam})"
    )
    p.add_argument(
        "--gamma", type=float, metavar="G", help=f"discount of the critics (default {d.gamma})"
    )
    p.add_argument(
        "--epochs",
        type=int,
        metavar="E",
        help="most epochs of stages 1 and 3 (early stopping "
        f"with patience 2; default: quick {quick['rmtl']['epochs']}, paper 100); given, it also "
        "turns the automatic step floor off",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        metavar="E",
        help="most epochs of stage 3 (default: --epochs)",
    )
    p.add_argument(
        "--min-steps",
        type=int,
        metavar="S",
        help="at least S Adam steps in stage 1 (training from "
        "scratch), adding epochs on small data so models leave their initial plateau and calibrate "
        f"(default {AUTO_MIN_STEPS}, or 0 when --epochs or --compat authors is given; 0 = off); "
        "stage 3 never gets a floor",
    )
    p.add_argument(
        "--early-stopping",
        choices=("logloss", "auc"),
        help="the validation score stages 1 and 3 "
        "stop on: the mean logloss over tasks (default: a rare task's noisy AUC cannot decide the "
        "epoch) or the mean AUC (the authors'; the default with --compat authors)",
    )
    p.add_argument(
        "--budget",
        choices=("matched", "fixed"),
        help="stage 3's budget: matched (default: RMTL stops "
        "early, every control trains exactly the epochs RMTL kept in the same seed) or fixed "
        "(every arm exactly --finetune-epochs epochs, no early stopping)",
    )
    p.add_argument(
        "--controls",
        nargs="*",
        choices=("continued", "static", "permuted"),
        metavar="NAME",
        help="the controls of the critic effect beside RMTL (default all three: continued = every "
        "weight one, static = each task's weight fixed at RMTL's mean, permuted = RMTL's weights "
        "shuffled across rows)",
    )
    p.add_argument(
        "--balancers",
        nargs="+",
        choices=("all", *balancer_names()),
        metavar="NAME",
        help="add loss balancers of the multi-task literature (or 'all'): each backbone trained "
        "from scratch with each (rows UW-MMoE, ...) and the Continued control of each RMTL "
        "backbone with each (Continued[UW]-MMoE), tested against equal weights and against "
        "RMTL; names: " + ", ".join(balancer_names()),
    )
    p.add_argument(
        "--init-output-bias",
        choices=("prior",),
        help="start every task's output at the logit of its "
        "training label rate (a deviation from the authors; default off)",
    )
    p.add_argument(
        "--compat",
        choices=("authors",),
        help="the authors' code's behaviour where rmtl deliberately "
        "differs: batches in time order, critics in training mode in stage 3, reward at the "
        "wrapped action 0.5 + 0.5 a, critic output bias at PyTorch's default; every model must be "
        "the authors' module (ple, not ple_paper; see help(rmtl.RMTL))",
    )
    p.add_argument(
        "--context",
        choices=("critic", "backbone", "both"),
        help="add each row's session context "
        "(position, seconds since the session start, labels of earlier rows of the session) to the "
        "critics' state, the backbones' dense input, or both (see rmtl.with_context; default: "
        "none)",
    )
    p.add_argument(
        "--critic-epochs",
        type=int,
        metavar="E",
        help=f"epochs of stage 2 (default: quick {quick['rmtl']['critic_epochs']}, paper 96)",
    )
    p.add_argument(
        "--n-users",
        type=int,
        metavar="N",
        help="size of the synthetic data in users "
        f"(default: quick {quick['n_users']}, about 72k impressions; paper {paper['n_users']})",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="also write results.md/.csv/.json, config.json (versions, seeds, "
        "every setting) and PNG plots (training curves, critic losses, stage-3 weights, Q by "
        "position) into DIR; plots need matplotlib (pip install 'rmtl[plots]')",
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="checkpoint directory of the run: created if missing; after a "
        "kill or Ctrl-C the same command continues from the last finished stage (a directory of a "
        "run with other settings or data is refused; another --processes or --ray is not); every "
        "job saves its stages there, so a job Ray retries resumes too (on a cluster: storage "
        "every node sees)",
    )
    p.add_argument(
        "--config",
        metavar="FILE.toml",
        help="read settings from a TOML file (keys as the long "
        'options with underscores, e.g. rmtl_models = ["esmm"]); options given here win',
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="run the experiment's jobs (stage 1, stage 2, "
        "each stage-3 variant per seed and backbone) in N local processes, each with cores/N "
        "threads",
    )
    where.add_argument(
        "--jobs", type=int, dest="jobs", help=argparse.SUPPRESS
    )  # the old name of --processes
    where.add_argument(
        "--ray",
        nargs="?",
        const=True,
        metavar="ADDRESS",
        help="run the jobs as tasks on a Ray "
        "cluster, one CPU each: ADDRESS (e.g. auto, or head-node:6379), or without it the cluster "
        "ray.init() finds ($RAY_ADDRESS, a `ray start` on this machine) or a new local one; "
        "needs pip install 'rmtl[ray]'",
    )
    p.set_defaults(func=run_run)


def run_run(args: argparse.Namespace) -> int:
    """Resolve the settings (defaults < config file < options), run, print the table."""
    settings = load_config(args.config) if args.config else {}
    for name in (
        "dataset",
        "data",
        "models",
        "rmtl_models",
        "seeds",
        "preset",
        "lam",
        "gamma",
        "epochs",
        "finetune_epochs",
        "critic_epochs",
        "min_steps",
        "early_stopping",
        "budget",
        "controls",
        "balancers",
        "init_output_bias",
        "compat",
        "context",
        "n_users",
        "out",
        "resume",
        "processes",
        "ray",
    ):
        value = getattr(args, name)
        if value is not None:
            settings[name] = tuple(value) if isinstance(value, list) else value
    if args.jobs is not None:
        print(
            "rmtl run: --jobs is now --processes (--jobs goes in the next release)", file=sys.stderr
        )
        settings["processes"] = args.jobs
    if args.no_progress:
        settings["progress"] = False
    try:
        config = RunConfig(**settings)
    except TypeError as e:
        raise ValueError(f"--config: {e}") from e
    job = run(config, on_result=_print_run)
    if job.config.out:
        print(f"wrote {job.config.out}")
    return 0


def _print_run(job: RunResult) -> None:
    """The table of ``rmtl run``, printed (and flushed) before the output files are written,
    so a full disk or a failed write under --out never loses it."""
    c = job.config
    print(
        f"rmtl run: {c.dataset} data, preset {c.preset}, {c.seeds} seeds, output bias "
        f"{c.init_output_bias or 'default'}, session context {c.context or 'none'}"
        f"{', compat ' + c.compat if c.compat else ''}, {job.seconds:.0f} s"
    )
    print(f"budgets: {describe_budgets(job.budgets)}")
    print(f"matrix products: {describe_gemm(blas_info())}")
    print(job.table(), flush=True)


def add_sweep(sub: argparse._SubParsersAction) -> None:
    """``sweep``: a Ray Tune search described in TOML, and its results table."""
    p = sub.add_parser(
        "sweep",
        help="run a Ray Tune search over RMTL settings described in a TOML file",
        description="Tune one backbone's RMTL settings with Ray Tune (ASHA stops bad trials "
        "early; trials restart from their last finished stage) and print one row per "
        "trial, best first, and the best configuration's test metrics. The file has "
        "[run] (data and fixed settings, as for `rmtl run --config`; models[0] is "
        "tuned), [search] (e.g. lam = {uniform = [0.2, 1.0]}, weighting = {choice = "
        '["rmtl", "label"]}) and [tune] (trials, stages, metric, mode, scheduler, '
        "grace_period, reduction_factor, cpus_per_trial, max_failures, ray, out). "
        "Needs pip install 'rmtl[ray]'.",
    )
    p.add_argument("config", metavar="CONFIG.toml", help="the search")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write results.md/.csv/.json and config.json into DIR "
        "(and Tune's trial directories into DIR/tune); overrides [tune] out",
    )
    p.add_argument(
        "--ray", metavar="ADDRESS", help="the Ray cluster (e.g. auto); overrides [tune] ray"
    )
    p.set_defaults(func=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    """Read the file, run the search, print the table and the best trial."""
    config = load_sweep(args.config)
    config = dataclasses.replace(config, out=args.out or config.out, ray=args.ray or config.ray)
    result = sweep(config)
    print(
        f"rmtl sweep: {len(result.rows)} trials of {result.config.run.models[0]}, "
        f"{result.seconds:.0f} s"
    )
    print(result.to_markdown())
    print(describe_best(result))
    if result.config.out:
        print(f"wrote {result.config.out}")
    return 0


def add_bench(sub: argparse._SubParsersAction) -> None:
    """``bench``: run the scripts of a source checkout's benchmarks/ directory."""
    p = sub.add_parser(
        "bench",
        help="run the benchmarks (from a source checkout)",
        description="Run benchmarks/bench_*.py of the source tree (rmtl against PyTorch; "
        "needs torch) and print their tables. Numbers and commands are kept in "
        "benchmarks/RESULTS.md.",
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="which benchmarks, e.g. backbones env (default all)",
    )
    p.add_argument(
        "--dir", default="benchmarks", help="the benchmarks directory (default ./benchmarks)"
    )
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Run each selected script in its own process; the first failure's status is returned."""
    scripts = sorted(glob.glob(os.path.join(args.dir, "bench_*.py")))
    if not scripts:
        raise FileNotFoundError(
            f"--dir: no bench_*.py in {args.dir!r}; run from a source checkout of rmtl"
        )
    available = {os.path.basename(s)[len("bench_") : -len(".py")]: s for s in scripts}
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        raise ValueError(f"names: unknown benchmark(s) {unknown}; choose from {sorted(available)}")
    for name in args.names or sorted(available):
        print(f"== {name}", flush=True)
        status = subprocess.call([sys.executable, available[name]])
        if status:
            return status
    return 0


def _prog() -> str:
    """How the user called the command line: ``rmtl`` (the installed command) or ``python -m
    rmtl``."""
    return "rmtl" if os.path.basename(sys.argv[0]) == "rmtl" else "python -m rmtl"


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand (each adds itself with an add_<name> function).

    Returns
    -------
    argparse.ArgumentParser
        ``rmtl``'s parser: ``--version`` and the subcommands run, sweep, prepare and bench.
    """
    parser = argparse.ArgumentParser(
        prog=_prog(), description="rmtl: multi-task recommendation with RL critics"
    )
    parser.add_argument("--version", action="version", version=f"rmtl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    add_run(sub)
    add_sweep(sub)
    add_prepare(sub)
    add_bench(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Run the command line with argv (default sys.argv[1:]); returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name (None: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success; 2 for a bad argument, file, missing dependency or lack of memory, 1 for
        a numerical failure (FloatingPointError), 130 after Ctrl-C (each with one line on
        stderr).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, ImportError) as e:
        print(f"rmtl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:  # one line, not a traceback (which may itself not fit)
        detail = f" ({e})" if str(e) else ""
        print(
            f"rmtl {args.command}: error: out of memory{detail}; use smaller data (--n-users), "
            "fewer --processes or a smaller --preset, or raise the memory limit",
            file=sys.stderr,
        )
        return 2
    except FloatingPointError as e:
        print(f"rmtl {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rmtl {args.command}: interrupted", file=sys.stderr)
        return 130
