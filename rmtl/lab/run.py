"""The main run: the paper's experiment end to end, as ``rmtl run`` runs it.

Baselines and RMTL variants over several seeds on one dataset, a paper-style table, and
(with an output directory) the table files, the full configuration and diagnostic plots.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import warnings
from collections.abc import Mapping
from typing import IO, Any, Callable, Optional, Union

from .. import _progress
from .._io import (
    CorruptFileError,
    check_out_directory,
    remove_stale_temporaries,
    write_json,
    write_set,
)
from ..context import with_context
from ..data import SessionData
from ..models import BACKBONES
from . import plots, report
from .experiment import ExperimentResult, experiment
from .settings import PRESETS, RunConfig, environment, load_dataset

__all__ = ["RunResult", "run", "write_outputs", "OUTPUTS"]


@dataclasses.dataclass
class RunResult:
    """The experiment's result, the resolved config, diagnostics of the first seed, the wall
    time and what each stage's budget was (:meth:`RunConfig.budgets`).

    Parameters
    ----------
    result : ExperimentResult
        The experiment's records.
    config : RunConfig
        The resolved configuration.
    diagnostics : dict
        Per backbone of the first seed: its ``history`` and, for the RMTL backbones, the
        stage-3 ``weights`` and critic values ``q`` on the test split.
    seconds : float
        The wall time of the experiment.
    budgets : dict
        What each stage's budget was (:meth:`RunConfig.budgets`).
    """

    result: ExperimentResult
    config: RunConfig
    diagnostics: dict[str, dict[str, Any]]
    seconds: float
    budgets: dict[str, dict[str, Any]]

    def table(self) -> str:
        """The paper-style Markdown table.

        Returns
        -------
        str
            :func:`rmtl.lab.report.to_markdown` of the result.
        """
        return report.to_markdown(self.result)


def run(config: RunConfig, on_result: Optional[Callable[[RunResult], None]] = None) -> RunResult:
    """Run the experiment of ``config`` (see :class:`RunConfig`); with ``config.out`` also
    write the table (Markdown, CSV, JSON), ``config.json`` and the plots there
    (:func:`write_outputs`). ``on_result(result)`` is called before any of them is written
    (``rmtl run`` prints the table there, so a failed write never loses it). A successful
    run removes the temporaries that kills of earlier runs left anywhere under
    ``config.out`` and ``config.resume``.

    Parameters
    ----------
    config : RunConfig
        The run.
    on_result : callable, optional
        ``on_result(result)`` with the :class:`RunResult`, before any output is written.

    Returns
    -------
    RunResult
    """
    c = config.resolved()
    started = time.time()
    if c.out is not None:
        check_out(c.out)
    if c.resume is not None:
        check_checkpoint_dir(c)
    t0 = time.perf_counter()
    data = load_dataset(c)
    train, valid, test = (with_context(part, c.context) for part in data.split((0.6, 0.2, 0.2)))
    executor = c.executor()
    if c.resume is not None:  # everything is checked: the directory is this run's
        claim_checkpoint_dir(c)
    diagnostics: dict[str, dict[str, Any]] = {}
    # one bar over (seed, backbone) runs: per-epoch bars of ~70 runs would flood the terminal
    bar = _progress.bar(c.progress, total=c.seeds * len(c.models), desc="rmtl run", unit="model")

    def observe(name: str, seed: int, agent: Any) -> None:
        bar.set_postfix_str(f"seed {seed} {name} done")
        bar.update(1)
        if seed != 0 or not agent.critics:
            return
        prob = agent.pretrained.predict(test.sparse, test.dense)
        diagnostics[name] = {
            "history": agent.history,
            "weights": agent.loss_weights(test, prob),
            "q": agent.q_values(test, prob),
        }

    result = experiment(
        train,
        valid,
        test,
        backbones=c.models,
        rmtl_backbones=c.rmtl_models,
        seeds=range(c.seeds),
        weightings=("rmtl", *c.controls),
        transfer=(),
        backbone_kwargs=PRESETS[c.preset]["backbone"],
        rmtl_kwargs=c.rmtl_config(),
        compat=c.compat,
        on_agent=observe,
        executor=executor,
        checkpoint_dir=c.resume,
        budget=c.budget,
        balancers=c.balancers,
    )
    bar.close()
    job = RunResult(result, c, diagnostics, time.perf_counter() - t0, c.budgets(len(train)))
    if on_result is not None:
        on_result(job)
    if c.out is not None:
        write_outputs(job, test)
    for directory in (c.resume, c.out):  # the kills before this run left nothing behind
        if directory is not None:
            remove_stale_temporaries(directory, started)
    return job


OUTPUTS = (
    "results.md",
    "results.csv",
    "results.json",
    "config.json",
    "training_curves.png",
    "critic_curves.png",
    "stage3_weights.png",
    "q_by_position.png",
)


def check_out(out: str) -> None:
    """Before any training: ``out`` must be (or become) a writable directory with nothing in
    the way of the files to write, and matplotlib must be there for the plots."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise ImportError(
            "--out: the plots need matplotlib; pip install 'rmtl[plots]' (or leave out --out)"
        ) from None
    except ImportError as e:  # installed, but a library of it cannot be loaded
        raise ImportError(
            f"--out: the plots need matplotlib, which is installed but cannot be imported ({e}); "
            "under a memory limit (ulimit -v) raise it, or leave out --out"
        ) from None
    check_out_directory(out, OUTPUTS)


# fields of RunConfig that do not decide the records: where the outputs go, the directory
# itself, progress bars and where the jobs run (the same seeds give the same records on any
# executor); a resume may change them
_NOT_RECORDED = ("out", "resume", "progress", "processes", "ray")


def _identity(c: RunConfig) -> dict[str, Any]:
    """The settings of ``c`` that decide its records, as job.json holds them."""
    return {
        k: v
        for k, v in json.loads(json.dumps(dataclasses.asdict(c))).items()
        if k not in _NOT_RECORDED
    }


def check_checkpoint_dir(c: RunConfig) -> bool:
    """Refuse ``c.resume`` when its job.json records a run with other settings (ValueError
    naming them) or is damaged (:class:`rmtl.CorruptFileError` naming it); whether it holds
    one. Writes nothing: :func:`claim_checkpoint_dir` records the run once it is checked."""
    path = os.path.join(c.resume, "job.json")
    if os.path.exists(c.resume) and not os.path.isdir(c.resume):
        raise FileExistsError(f"--resume: {c.resume} exists and is not a directory")
    if not os.path.exists(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            theirs = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(
            path, f"not a readable job.json of rmtl run ({e}); remove it or use a new directory"
        ) from None
    if not isinstance(theirs, dict):
        raise CorruptFileError(
            path, "not a job.json of rmtl run (no table of settings); use a new directory"
        )
    mine = _identity(c)
    diff = sorted(
        k for k in (set(mine) | set(theirs)) - set(_NOT_RECORDED) if mine.get(k) != theirs.get(k)
    )
    if diff:
        raise ValueError(
            f"--resume: {c.resume} holds a run with other settings ({', '.join(diff)}: "
            f"{[theirs.get(k) for k in diff]} there); use the same settings or a new directory"
        )
    return True


def claim_checkpoint_dir(c: RunConfig) -> None:
    """Record the settings that decide the run in ``c.resume``/job.json, or refuse a
    directory that holds a run with other settings (:func:`check_checkpoint_dir`)."""
    if not check_checkpoint_dir(c):
        os.makedirs(c.resume, exist_ok=True)
        write_json(os.path.join(c.resume, "job.json"), _identity(c))


def write_outputs(job: RunResult, test: SessionData) -> list[str]:
    """Write results.md (the table, then :func:`rmtl.lab.report.per_seed`), results.csv/.json,
    config.json and the PNG plots into ``job.config.out``; returns the paths written.

    All of them are written into a staging directory inside ``out`` first and then renamed
    into place together (a Ctrl-C waits for the renames; the :data:`OUTPUTS` this run does
    not write are removed), so ``out`` holds the complete outputs of one run: the earlier
    run's if this one is interrupted or fails, this run's once it returns. A failed write is
    an OSError naming the output file.

    Parameters
    ----------
    job : RunResult
        The run's result (``job.config.out`` is where the outputs go).
    test : SessionData
        The test split the diagnostics' plots are drawn over.

    Returns
    -------
    list of str
        The paths written.
    """
    out = job.config.out
    files = {
        "results.md": job.table() + "\n\n" + report.per_seed(job.result) + "\n",
        "results.csv": report.to_csv(job.result),
        "results.json": report.to_json(job.result),
        "config.json": json.dumps(
            {
                "job": dataclasses.asdict(job.config),
                "budgets": job.budgets,
                "experiment": job.result.config,
                "environment": environment(),
                "seconds": round(job.seconds, 1),
            },
            indent=1,
            default=list,
        ),
    }
    writers: dict[str, Union[str, Callable[[IO[bytes]], Any]]] = dict(files)
    for name, fig in _figures(job.diagnostics, test).items():
        writers[name] = functools.partial(fig.savefig, format="png", dpi=110)
    return write_set(out, writers, OUTPUTS)


def _figures(diag: Mapping[str, Mapping[str, Any]], test: SessionData) -> dict[str, Any]:
    if not diag:
        return {}
    label = {m: BACKBONES[m].__name__ for m in diag}
    curves = {}
    for m, d in diag.items():
        curves[f"{label[m]} stage 1"] = d["history"]["pretrain"]
        (rmtl_key,) = [
            k for k in d["history"] if k == "finetuned-rmtl" or k.startswith("finetuned-rmtl-")
        ]
        curves[f"RMTL-{label[m]} stage 3"] = d["history"][rmtl_key]  # its key names a fixed budget
    tasks = test.task_names
    return {
        "training_curves.png": plots.training_curves(curves),
        "critic_curves.png": plots.critic_curves(
            {label[m]: d["history"]["critics"]["epochs"] for m, d in diag.items()}, tasks
        ),
        "stage3_weights.png": plots.weight_distribution(
            {label[m]: d["weights"] for m, d in diag.items()}, tasks
        ),
        "q_by_position.png": plots.q_by_position(
            {label[m]: d["q"] for m, d in diag.items()}, test.position, tasks
        ),
    }


_RENAMED = {"JobConfig": RunConfig, "JobResult": RunResult, "run_job": run}


def __getattr__(name: str) -> Any:
    """The names of ``rmtl.job`` that changed (``JobConfig``, ``JobResult``, ``run_job``),
    with a DeprecationWarning."""
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(
            f"{name} is now {new.__module__}.{new.__name__} ({name} goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return new
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
