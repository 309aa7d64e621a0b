"""``rmtl sweep CONFIG.toml``: a Ray Tune search over one backbone's RMTL settings, described
in TOML, and its results table (one row per trial, best first).

The file has three tables::

    [run]      # data and fixed settings, as for `rmtl run --config`; models[0] is tuned
    models = ["esmm"]
    preset = "quick"

    [search]   # what Tune varies: any rmtl.RMTL keyword, `seed`; see rmtl.lab.tune.search_space
    lam = {uniform = [0.2, 1.0]}
    weighting = {choice = ["rmtl", "label", "neg_q"]}
    balancer = "dwa"                            # a loss balancer for stages 1 and 3
    balancer_args = {T = {uniform = [1, 4]}}    # and its hyperparameters (DWA's T)

    [tune]     # the search itself (SweepConfig fields)
    trials = 8
    scheduler = "asha"
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from typing import Any, Callable, Optional, Union

from .._io import check_out_directory, remove_stale_temporaries, write_set
from . import tune
from ._ray import connect
from .report import markdown_table
from .settings import PRESETS, RunConfig, config_from_table, environment, load_dataset, read_toml

__all__ = ["SweepConfig", "load_sweep", "run_sweep", "SweepResult", "describe_best"]

TABLES = ("run", "search", "tune")


@dataclasses.dataclass
class SweepConfig:
    """A Tune search: ``trials`` samples of ``search`` (times each grid), ``stages`` 1
    (stage 1 only) or 3; trials ranked by ``metric`` (``mode`` max or min); ``scheduler``
    ``asha`` (stops trials falling behind after ``grace_period`` reports, keeping
    1/``reduction_factor`` at each rung) or ``fifo``; each trial reserves ``cpus_per_trial``
    CPUs (and runs that many threads) and restarts from its last finished stage up to
    ``max_failures`` times; ``ray`` as for ``rmtl run`` (True or an address; default: what
    ``ray.init()`` finds, or a new local cluster); ``out`` receives the results table.

    Parameters
    ----------
    run : RunConfig
        The data, backbone (the first of ``models``), preset and agent settings of every trial.
    search : dict
        The searched values (:func:`rmtl.lab.tune.search_space`).
    trials : int, default 1
        Samples of the search.
    stages : {1, 3}, default 3
        RMTL's stages each trial runs.
    metric : str, default "valid_auc"
        The metric trials are ranked and scheduled by.
    mode : {"max", "min"}, default "max"
        Whether higher or lower ``metric`` is better.
    scheduler : {"asha", "fifo"}, default "asha"
        Tune's scheduler.
    grace_period, reduction_factor : int, default 1, 2
        ASHA's settings.
    cpus_per_trial : float, default 1.0
        CPUs each trial reserves.
    max_failures : int, default 2
        Restarts of a trial whose worker died.
    ray : bool or str, default True
        The Ray cluster (True: what ``ray.init()`` finds, or a new local one; a string: its
        address).
    out : str, optional
        Directory the results go to.
    """

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    search: dict[str, Any] = dataclasses.field(default_factory=dict)
    trials: int = 1
    stages: int = 3
    metric: str = "valid_auc"
    mode: str = "max"
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    cpus_per_trial: float = 1.0
    max_failures: int = 2
    ray: Union[bool, str] = True
    out: Optional[str] = None


def load_sweep(path: str) -> SweepConfig:
    """Read a sweep TOML file (see the module docstring); unknown tables or keys are errors.

    Parameters
    ----------
    path : str
        The TOML file.

    Returns
    -------
    SweepConfig

    Raises
    ------
    ValueError
        Naming the file: when it is not valid TOML (:func:`~rmtl.lab.settings.read_toml`), has
        a top-level key other than the tables ``run``, ``search`` and ``tune``, one of these
        is not a table, ``[tune]`` holds a key that is not a field of :class:`SweepConfig`
        other than ``run`` and ``search``, or a value of the wrong type, or ``[run]`` is
        rejected by :func:`~rmtl.lab.settings.config_from_table` (an unknown key or a value
        of the wrong type).
    """
    raw = read_toml(path)
    unknown = sorted(set(raw) - set(TABLES))
    if unknown:
        raise ValueError(f"{path}: unknown table(s) {unknown}; expected some of {list(TABLES)}")
    for table in TABLES:
        if not isinstance(raw.get(table, {}), dict):
            raise ValueError(f"{path}: {table}: expected a table [{table}], got {raw[table]!r}")
    tune = dict(raw.get("tune", {}))
    known = {f.name for f in dataclasses.fields(SweepConfig)} - {"run", "search"}
    bad = sorted(set(tune) - known)
    if bad:
        raise ValueError(
            f"{path}: unknown key(s) {bad} in [tune]; expected some of {sorted(known)}"
        )
    for key, value in tune.items():
        test, expected = _TUNE_TYPES[key]
        if not test(value):
            raise ValueError(f"{path}: [tune] {key}: expected {expected}, got {value!r}")
    run = RunConfig(**config_from_table(raw.get("run", {}), path))
    return SweepConfig(run=run, search=dict(raw.get("search", {})), **tune)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# what each [tune] key holds, as (test, what is expected)
_TUNE_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "trials": (_is_int, "a number of trials (an integer)"),
    "stages": (_is_int, "1 or 3"),
    "metric": (lambda v: isinstance(v, str), "a metric name (a string)"),
    "mode": (lambda v: isinstance(v, str), '"max" or "min"'),
    "scheduler": (lambda v: isinstance(v, str), '"asha" or "fifo"'),
    "grace_period": (_is_int, "an integer"),
    "reduction_factor": (_is_int, "an integer"),
    "cpus_per_trial": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "a number of CPUs",
    ),
    "max_failures": (_is_int, "an integer"),
    "ray": (lambda v: isinstance(v, (bool, str)), "true or a cluster address"),
    "out": (lambda v: v is None or isinstance(v, str), "a directory path (a string)"),
}


@dataclasses.dataclass
class SweepResult:
    """One row per trial (its searched values, ``status``: finished, stopped by the scheduler
    or error, ``iterations`` and the last reported metrics), best first, and the wall time.

    Parameters
    ----------
    rows : list of dict
        One per trial, best first.
    columns : list of str
        The columns of the results table.
    config : SweepConfig
        The search, its run resolved.
    seconds : float
        The wall time.
    """

    rows: list[dict[str, Any]]
    columns: list[str]
    config: SweepConfig
    seconds: float

    @property
    def best(self) -> Optional[dict[str, Any]]:
        """The best finished trial (the only ones with test metrics), or None."""
        return next((r for r in self.rows if r["status"] == "finished"), None)

    def to_markdown(self) -> str:
        """The trials as a Markdown table, best first.

        Returns
        -------
        str
        """
        table = [[_cell(row.get(c)) for c in self.columns] for row in self.rows]
        return "\n".join(markdown_table(self.columns, table))

    def to_csv(self) -> str:
        """The trials as CSV text, best first.

        Returns
        -------
        str
        """
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buf.getvalue()


def run_sweep(config: SweepConfig) -> SweepResult:
    """Run the search of ``config`` on Ray Tune; with ``config.out``, write results.md/.csv/.json
    and config.json there.

    Parameters
    ----------
    config : SweepConfig
        The search.

    Returns
    -------
    SweepResult

    Raises
    ------
    ValueError
        When ``config.stages`` is neither 1 nor 3, ``config.trials`` is below 1,
        ``config.mode`` is neither ``"max"`` nor ``"min"`` or ``config.scheduler`` neither
        ``"asha"`` nor ``"fifo"``; checked after ``config.run`` passes
        :meth:`~rmtl.lab.settings.RunConfig.resolved`, whose errors are raised as they are,
        and like those of :func:`rmtl.lab.tune.search_space` on ``config.search``, before
        connecting to Ray or loading the data.
    FileExistsError
        When ``config.out`` exists and is not a directory, or a directory stands where an
        output file goes (before anything runs).
    PermissionError
        When ``config.out`` is not writable (before anything runs).
    """
    c = dataclasses.replace(config, run=config.run.resolved())
    if c.stages not in (1, 3) or c.trials < 1:
        raise ValueError(
            f"stages, trials: expected stages 1 or 3 and trials >= 1, got {c.stages}, {c.trials}"
        )
    tune._check_search(c.mode, c.scheduler)
    if c.out is not None:  # before the search space, which needs Ray installed
        check_out_directory(c.out, OUTPUTS)
    searching = tune.search_space(c.search)
    connect(None if c.ray is True else c.ray)
    started, t0 = time.time(), time.perf_counter()
    train, valid, test = load_dataset(c.run).split((0.6, 0.2, 0.2))
    base = {
        "backbone": c.run.models[0],
        "seed": 0,
        "backbone_kwargs": PRESETS[c.run.preset]["backbone"],
        "rmtl": c.run.rmtl_config(),
        "compat": c.run.compat,
    }
    space = {**base, **searching}
    storage = None if c.out is None else os.path.abspath(os.path.join(c.out, "tune"))
    grid = tune.run(
        tune.three_stages if c.stages == 3 else tune.pretrain,
        (train, valid, test),
        space,
        trials=c.trials,
        metric=c.metric,
        mode=c.mode,
        scheduler=c.scheduler,
        grace_period=c.grace_period,
        reduction_factor=c.reduction_factor,
        cpus_per_trial=c.cpus_per_trial,
        max_failures=c.max_failures,
        storage_path=storage,
    )
    searched = sorted(c.search)
    rows = []
    for r in grid:
        m = r.metrics or {}
        status = "error" if r.error else "finished" if "test_auc" in m else "stopped"
        rows.append(
            {
                **{k: r.config.get(k) for k in searched},
                "status": status,
                "iterations": m.get("training_iteration"),
                **{k: v for k, v in m.items() if k.startswith(("valid_", "test_"))},
            }
        )
    sign = -1 if c.mode == "max" else 1
    rows.sort(
        key=lambda row: (row["status"] != "finished", sign * row.get(c.metric, sign * float("inf")))
    )
    metrics = sorted(
        {k for row in rows for k in row if k.startswith(("valid_", "test_"))},
        key=lambda k: (not k.startswith("valid_"), k.count("_") > 1, k),
    )
    result = SweepResult(
        rows, searched + ["status", "iterations"] + metrics, c, time.perf_counter() - t0
    )
    if c.out is not None:
        _write_outputs(result)
        # what kills of earlier sweeps left there, trials' working directories included
        remove_stale_temporaries(c.out, started)
    return result


OUTPUTS = ("results.md", "results.csv", "results.json", "config.json")


def _write_outputs(result: SweepResult) -> None:
    """The outputs of ``rmtl sweep`` in ``out``, written and renamed into place as one set
    (:func:`rmtl._io.write_set`)."""
    config = dataclasses.asdict(result.config)
    files = {
        "results.md": result.to_markdown() + "\n",
        "results.csv": result.to_csv(),
        "results.json": json.dumps(result.rows, indent=1),
        "config.json": json.dumps(
            {"sweep": config, "environment": environment(), "seconds": round(result.seconds, 1)},
            indent=1,
            default=list,
        ),
    }
    write_set(result.config.out, files, OUTPUTS)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def describe_best(result: SweepResult) -> str:
    """One line: the best finished trial's searched values and its test metrics.

    Parameters
    ----------
    result : SweepResult
        The search's result.

    Returns
    -------
    str
    """
    best = result.best
    if best is None:
        return "no trial finished"
    values = ", ".join(f"{k}={_cell(best[k])}" for k in sorted(result.config.search))
    tests = ", ".join(
        f"{k}={_cell(v)}" for k, v in best.items() if k.startswith("test_") and k.count("_") == 1
    )
    return f"best: {values}; {tests}"
