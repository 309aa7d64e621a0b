"""Ray Tune for rmtl: trainables for stage 1 and for RMTL's three stages, and a search runner.

Both trainables report the validation AUC and logloss (means over tasks, and per task) after
every epoch of stages 1 and 3, so Tune's schedulers (ASHA) stop bad trials early, and save a
checkpoint (the agent's checkpoint directory) after every finished stage, so a trial whose
worker dies resumes from its last finished stage. The last report of a trial adds the test
metrics of its final model (``test_auc``, ``test_logloss``, per task too); select on the
validation metrics and read the test ones of the winner.

Use them with the data in Ray's object store once::

    from ray import tune
    trainable = tune.with_parameters(rmtl.lab.tune.three_stages, data=(train, valid, test))
    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                       param_space={"backbone": "esmm", "lam": tune.uniform(0.1, 1.0)}, ...)

A trial's ``config`` holds ``backbone`` (a name for :func:`rmtl.models.create`, default
``esmm``), ``seed`` (default 0), ``backbone_kwargs`` (a dict) and any keyword of
:class:`rmtl.RMTL` (``lam``, ``gamma``, ``weighting``, ``epochs``, ..., ``compat``). With
``rmtl``, an :class:`rmtl.RMTLConfig` (as ``rmtl sweep`` passes its run's settings), the
keywords change only those fields of it, and only they are checked again.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import numpy as np

from ..agent import RMTL
from ..data import SessionData
from ..metrics import evaluate
from ..models import Backbone, create
from . import _ray, _threads

__all__ = ["pretrain", "three_stages", "run", "search_space", "SCHEDULERS"]

SCHEDULERS = ("asha", "fifo")
DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")
Splits = tuple[SessionData, SessionData, SessionData]


def pretrain(config: Mapping[str, Any], data: Splits, scratch: Optional[str] = None) -> None:
    """Tune function trainable: stage 1 (the baseline) of ``config['backbone']``.

    Parameters
    ----------
    config : mapping
        The trial's settings: ``backbone`` (default ``"esmm"``), ``seed`` (0),
        ``backbone_kwargs``, ``rmtl`` (an :class:`rmtl.RMTLConfig`, or None) and ``compat``;
        every other key is an agent setting (of :class:`rmtl.RMTL`, or replaced in ``rmtl``).
    data : tuple of SessionData
        The (train, valid, test) splits.
    scratch : str, optional
        The directory the trial's stage files go in, in a ``.trial.XXXXXXXX.tmp`` directory
        removed when the trial ends (None: the system's temporary directory).
    """
    _trial(config, data, 1, scratch)


def three_stages(config: Mapping[str, Any], data: Splits, scratch: Optional[str] = None) -> None:
    """Tune function trainable: RMTL's three stages (pretrain, critics, weighted fine-tuning).

    Parameters
    ----------
    config : mapping
        The trial's settings: ``backbone`` (default ``"esmm"``), ``seed`` (0),
        ``backbone_kwargs``, ``rmtl`` (an :class:`rmtl.RMTLConfig`, or None) and ``compat``;
        every other key is an agent setting (of :class:`rmtl.RMTL`, or replaced in ``rmtl``).
    data : tuple of SessionData
        The (train, valid, test) splits.
    scratch : str, optional
        The directory the trial's stage files go in, in a ``.trial.XXXXXXXX.tmp`` directory
        removed when the trial ends (None: the system's temporary directory).
    """
    _trial(config, data, 3, scratch)


def _trial(config: Mapping[str, Any], data: Splits, stages: int, scratch: Optional[str]) -> None:
    ray = _ray.require()
    from ray import tune

    train, valid, test = data
    kwargs = dict(config)
    name, seed = kwargs.pop("backbone", "esmm"), int(kwargs.pop("seed", 0))
    base = kwargs.pop("rmtl", None)
    model = create(
        name,
        train.field_dims,
        train.num_dense,
        train.num_tasks,
        seed=seed,
        **kwargs.pop("backbone_kwargs", {}),
    )
    threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    # the stages' files, named so that a later sweep into the same storage removes what a
    # killed trial left; not in the trial's own directory, whose files Tune copies as artifacts
    if scratch is not None:
        os.makedirs(scratch, exist_ok=True)
    stages_dir = tempfile.TemporaryDirectory(prefix=".trial.", suffix=".tmp", dir=scratch)
    with stages_dir as work, _threads.limit(threads):
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:  # a restarted trial: its finished stages load from here
            checkpoint.to_directory(work)

        def finished(stage: str, model: Backbone, last: bool = False) -> None:
            metrics = {"stage": stage, **_valid_metrics(evaluate(model, valid))}
            if last:
                metrics.update(_test_metrics(evaluate(model, test)))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(work))

        def on_epoch(stage: str, rec: dict[str, Any]) -> None:
            tune.report({"stage": stage, **_epoch_metrics(rec)})

        if base is None:
            agent = RMTL(
                model, seed=seed, checkpoint_dir=work, progress=False, on_epoch=on_epoch, **kwargs
            )
        else:
            compat = kwargs.pop("compat", None)
            agent = RMTL.from_config(
                model,
                base.replace(seed=seed, **kwargs),
                compat=compat,
                checkpoint_dir=work,
                progress=False,
                on_epoch=on_epoch,
            )
        agent.pretrain(train, valid)
        finished("pretrain", agent.pretrained, last=stages == 1)
        if stages == 3:
            agent.fit_critics(train)
            finished("critics", agent.pretrained)
            agent.finetune(train, valid)
            finished(f"finetuned-{agent.config.weighting}", agent.backbone, last=True)


def _epoch_metrics(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A Trainer epoch record as a Tune report: mean and per-task validation AUC and logloss."""
    out = {k: v for k, v in rec.items() if k.startswith("valid_") or k in ("epoch", "train_loss")}
    out["valid_logloss"] = float(
        np.mean([v for k, v in rec.items() if k.startswith("valid_logloss_")])
    )
    return out


def _valid_metrics(res: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    out = {
        "valid_auc": float(np.nanmean([r["auc"] for r in res.values()])),
        "valid_logloss": float(np.mean([r["logloss"] for r in res.values()])),
    }
    for task, r in res.items():
        out[f"valid_auc_{task}"], out[f"valid_logloss_{task}"] = r["auc"], r["logloss"]
    return out


def _test_metrics(res: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {k.replace("valid_", "test_", 1): v for k, v in _valid_metrics(res).items()}


def search_space(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Tune's ``param_space`` from a plain mapping (a TOML table): a one-key table naming a
    distribution draws the value: ``{choice = [...]}``, ``{grid = [...]}`` (every value,
    times the number of trials), ``{uniform = [lo, hi]}``, ``{loguniform = [lo, hi]}``,
    ``{randint = [lo, hi]}`` (hi excluded); any other table is searched the same way inside
    (``balancer_args = {T = {uniform = [1, 4]}}`` searches DWA's temperature); anything else
    is a fixed value.

    Parameters
    ----------
    spec : mapping
        The search, as above.

    Returns
    -------
    dict
        Tune's ``param_space``.

    Raises
    ------
    ValueError
        When a ``uniform``, ``loguniform`` or ``randint`` table (at any depth) does not give
        a list of exactly two values, ``[low, high]``, or a ``choice`` or ``grid`` table no
        non-empty list of values, naming the key.
    """
    _ray.require()
    from ray import tune

    space: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, Mapping) and not (
            len(value) == 1 and next(iter(value)) in DISTRIBUTIONS
        ):
            space[key] = search_space(value)
            continue
        if not isinstance(value, Mapping):
            space[key] = value
            continue
        kind, args = next(iter(value.items()))
        bounds = kind not in ("choice", "grid")
        values = (
            None
            if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Iterable)
            else list(args)
        )
        if values is None or (len(values) != 2 if bounds else not values):
            expects = "[low, high]" if bounds else "a non-empty list of values"
            raise ValueError(f"search.{key}: {kind} expects {expects}, got {args!r}")
        if bounds:
            space[key] = getattr(tune, kind)(*values)
        else:
            space[key] = (tune.choice if kind == "choice" else tune.grid_search)(values)
    return space


def _check_search(mode: str, scheduler: str) -> None:
    """ValueError naming ``mode`` or ``scheduler`` when it is not one :func:`run` knows."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode: expected 'max' or 'min', got {mode!r}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler: expected one of {list(SCHEDULERS)}, got {scheduler!r}")


def run(
    trainable: Any,
    data: Splits,
    param_space: Mapping[str, Any],
    *,
    trials: int = 1,
    metric: str = "valid_auc",
    mode: str = "max",
    scheduler: str = "asha",
    grace_period: int = 1,
    reduction_factor: int = 2,
    cpus_per_trial: float = 1,
    max_failures: int = 2,
    storage_path: Optional[str] = None,
    name: Optional[str] = None,
) -> Any:
    """Run a Tune search of ``trainable`` (:func:`pretrain` or :func:`three_stages`) over
    ``param_space`` (values and Tune distributions) and return Tune's ``ResultGrid``.

    The data go into the object store once; ``trials`` samples (times each grid);
    ``scheduler`` ``asha`` (stop trials whose ``metric`` falls behind after
    ``grace_period`` reports) or ``fifo`` (run all to the end); each trial reserves
    ``cpus_per_trial`` CPUs and runs that many threads; a trial whose worker dies is
    restarted from its last checkpoint up to ``max_failures`` times. A trial's stage files
    live in a ``.trial.XXXXXXXX.tmp`` directory, removed when the trial ends, in
    ``storage_path/.trials`` for a local ``storage_path`` (else the system's temporary
    directory); what a killed trial leaves there, ``rmtl sweep`` removes on its next
    successful search into the same ``--out``.

    Ctrl-C during the search is Tune's (it stops the trials); the process's Ctrl-C handler is
    restored afterwards, so later training in this process stops on Ctrl-C again.

    Parameters
    ----------
    trainable : callable
        :func:`pretrain` or :func:`three_stages`.
    data : tuple of SessionData
        The (train, valid, test) splits.
    param_space : mapping
        Every trial's settings (:func:`search_space`).
    trials : int, default 1
        Samples of the search.
    metric : str, default "valid_auc"
        The metric trials are scheduled and ranked by.
    mode : {"max", "min"}, default "max"
        Whether higher or lower ``metric`` is better.
    scheduler : {"asha", "fifo"}, default "asha"
        Tune's scheduler.
    grace_period, reduction_factor : int, default 1, 2
        ASHA's settings.
    cpus_per_trial : float, default 1
        CPUs each trial reserves.
    max_failures : int, default 2
        Restarts of a trial whose worker died.
    storage_path : str, optional
        Where Tune keeps its results (None: Tune's default).
    name : str, optional
        The experiment's name under ``storage_path``.

    Returns
    -------
    ray.tune.ResultGrid

    Raises
    ------
    ValueError
        When ``mode`` is neither ``"max"`` nor ``"min"`` or ``scheduler`` is neither
        ``"asha"`` nor ``"fifo"`` (checked before connecting to Ray).
    """
    _check_search(mode, scheduler)
    _ray.connect()
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    local = storage_path is not None and "://" not in storage_path
    scratch = os.path.join(os.path.abspath(storage_path), ".trials") if local else None

    sched = (
        ASHAScheduler(grace_period=grace_period, reduction_factor=reduction_factor, max_t=10_000)
        if scheduler == "asha"
        else FIFOScheduler()
    )
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(trainable, data=data, scratch=scratch), {"cpu": cpus_per_trial}
        ),
        param_space=dict(param_space),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=sched, num_samples=trials),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        return tuner.fit()
    finally:
        if main:  # Tune installs its own SIGINT handler and leaves it in place
            signal.signal(signal.SIGINT, handler)
