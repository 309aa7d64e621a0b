"""Experiments: backbones with and without RMTL over several seeds, run as a graph of jobs
(:mod:`rmtl.lab.graph`) on any executor (:mod:`rmtl.lab.executors`) and summarised with means,
standard deviations and paired t-tests against each backbone's own baseline.

(The module is ``experiments``, plural, so that the function ``rmtl.experiment`` does not
hide it.)"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, Optional, Union

import numpy as np

from .. import balancers as rmtl_balancers
from ..agent import RMTL, WEIGHTINGS
from ..config import RMTLConfig
from ..data import SessionData
from ..metrics import logloss, oracle_auc
from ..models import BACKBONES, check_compat
from . import convergence
from .executors import ExecutorSpec, executor_for
from .graph import CONTROL, Job, JobOutput, Settings, graph, run_graph
from .report import ExperimentResult
from .units import agent_view, execute

__all__ = ["experiment", "ExperimentResult"]

# the transfer ``experiment(transfer=None)`` runs when its backbones are there: the paper's
# (critics learned on ESMM weighting MMoE's fine-tuning)
DEFAULT_TRANSFER: tuple[tuple[str, str], ...] = (("esmm", "mmoe"),)


def experiment(
    train: SessionData,
    valid: SessionData,
    test: SessionData,
    backbones: Sequence[str] = ("esmm", "mmoe", "ple"),
    seeds: Iterable[int] = range(5),
    weightings: Sequence[str] = ("rmtl", CONTROL),
    transfer: Optional[Sequence[tuple[str, str]]] = None,
    backbone_kwargs: Optional[Mapping[str, Any]] = None,
    rmtl_kwargs: Union[None, Mapping[str, Any], RMTLConfig] = None,
    checkpoint_dir: Optional[str | os.PathLike[str]] = None,
    progress: bool = False,
    rmtl_backbones: Optional[Sequence[str]] = None,
    on_agent: Optional[Callable[[str, int, RMTL], None]] = None,
    executor: ExecutorSpec = None,
    threads_per_job: Optional[int] = None,
    budget: str = "matched",
    compat: Optional[str] = None,
    balancers: Sequence[str] = (),
) -> ExperimentResult:
    """Run every backbone with and without RMTL over ``seeds`` and evaluate on ``test``.

    For each seed and backbone: stage 1 gives the baseline (metrics of the pretrained
    model); stage 2 learns the critics; stage 3 fine-tunes a copy of the baseline once per
    entry of ``weightings``. Each variant is paired with its own backbone's baseline of the
    same seed, so a difference is the effect of stages 2 and 3 alone.

    Parameters
    ----------
    train, valid, test : SessionData
        Training, validation (early stopping, convergence checks) and test sessions.
    backbones : sequence of str, default ("esmm", "mmoe", "ple")
        Names of :func:`rmtl.models.create`; here, in ``rmtl_backbones`` and in ``transfer``
        names compare in any case, as there (the records spell them as here).
    seeds : iterable of int, default range(5)
        One run of everything per seed.
    weightings : sequence of str, default ("rmtl", "continued")
        Stage-3 variants. The default ``continued`` (stage 3 with every weight one) is the
        control that separates the critics' effect from the extra training. Two more
        controls can join it: ``static`` (each task's weight fixed at the mean of RMTL's
        weights for that task in the same seed: RMTL's task ratio without its per-row
        information) and ``permuted`` (RMTL's weights shuffled across each batch's rows:
        their distribution without their rows).
    transfer : sequence of (source, target) pairs, optional
        For each pair, the critics of the source backbone's agent fine-tune the target's
        baseline (same seed); every backbone named there must be in ``backbones`` and every
        source in ``rmtl_backbones``. The default ``None`` transfers ESMM's critics to MMoE
        (``DEFAULT_TRANSFER``) when both are in ``backbones`` and ESMM in
        ``rmtl_backbones``, and nothing otherwise, so that ``backbones=("esmm",)`` runs as it
        reads; ``()`` never transfers.
    backbone_kwargs : mapping, optional
        Keyword arguments of :func:`rmtl.models.create` (e.g. small ``embed_dim`` for a
        quick run; the seed is the experiment's).
    rmtl_kwargs : mapping or RMTLConfig, optional
        The agents' settings: keyword arguments of :class:`rmtl.RMTL` (a dict, turned into
        one :class:`rmtl.RMTLConfig` here, where every value is checked once) or a ready
        :class:`rmtl.RMTLConfig`; either way each job's seed replaces its ``seed``.
    checkpoint_dir : path, optional
        Every job saves in its own subdirectory there (``esmm-seed0/critics``) and an
        interrupted experiment (or a retried job) resumes from the last finished stage.
    progress : bool, default False
        Progress bars (``executor=None`` only).
    rmtl_backbones : sequence of str, optional
        Limits stages 2 and 3 to these (default: all of ``backbones``); the others are
        baselines only.
    on_agent : callable, optional
        ``on_agent(name, seed, agent)`` is called in this process once a backbone's own
        stages have finished for a seed, with an agent holding their results (e.g. to keep
        diagnostics).
    executor : None, int, Executor or "ray"
        Who runs the graph of jobs (:mod:`rmtl.lab.graph`: stage 1, stage 2, each stage-3
        variant and transfer per seed and backbone). ``None``: one after another in this
        process; an integer N: N local worker processes, which receive the data once; any
        ``concurrent.futures.Executor`` (the data travel with every job); ``"ray"``: tasks
        on the Ray cluster ``ray.init()`` connects to; the data go into the object store
        once, a job whose worker dies is retried (``pip install 'rmtl[ray]'``).
    threads_per_job : int, optional
        Threads per job (:func:`rmtl.set_num_threads`); default: as this process is set for
        ``None`` and for a given executor, the cores divided by N for N processes, 1 on Ray
        (where it is also the CPUs a task reserves).
    budget : "matched" or "fixed"
        How long stage 3 trains: ``"matched"`` lets ``rmtl`` stop early and trains every
        control exactly as many epochs as ``rmtl`` kept in the same seed (so a critic effect
        compares equal budgets; other weightings and transfers stop early on their own);
        ``"fixed"`` trains every stage-3 job exactly ``finetune_epochs`` epochs (of the
        agents' settings; default ``epochs``) without early stopping.
    compat : None or "authors"
        ``"authors"`` (here or in ``rmtl_kwargs``) requires every backbone to be the authors'
        module (not ``ple_paper``); in the dict it also sets the authors' switches (see
        :class:`rmtl.RMTL`), which an RMTLConfig must already hold
        (``RMTLConfig.from_kwargs(kwargs, compat="authors")``).
    balancers : sequence of str or "all"
        Loss balancers of the multi-task literature (names of :func:`rmtl.balancers.names`):
        each backbone whose tasks share parameters is also trained from scratch with each
        balancer (rows ``UW-MMoE``, ..., stage 1 with early stopping like the baseline), and
        each RMTL backbone gets the Continued control with each balancer
        (``Continued[UW]-MMoE``, stage 3 without critics, budgeted like the other controls).
        Each balancer row is compared with the equal-weight baseline and RMTL with each
        balancer row, Holm-adjusted over those comparisons
        (:meth:`ExperimentResult.correction`).

    Returns
    -------
    ExperimentResult
        Every record (model, variant, seed, task; with the ``epochs`` it ran, its
        ``kept_epoch`` and ``steps``), the summary table with paired comparisons, and the
        Markdown, CSV, JSON and DataFrame forms.

    Raises
    ------
    ValueError
        Before any job runs, naming the argument: when ``seeds`` or ``backbones`` is empty, a
        name of ``backbones`` is no backbone of :func:`rmtl.models.create`, a weighting is
        unknown, ``seeds``, ``backbones``, ``rmtl_backbones`` or ``weightings``
        holds a value twice, ``transfer`` is not a sequence of distinct (source, target)
        pairs of two different backbones, a name of ``rmtl_backbones`` or ``transfer`` is not
        in ``backbones``, a transfer's source is not in ``rmtl_backbones``, ``balancers``
        names an unknown balancer or one twice, ``compat`` is given here and in
        ``rmtl_kwargs`` with different values, ``compat`` is neither None nor ``"authors"``
        or, with ``"authors"``, a backbone is not the authors' module, ``budget`` is neither
        ``"matched"`` nor ``"fixed"``, or ``weightings`` holds ``static`` (or, with
        ``budget="matched"``, ``permuted``) without ``rmtl``; also when a value of a
        ``rmtl_kwargs`` mapping is out of its range (checked by :class:`rmtl.RMTLConfig`).
    TypeError
        When ``rmtl_kwargs`` is neither a mapping nor an :class:`rmtl.RMTLConfig`, or (from
        :meth:`rmtl.RMTLConfig.from_kwargs`) a key of the mapping is no setting of
        :class:`rmtl.RMTL`.

    Warns
    -----
    UserWarning
        When a trained model fails a convergence check (:func:`rmtl.lab.convergence.check`,
        on ``valid``): the warning says what to change, and the check is recorded.

    Notes
    -----
    The records depend neither on the executor nor on the threads per job: the same seeds
    give the same numbers, bit for bit (with OpenBLAS or ``RMTL_BLAS=builtin``; another BLAS
    splits the products by its own thread count, and then the numbers agree to rounding).

    Examples
    --------
    >>> import rmtl
    >>> train, valid, test = rmtl.datasets.synthetic(n_users=2000).split()
    >>> res = rmtl.experiment(train, valid, test, backbones=("esmm",), seeds=range(3),
    ...                       rmtl_kwargs={"critic_epochs": 4})  # doctest: +SKIP
    >>> print(res.to_markdown())  # doctest: +SKIP
    """
    seeds = [int(s) for s in seeds]
    unknown = [w for w in weightings if w not in WEIGHTINGS]
    if unknown or not seeds or not backbones:
        raise ValueError(
            f"expected at least one seed and backbone and weightings from {sorted(WEIGHTINGS)}; "
            f"got seeds={seeds}, backbones={list(backbones)}, unknown weightings {unknown}"
        )
    # names compare in lower case, as rmtl.models.create reads them
    keys = [str(b).lower() for b in backbones]
    strange = [b for b, k in zip(backbones, keys) if k not in BACKBONES]
    if strange:
        raise ValueError(
            f"backbones: expected names of rmtl.models.create from {sorted(BACKBONES)} (any "
            f"case), got unknown {strange}"
        )
    with_rmtl = list(backbones) if rmtl_backbones is None else list(rmtl_backbones)
    rmtl_keys = [str(b).lower() for b in with_rmtl]
    # a name given twice would run twice and the table would count it once (n per row)
    for what, given in (
        ("seeds", seeds),
        ("backbones", keys),
        ("rmtl_backbones", rmtl_keys),
        ("weightings", list(weightings)),
    ):
        twice = sorted({x for x in given if given.count(x) > 1}, key=str)
        if twice:
            raise ValueError(f"{what}: expected distinct values, got {twice} more than once")
    if transfer is None:
        transfer = [(s, t) for s, t in DEFAULT_TRANSFER if s in rmtl_keys and t in keys]
    if any(isinstance(p, str) or len(p) != 2 for p in transfer):
        raise ValueError(
            f"transfer: expected (source, target) pairs of backbone names, got {list(transfer)}"
        )
    transfer = [(str(src), str(dst)) for src, dst in transfer]
    same = [p for p in transfer if p[0].lower() == p[1].lower()]
    if same or len({(s.lower(), t.lower()) for s, t in transfer}) != len(transfer):
        raise ValueError(
            "transfer: expected distinct pairs of two different backbones (a backbone's own "
            f"critics are its RMTL variant), got {[list(p) for p in transfer]}"
        )
    named = [str(n) for n in with_rmtl] + [n for pair in transfer for n in pair]
    missing = sorted({n for n in named if n.lower() not in keys})
    if missing:
        raise ValueError(
            f"rmtl_backbones, transfer: backbones {missing} are not in "
            f"backbones={list(backbones)}; "
            "add them"
        )
    if any(src.lower() not in rmtl_keys for src, _ in transfer):
        raise ValueError(
            f"transfer: every source needs critics, so must be in rmtl_backbones={with_rmtl}"
        )
    # every name as spelled in backbones, so that the graph's comparisons hold
    spelled = dict(zip(keys, backbones))
    with_rmtl = [spelled[k] for k in rmtl_keys]
    transfer = [(spelled[s.lower()], spelled[t.lower()]) for s, t in transfer]
    bkw = dict(backbone_kwargs or {})
    balancers = _balancer_names(balancers)
    config, compat = _agent_settings(rmtl_kwargs, compat)
    for name in backbones:
        check_compat(str(name).lower(), compat)
    jobs = graph(
        backbones,
        with_rmtl,
        seeds,
        weightings,
        transfer,
        budget,
        config.epochs if config.finetune_epochs is None else config.finetune_epochs,
        balancers,
        [b for b in backbones if BACKBONES[str(b).lower()]._shared] if balancers else None,
    )
    settings = Settings(
        bkw,
        config,
        None if checkpoint_dir is None else os.path.abspath(checkpoint_dir),
        progress,
        compat=compat,
    )

    def done(job: Job, outputs: Mapping[Job, JobOutput]) -> None:
        own = [j for j in jobs if j.model == job.model and j.seed == job.seed and not j.transfer]
        if on_agent is not None and job in own and all(j in outputs for j in own):
            on_agent(job.model, job.seed, agent_view(job.model, job.seed, settings, outputs, jobs))

    runner = executor_for(executor, execute, (train, valid, test), threads_per_job)
    outputs = run_graph(jobs, settings, runner, done)
    records = [r for job in jobs for r in outputs[job].records]
    result = ExperimentResult(
        records,
        _oracle(test),
        {
            "backbones": list(backbones),
            "rmtl_backbones": with_rmtl,
            "seeds": seeds,
            "weightings": list(weightings),
            "transfer": [list(p) for p in transfer],
            "backbone_kwargs": bkw,
            "rmtl_kwargs": {**config.to_dict(), **({"compat": compat} if compat else {})},
            "budget": budget,
            "balancers": list(balancers),
            "rows": {"train": len(train), "valid": len(valid), "test": len(test)},
            "test_positives": {
                task: int(np.count_nonzero(test.labels[:, k]))
                for k, task in enumerate(test.task_names)
            },
            "threads_per_job": runner.threads,
        },
    )
    flagged = {
        (r["model"], r["variant"]): (r["flags"], r["n"]) for r in result.table() if r["flags"]
    }
    if flagged:
        raised = [f for f in convergence.ADVICE if any(f in fl for fl, _ in flagged.values())]
        warnings.warn(
            "convergence checks failed, comparisons with these rows are not significant: "
            + "; ".join(
                f"{m} {v} ({', '.join(f'{f} {k}/{n}' for f, k in fl.items())})"
                for (m, v), (fl, n) in flagged.items()
            )
            + ". What to change: "
            + "; ".join(f"{f}: {convergence.ADVICE[f]}" for f in raised),
            stacklevel=2,
        )
    return result


def _balancer_names(balancers: Union[str, Sequence[str]]) -> list[str]:
    """``balancers`` as a list of distinct names (``"all"``: every balancer)."""
    if isinstance(balancers, str):
        balancers = rmtl_balancers.names() if balancers == "all" else [balancers]
    names = [str(b).lower() for b in balancers]
    known = rmtl_balancers.names()
    bad = [b for b in names if b not in known]
    if bad or len(set(names)) != len(names):
        raise ValueError(
            f"balancers: expected distinct names from {known} (or 'all'), got {list(balancers)}"
        )
    return names


def _agent_settings(
    rmtl_kwargs: Union[None, Mapping[str, Any], RMTLConfig], compat: Optional[str]
) -> tuple[RMTLConfig, Optional[str]]:
    """The agents' config and compat from :func:`experiment`'s arguments (the one place a
    dict of keyword arguments becomes an :class:`rmtl.RMTLConfig`)."""
    if isinstance(rmtl_kwargs, RMTLConfig):
        return rmtl_kwargs, compat
    if rmtl_kwargs is not None and not isinstance(rmtl_kwargs, Mapping):
        raise TypeError(
            "rmtl_kwargs: expected a mapping of rmtl.RMTL keyword arguments or an "
            f"rmtl.RMTLConfig, got {type(rmtl_kwargs).__name__}"
        )
    kwargs = dict(rmtl_kwargs or {})
    given = kwargs.pop("compat", None)
    if given is not None and compat is not None and given != compat:
        raise ValueError(f"compat: {compat!r} here and {given!r} in rmtl_kwargs; give it once")
    compat = compat if given is None else given
    return RMTLConfig.from_kwargs(kwargs, compat), compat


def _oracle(test: SessionData) -> dict[str, dict[str, float]]:
    """AUC and logloss of the true probabilities, per task, when the data knows them."""
    if test.truth is None:
        return {}
    return {
        task: {
            "auc": oracle_auc(test.truth[:, k]),
            "logloss": logloss(test.labels[:, k], test.truth[:, k]),
        }
        for k, task in enumerate(test.task_names)
    }
