"""The main job: the paper's experiment end to end, as ``python -m rmtl run`` runs it.

Baselines and RMTL variants over several seeds on one dataset, a paper-style table, and
(with an output directory) the table files, the full configuration and diagnostic plots.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import scipy

from .. import __version__, _progress
from .._io import atomic_write, write_json, write_text
from ..backend import blas_info
from ..config import CHOICES, COUNT, RMTLConfig, check
from ..context import CONTEXT_MODES, with_context
from ..data import SessionData
from ..datasets import load_kuairand, load_retailrocket, synthetic
from ..models import BACKBONES, check_compat
from . import plots, report
from ._ray import connect
from .experiment import ExperimentResult, experiment
from .graph import BUDGETS, CONTROLS

__all__ = ["RunConfig", "describe_budgets", "PRESETS", "load_config", "config_from_table", "run", "load_dataset"]

_REF = RMTLConfig()

DATASETS = ("synthetic", "retailrocket", "kuairand")

# quick: sized for a few minutes on 2 cores (small widths, few critic epochs, ~72k rows); 5
# seeds, because with 3 the default run's smallest detectable critic effect (80% power at
# 0.05 / 12) was 0.0009-0.0014 click AUC, above the 0.001 the table should resolve
# (benchmarks/RESULTS.md, issue 29); paper: the reference hyperparameters of SPEC sections 4
# and 5 (the defaults of the backbones and of RMTLConfig) and the default data size.
# the fewest Adam steps of stage 1 (training from scratch) when neither --min-steps nor
# --epochs is given. Measured on 2,000 synthetic users (9 steps per epoch, quick widths, 12
# epochs, early stopping on AUC): MMoE (2 of 2 seeds), SingleTask and SharedBottom (1 of 2)
# stopped on their initial plateau, uncalibrated (test click AUC 0.50-0.53); MMoE with at
# least 500 steps calibrated in both seeds (benchmarks/RESULTS.md, issue 12). Stage 3 starts
# from a trained model and never gets a floor: there it forced 56 epochs and over-trained
# every arm (issue 29). An explicit --epochs turns the automatic floor off.
AUTO_MIN_STEPS = 500

PRESETS: Dict[str, Dict[str, Any]] = {
    "quick": {"backbone": {"embed_dim": 16, "bottom_dims": (64, 32), "tower_dims": (32, 16), "dropout": 0.2},
              "rmtl": {"critic_bottom_dims": (64, 32), "critic_tower_dims": (32, 16), "critic_epochs": 4,
                       "epochs": 12, "patience": 2},
              "n_users": 5000, "seeds": 5},
    "paper": {"backbone": {}, "rmtl": {}, "n_users": 14000, "seeds": 5},
}


@dataclasses.dataclass
class RunConfig:
    """Everything that defines a run; ``--config FILE.toml`` keys are these field names.

    ``epochs``, ``critic_epochs``, ``n_users`` and ``seeds`` default to the preset's
    values when None; ``finetune_epochs`` (stage 3's most epochs) to ``epochs``. ``models``
    are trained as baselines; ``rmtl_models`` (a subset of ``models``) also get stages 2 and
    3 and the ``controls`` of the critic effect (``continued``: every weight one; ``static``:
    each task's weight fixed at RMTL's mean; ``permuted``: RMTL's weights shuffled across
    rows), trained with the stage-3 ``budget`` (``matched``: as many epochs as RMTL kept in
    the same seed; ``fixed``: exactly ``finetune_epochs`` for every arm, see
    :func:`rmtl.experiment`). ``early_stopping`` (``logloss`` or ``auc``) is the validation
    score stages 1 and 3 stop on (default ``logloss``; ``auc`` with ``compat="authors"``).
    ``min_steps``: the fewest Adam steps of stage 1, in whole epochs, so small data gets
    enough training to calibrate (default ``AUTO_MIN_STEPS`` unless ``epochs`` is given or
    ``compat="authors"``, then 0: an explicit epoch budget is never raised silently).
    ``init_output_bias="prior"`` starts the outputs at the training label rates (a deviation
    from the authors; None, their setting, by default). ``compat="authors"`` switches RMTL to
    the authors' code's behaviour where rmtl differs (every model must then be the authors'
    module: not ``ple_paper``). See :class:`rmtl.RMTL`. ``context``
    (``"critic"``, ``"backbone"``, ``"both"`` or None) adds every row's session context to the
    critics' state, the backbones' input or both (:func:`rmtl.with_context`). ``resume`` is
    the run's checkpoint directory (created if missing, continued if it holds a run of the
    same settings): every job saves its stages there and a rerun (or a job Ray retries)
    resumes from the last finished stage; on a cluster it must be storage every node sees.
    ``processes`` runs the experiment's jobs in that many local processes; ``ray`` on a Ray
    cluster (True: the one ``ray.init()`` finds or a new local one; a string: its address);
    neither: one after another in this process.
    """

    dataset: str = "synthetic"
    data: Optional[str] = None
    preset: str = "quick"
    models: Tuple[str, ...] = ("singletask", "sharedbottom", "esmm", "mmoe", "ple")
    rmtl_models: Tuple[str, ...] = ("esmm", "mmoe", "ple")
    seeds: Optional[int] = None
    lam: float = _REF.lam
    gamma: float = _REF.gamma
    epochs: Optional[int] = None
    finetune_epochs: Optional[int] = None
    critic_epochs: Optional[int] = None
    min_steps: Optional[int] = None
    early_stopping: Optional[str] = None
    budget: str = "matched"
    controls: Tuple[str, ...] = CONTROLS
    init_output_bias: Optional[str] = None
    compat: Optional[str] = None
    context: Optional[str] = None
    n_users: Optional[int] = None
    data_seed: int = 0
    out: Optional[str] = None
    resume: Optional[str] = None
    progress: bool = True
    processes: Optional[int] = None
    ray: Union[None, bool, str] = None

    def resolved(self) -> "RunConfig":
        """A copy with preset defaults filled in and every value checked."""
        if self.preset not in PRESETS:
            raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {list(DATASETS)}, got {self.dataset!r}")
        p = PRESETS[self.preset]
        c = dataclasses.replace(self, models=tuple(m.lower() for m in self.models),
                                rmtl_models=tuple(m.lower() for m in self.rmtl_models))
        unknown = sorted(set(c.models + c.rmtl_models) - set(BACKBONES))
        if unknown:
            raise ValueError(f"models: unknown backbone(s) {unknown}; choose from {sorted(BACKBONES)}")
        if not c.models:
            raise ValueError("models: expected at least one backbone")
        c.models = c.models + tuple(m for m in c.rmtl_models if m not in c.models)
        c.seeds = COUNT.check("seeds", p["seeds"] if c.seeds is None else c.seeds)
        c.n_users = COUNT.check("n_users", p["n_users"] if c.n_users is None else c.n_users)
        default = {"epochs": _REF.epochs, "critic_epochs": _REF.critic_epochs, **p["rmtl"]}
        c.epochs = check("epochs", default["epochs"] if c.epochs is None else c.epochs)
        c.critic_epochs = check("critic_epochs", default["critic_epochs"] if c.critic_epochs is None
                                else c.critic_epochs)
        authors = c.compat == "authors"  # their setting: no floor, stopping on the mean AUC
        if c.min_steps is None:
            c.min_steps = 0 if self.epochs is not None or authors else AUTO_MIN_STEPS
        if c.early_stopping is None:
            c.early_stopping = "auc" if authors else _REF.early_stopping
        c.min_steps = check("min_steps", c.min_steps)
        if c.finetune_epochs is not None:
            c.finetune_epochs = check("finetune_epochs", c.finetune_epochs)
        if c.early_stopping not in CHOICES["early_stopping"]:
            raise ValueError(f"early_stopping: expected one of {list(CHOICES['early_stopping'])}, "
                             f"got {c.early_stopping!r}")
        if c.budget not in BUDGETS:
            raise ValueError(f"budget: expected one of {list(BUDGETS)}, got {c.budget!r}")
        c.controls = tuple(c.controls)
        bad = [x for x in c.controls if x not in CONTROLS]
        if bad or len(set(c.controls)) != len(c.controls):
            raise ValueError(f"controls: expected distinct names from {list(CONTROLS)}, got {list(c.controls)}")
        for name in c.models:
            check_compat(name, c.compat)
        if c.init_output_bias not in CHOICES["init_output_bias"]:
            raise ValueError(f"init_output_bias: expected 'prior' or None, got {c.init_output_bias!r}")
        if c.context not in CONTEXT_MODES:
            raise ValueError(f"context: expected one of {list(CONTEXT_MODES)}, got {c.context!r}")
        c.lam, c.gamma = check("lam", c.lam), check("gamma", c.gamma)
        if c.processes is not None and (c.processes < 1 or c.ray):
            raise ValueError(f"processes: expected a positive number of processes and no ray, got "
                             f"processes={c.processes}, ray={c.ray!r}")
        if c.dataset != "synthetic" and c.data is None:
            raise ValueError(f"data: --dataset {c.dataset} needs --data (a prepared .npz file or the raw directory)")
        if c.data is not None and not os.path.exists(c.data):
            raise FileNotFoundError(f"data: no such file or directory: {c.data}")
        return c

    def executor(self) -> Any:
        """The ``executor`` argument of :func:`rmtl.experiment`; with ``ray``, connects first."""
        if self.ray:
            connect(None if self.ray is True else self.ray)
            return "ray"
        return self.processes

    def rmtl_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for :class:`rmtl.RMTL` (on top of the preset's)."""
        kw = {k: v for k, v in PRESETS[self.preset]["rmtl"].items() if k != "epochs"}
        kw.update(lam=self.lam, gamma=self.gamma, epochs=self.epochs, finetune_epochs=self.finetune_epochs,
                  critic_epochs=self.critic_epochs, min_steps=self.min_steps, early_stopping=self.early_stopping,
                  init_output_bias=self.init_output_bias, compat=self.compat)
        return kw

    def budgets(self, train_rows: int) -> Dict[str, Dict[str, Any]]:
        """What each stage runs on ``train_rows`` training rows (a resolved config): stage 1's
        epoch limit, step floor and the epochs the floor makes; stage 2's epochs; stage 3's
        epoch limit and how its arms are budgeted."""
        batch = self.rmtl_kwargs().get("batch_size") or _REF.batch_size
        per_epoch = -(-train_rows // batch)
        stage3 = self.epochs if self.finetune_epochs is None else self.finetune_epochs
        return {
            "stage1": {"epochs": self.epochs, "min_steps": self.min_steps, "steps_per_epoch": per_epoch,
                       "most_epochs": max(self.epochs, -(-self.min_steps // per_epoch)),
                       "early_stopping": self.early_stopping},
            "stage2": {"critic_epochs": self.critic_epochs},
            "stage3": {"epochs": stage3, "steps_per_epoch": per_epoch, "budget": self.budget,
                       "early_stopping": self.early_stopping if self.budget == "matched" else None}}



def describe_budgets(b: Mapping[str, Mapping[str, Any]]) -> str:
    """:meth:`RunConfig.budgets` in one line, for the run's header."""
    s1, s3 = b["stage1"], b["stage3"]
    floor = (f", a {s1['min_steps']}-step floor raising them to {s1['most_epochs']}"
             if s1["most_epochs"] > s1["epochs"] else "")
    arms = (f"RMTL up to {s3['epochs']} epochs stopping on validation {s3['early_stopping']}, the controls "
            "exactly RMTL's kept epochs" if s3["budget"] == "matched" else f"every arm exactly {s3['epochs']} epochs")
    return (f"stage 1: up to {s1['epochs']} epochs of {s1['steps_per_epoch']} steps{floor}, stopping on "
            f"validation {s1['early_stopping']}; stage 2: {b['stage2']['critic_epochs']} critic epochs; "
            f"stage 3: {arms}")


def read_toml(path: str) -> Dict[str, Any]:
    """A TOML file as a dict."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as f:
        return tomllib.load(f)


def load_config(path: str) -> Dict[str, Any]:
    """The [run] table (or the top level) of a TOML file as RunConfig keyword arguments;
    unknown keys are an error naming them."""
    raw = read_toml(path)
    return config_from_table(raw.get("run", raw), path)


def config_from_table(table: Mapping[str, Any], path: str) -> Dict[str, Any]:
    """A TOML table as RunConfig keyword arguments; unknown keys are an error naming them.
    The key ``jobs`` (renamed ``processes``) still works, with a DeprecationWarning."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    if "jobs" in table and "processes" not in table:
        warnings.warn(f"{path}: the key 'jobs' is now 'processes' ('jobs' goes in the next release)",
                      DeprecationWarning, stacklevel=3)
        table = {("processes" if k == "jobs" else k): v for k, v in table.items()}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}


def load_dataset(c: RunConfig) -> SessionData:
    """The job's dataset: generated, a prepared .npz file, or a raw directory."""
    if c.dataset == "synthetic":
        if c.data is not None:
            return SessionData.load(c.data)
        return synthetic("retailrocket", n_users=c.n_users, seed=c.data_seed)
    if os.path.isfile(c.data):
        return SessionData.load(c.data)
    return load_retailrocket(c.data) if c.dataset == "retailrocket" else load_kuairand(c.data)


@dataclasses.dataclass
class RunResult:
    """The experiment's result, the resolved config, diagnostics of the first seed, the wall
    time and what each stage's budget was (:meth:`RunConfig.budgets`)."""

    result: ExperimentResult
    config: RunConfig
    diagnostics: Dict[str, Dict[str, Any]]
    seconds: float
    budgets: Dict[str, Dict[str, Any]]

    def table(self) -> str:
        """The paper-style Markdown table."""
        return report.to_markdown(self.result)


def run(config: RunConfig) -> RunResult:
    """Run the experiment of ``config`` (see :class:`RunConfig`); with ``config.out`` also
    write the table (Markdown, CSV, JSON), ``config.json`` and the plots there."""
    c = config.resolved()
    if c.out is not None:
        check_out(c.out)
    if c.resume is not None:
        claim_checkpoint_dir(c)
    t0 = time.perf_counter()
    data = load_dataset(c)
    train, valid, test = (with_context(part, c.context) for part in data.split((0.6, 0.2, 0.2)))
    diagnostics: Dict[str, Dict[str, Any]] = {}
    # one bar over (seed, backbone) runs: per-epoch bars of ~70 runs would flood the terminal
    bar = _progress.bar(c.progress, total=c.seeds * len(c.models), desc="rmtl run", unit="model")

    def observe(name: str, seed: int, agent: Any) -> None:
        bar.set_postfix_str(f"seed {seed} {name} done")
        bar.update(1)
        if seed != 0 or not agent.critics:
            return
        prob = agent.pretrained.predict(test.sparse, test.dense)
        diagnostics[name] = {"history": agent.history, "weights": agent.loss_weights(test, prob),
                             "q": agent.q_values(test, prob)}

    result = experiment(train, valid, test, backbones=c.models, rmtl_backbones=c.rmtl_models,
                        seeds=range(c.seeds), weightings=("rmtl", *c.controls), transfer=(),
                        backbone_kwargs=PRESETS[c.preset]["backbone"], rmtl_kwargs=c.rmtl_kwargs(),
                        on_agent=observe, executor=c.executor(), checkpoint_dir=c.resume, budget=c.budget)
    bar.close()
    job = RunResult(result, c, diagnostics, time.perf_counter() - t0, c.budgets(len(train)))
    if c.out is not None:
        write_outputs(job, test)
    return job


OUTPUTS = ("results.md", "results.csv", "results.json", "config.json", "training_curves.png",
           "critic_curves.png", "stage3_weights.png", "q_by_position.png")


def check_out(out: str) -> None:
    """Before any training: ``out`` must be (or become) a writable directory with nothing in
    the way of the files to write, and matplotlib must be there for the plots."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out: {out} exists and is not a directory; choose another path")
    blocked = [n for n in OUTPUTS if os.path.isdir(os.path.join(out, n))]
    if blocked:
        raise FileExistsError(f"--out: {os.path.join(out, blocked[0])} is a directory in the way of an output file")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("--out: the plots need matplotlib; pip install 'rmtl[plots]' (or leave out --out)") from None
    os.makedirs(out, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"--out: {out} is not writable")


def claim_checkpoint_dir(c: RunConfig) -> None:
    """Record the settings that decide the run in ``c.resume``/job.json, or refuse a
    directory that holds a run with other settings."""
    os.makedirs(c.resume, exist_ok=True)
    mine = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(c))).items()
            if k not in ("out", "resume", "progress")}
    path = os.path.join(c.resume, "job.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            theirs = json.load(f)
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            raise ValueError(f"--resume: {c.resume} holds a run with other settings ({', '.join(diff)}: "
                             f"{[theirs.get(k) for k in diff]} there); use the same settings or a new directory")
    else:
        write_json(path, mine)


def environment() -> Dict[str, str]:
    """Versions that decide the numbers: Python, rmtl, NumPy, SciPy, the BLAS in use."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "rmtl": __version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "blas": json.dumps(blas_info())}


def write_outputs(job: RunResult, test: SessionData) -> List[str]:
    """Write results.md (the table, then :func:`rmtl.lab.report.per_seed`), results.csv/.json,
    config.json and the PNG plots into ``job.config.out``; returns the paths written."""
    out = job.config.out
    os.makedirs(out, exist_ok=True)
    files = {"results.md": job.table() + "\n\n" + report.per_seed(job.result) + "\n",
             "results.csv": report.to_csv(job.result),
             "results.json": report.to_json(job.result),
             "config.json": json.dumps({"job": dataclasses.asdict(job.config), "budgets": job.budgets,
                                        "experiment": job.result.config,
                                        "environment": environment(), "seconds": round(job.seconds, 1)},
                                       indent=1, default=list)}
    written = []
    for name, text in files.items():
        path = os.path.join(out, name)
        write_text(path, text)
        written.append(path)
    figures = _figures(job.diagnostics, test)
    for name, fig in figures.items():
        path = os.path.join(out, name)
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
        written.append(path)
    return written


def _figures(diag: Mapping[str, Mapping[str, Any]], test: SessionData) -> Dict[str, Any]:
    if not diag:
        return {}
    label = {m: BACKBONES[m].__name__ for m in diag}
    curves = {}
    for m, d in diag.items():
        curves[f"{label[m]} stage 1"] = d["history"]["pretrain"]
        (rmtl_key,) = [k for k in d["history"] if k == "finetuned-rmtl" or k.startswith("finetuned-rmtl-")]
        curves[f"RMTL-{label[m]} stage 3"] = d["history"][rmtl_key]  # its key names a fixed budget
    tasks = test.task_names
    return {"training_curves.png": plots.training_curves(curves),
            "critic_curves.png": plots.critic_curves({label[m]: d["history"]["critics"]["epochs"]
                                                      for m, d in diag.items()}, tasks),
            "stage3_weights.png": plots.weight_distribution({label[m]: d["weights"] for m, d in diag.items()}, tasks),
            "q_by_position.png": plots.q_by_position({label[m]: d["q"] for m, d in diag.items()}, test.position,
                                                     tasks)}
