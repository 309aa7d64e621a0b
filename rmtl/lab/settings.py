"""The settings of a run, shared by ``rmtl run`` and ``rmtl sweep``: :class:`RunConfig` (every
value checked once, presets, the budgets each stage runs), reading them from TOML, loading
the run's dataset, and the versions that decide its numbers."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import numpy as np
import scipy

from .. import __version__
from ..backend import blas_info
from ..balancers import names as balancer_names
from ..config import COUNT, RMTLConfig
from ..context import CONTEXT_MODES
from ..data import SessionData
from ..datasets import load_kuairand, load_retailrocket, synthetic
from ..models import BACKBONES, check_compat
from ._ray import connect
from .executors import MAX_PROCESSES
from .graph import BUDGETS, CONTROLS

__all__ = [
    "RunConfig",
    "describe_budgets",
    "describe_gemm",
    "PRESETS",
    "DATASETS",
    "AUTO_MIN_STEPS",
    "load_config",
    "config_from_table",
    "read_toml",
    "load_dataset",
    "environment",
]

_REF = RMTLConfig()

DATASETS = ("synthetic", "retailrocket", "kuairand")

# quick: sized for a few minutes on 2 cores (small widths, few critic epochs, ~72k rows); 5
# seeds, because with 3 the default run's smallest detectable critic effect (80% power at
# 0.05 / 12) was 0.0009-0.0014 click AUC, above the 0.001 the table should resolve
# (benchmarks/RESULTS.md, issue 29); paper: the reference hyperparameters of the authors' code
# (the defaults of the backbones and of RMTLConfig) and the default data size.
# the fewest Adam steps of stage 1 (training from scratch) when neither --min-steps nor
# --epochs is given. Measured on 2,000 synthetic users (9 steps per epoch, quick widths, 12
# epochs, early stopping on AUC): MMoE (2 of 2 seeds), SingleTask and SharedBottom (1 of 2)
# stopped on their initial plateau, uncalibrated (test click AUC 0.50-0.53); MMoE with at
# least 500 steps calibrated in both seeds (benchmarks/RESULTS.md, issue 12). Stage 3 starts
# from a trained model and never gets a floor: there it forced 56 epochs and over-trained
# every arm (issue 29). An explicit --epochs turns the automatic floor off.
AUTO_MIN_STEPS = 500
# the fields RunConfig shares with RMTLConfig (checked by building it), and those of them
# resolving fills in
_AGENT_FIELDS = (
    "lam",
    "gamma",
    "epochs",
    "finetune_epochs",
    "critic_epochs",
    "min_steps",
    "early_stopping",
    "init_output_bias",
)
_PRESET_FILLED = ("epochs", "critic_epochs", "min_steps", "early_stopping")

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "backbone": {
            "embed_dim": 16,
            "bottom_dims": (64, 32),
            "tower_dims": (32, 16),
            "dropout": 0.2,
        },
        "rmtl": {
            "critic_bottom_dims": (64, 32),
            "critic_tower_dims": (32, 16),
            "critic_epochs": 4,
            "epochs": 12,
            "patience": 2,
        },
        "n_users": 5000,
        "seeds": 5,
    },
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
    rows) and, per name of ``balancers`` (:mod:`rmtl.balancers`; ``"all"``), a row trained
    from scratch with that loss balancer and a Continued control with it, trained with the
    stage-3 ``budget`` (``matched``: as many epochs as RMTL kept in
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
    same settings; the executor may differ, the records do not depend on it): every job saves
    its stages there and a rerun (or a job Ray retries) resumes from the last finished stage;
    on a cluster it must be storage every node sees.
    ``processes`` runs the experiment's jobs in that many local processes; ``ray`` on a Ray
    cluster (True: the one ``ray.init()`` finds or a new local one; a string: its address);
    neither: one after another in this process.

    Parameters
    ----------
    dataset : {"synthetic", "retailrocket", "kuairand"}, default "synthetic"
        The dataset.
    data : str, optional
        A prepared ``.npz`` file, or for a real dataset a directory of its raw files (None:
        synthetic data is generated).
    preset : {"quick", "paper"}, default "quick"
        The network sizes, epochs, users and seeds the fields left None take.
    models : tuple of str, default ("singletask", "sharedbottom", "esmm", "mmoe", "ple")
        The backbones trained as baselines.
    rmtl_models : tuple of str, default ("esmm", "mmoe", "ple")
        The backbones (of ``models``) that also go through stages 2 and 3.
    seeds : int, optional
        Seeds per backbone.
    lam, gamma : float
        RMTL's weight of the critic value in the loss weights and its discount (the
        :class:`rmtl.RMTLConfig` defaults).
    epochs, finetune_epochs, critic_epochs : int, optional
        Most epochs of stage 1, stage 3 and the critics' training.
    min_steps : int, optional
        The fewest Adam steps of stage 1.
    early_stopping : {"logloss", "auc"}, optional
        The validation score stages 1 and 3 stop on.
    budget : {"matched", "fixed"}, default "matched"
        The stage-3 budget.
    controls : tuple of str, default ("continued", "static", "permuted")
        The controls of the critic effect.
    balancers : tuple of str, default ()
        Loss balancers (``("all",)``: every one).
    init_output_bias : {"prior"}, optional
        ``"prior"`` starts the outputs at the training label rates.
    compat : {"authors"}, optional
        The authors' code's behaviour.
    context : {"critic", "backbone", "both"}, optional
        Where every row's session context goes.
    n_users : int, optional
        Users of the synthetic data.
    data_seed : int, default 0
        Seed of the synthetic data.
    out : str, optional
        Directory the outputs are written to (None: none written).
    resume : str, optional
        The run's checkpoint directory.
    progress : bool, default True
        Whether to show progress bars.
    processes : int, optional
        Local worker processes.
    ray : bool or str, optional
        Run on a Ray cluster (True: the one ``ray.init()`` finds or a new local one; a string:
        its address).
    """

    dataset: str = "synthetic"
    data: Optional[str] = None
    preset: str = "quick"
    models: tuple[str, ...] = ("singletask", "sharedbottom", "esmm", "mmoe", "ple")
    rmtl_models: tuple[str, ...] = ("esmm", "mmoe", "ple")
    seeds: Optional[int] = None
    lam: float = _REF.lam
    gamma: float = _REF.gamma
    epochs: Optional[int] = None
    finetune_epochs: Optional[int] = None
    critic_epochs: Optional[int] = None
    min_steps: Optional[int] = None
    early_stopping: Optional[str] = None
    budget: str = "matched"
    controls: tuple[str, ...] = CONTROLS
    balancers: tuple[str, ...] = ()
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

    def resolved(self) -> RunConfig:
        """A copy with preset defaults filled in and every value checked: the run's own here,
        the agents' (``lam``, ``gamma``, the epochs, ...) by building :meth:`rmtl_config`.

        Returns
        -------
        RunConfig
            The resolved copy (this config is left as it was).

        Raises
        ------
        TypeError
            When a field's value is not of its type (e.g. ``seeds`` not an integer), naming
            the first such field.
        ValueError
            Naming the field: when ``preset`` or ``dataset`` is unknown, ``models`` or
            ``rmtl_models`` names an unknown backbone, ``models`` is empty, ``seeds`` or
            ``n_users`` (given or the preset's) is below 1, ``budget`` is neither
            ``"matched"`` nor ``"fixed"``, ``balancers`` names an unknown balancer or one
            twice, ``controls`` an unknown control or one twice, ``compat`` is neither None
            nor ``"authors"`` or, with ``"authors"``, a model is not the authors' module,
            ``context`` is unknown, ``processes`` is outside 1 to ``MAX_PROCESSES`` or given
            with ``ray``, or a dataset other than ``synthetic`` comes without ``data``; also
            when an agent setting (``lam``, ``gamma``, the epochs, ...) is out of its range,
            as :class:`rmtl.RMTLConfig` reports it.
        FileNotFoundError
            When ``data`` is given but no such file or directory exists.
        """
        _check_types({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if self.preset not in PRESETS:
            raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {list(DATASETS)}, got {self.dataset!r}")
        p = PRESETS[self.preset]
        c = dataclasses.replace(
            self,
            models=tuple(m.lower() for m in self.models),
            rmtl_models=tuple(m.lower() for m in self.rmtl_models),
        )
        unknown = sorted(set(c.models + c.rmtl_models) - set(BACKBONES))
        if unknown:
            raise ValueError(
                f"models: unknown backbone(s) {unknown}; choose from {sorted(BACKBONES)}"
            )
        if not c.models:
            raise ValueError("models: expected at least one backbone")
        c.models = c.models + tuple(m for m in c.rmtl_models if m not in c.models)
        c.seeds = COUNT.check("seeds", p["seeds"] if c.seeds is None else c.seeds)
        c.n_users = COUNT.check("n_users", p["n_users"] if c.n_users is None else c.n_users)
        default = {"epochs": _REF.epochs, "critic_epochs": _REF.critic_epochs, **p["rmtl"]}
        if c.epochs is None:
            c.epochs = default["epochs"]
        if c.critic_epochs is None:
            c.critic_epochs = default["critic_epochs"]
        authors = c.compat == "authors"  # their setting: no floor, stopping on the mean AUC
        if c.min_steps is None:
            c.min_steps = 0 if self.epochs is not None or authors else AUTO_MIN_STEPS
        if c.early_stopping is None:
            c.early_stopping = "auc" if authors else _REF.early_stopping
        agents = c.rmtl_config()  # the one check of the agents' values
        for name in _AGENT_FIELDS:  # as the config holds them (numbers as int or float)
            setattr(c, name, getattr(agents, name))
        if c.budget not in BUDGETS:
            raise ValueError(f"budget: expected one of {list(BUDGETS)}, got {c.budget!r}")
        every = c.balancers == "all" or tuple(c.balancers) == ("all",)  # any sequence
        c.balancers = tuple(balancer_names() if every else c.balancers)
        bad = [b for b in c.balancers if b not in balancer_names()]
        if bad or len(set(c.balancers)) != len(c.balancers):
            raise ValueError(
                f"balancers: expected distinct names from {balancer_names()} or 'all', got "
                f"{list(c.balancers)}"
            )
        c.controls = tuple(c.controls)
        bad = [x for x in c.controls if x not in CONTROLS]
        if bad or len(set(c.controls)) != len(c.controls):
            raise ValueError(
                f"controls: expected distinct names from {list(CONTROLS)}, got {list(c.controls)}"
            )
        for name in c.models:
            check_compat(name, c.compat)
        if c.context not in CONTEXT_MODES:
            raise ValueError(f"context: expected one of {list(CONTEXT_MODES)}, got {c.context!r}")
        if c.processes is not None and (not 1 <= c.processes <= MAX_PROCESSES or c.ray):
            raise ValueError(
                f"processes: expected 1 to {MAX_PROCESSES} processes and no ray, got "
                f"processes={c.processes}, ray={c.ray!r}"
            )
        if c.dataset != "synthetic" and c.data is None:
            raise ValueError(
                f"data: --dataset {c.dataset} needs --data "
                "(a prepared .npz file or the raw directory)"
            )
        if c.data is not None and not os.path.exists(c.data):
            raise FileNotFoundError(f"data: no such file or directory: {c.data}")
        return c

    def rmtl_config(self) -> RMTLConfig:
        """The agents' settings as one :class:`rmtl.RMTLConfig`: the preset's, then the
        run's (``lam``, ``gamma``, ``epochs``, ``finetune_epochs``, ``critic_epochs``,
        ``min_steps``, ``early_stopping``, ``init_output_bias``; with ``compat="authors"``
        the authors' switches where neither sets them). Its construction is the one check of
        those values, built once for them (:meth:`resolved` builds it; an unresolved config
        is resolved first).

        Returns
        -------
        RMTLConfig
        """
        if self.preset not in PRESETS or any(getattr(self, k) is None for k in _PRESET_FILLED):
            return self.resolved().rmtl_config()
        values = {**PRESETS[self.preset]["rmtl"], **{k: getattr(self, k) for k in _AGENT_FIELDS}}
        built = self.__dict__.get("_rmtl_config")  # not a field: asdict and == leave it out
        if built is None or built[0] != (values, self.compat):
            built = (values, self.compat), RMTLConfig.from_kwargs(values, self.compat)
            self.__dict__["_rmtl_config"] = built
        return built[1]

    def rmtl_kwargs(self) -> dict[str, Any]:
        """Deprecated: the agents' settings (:meth:`rmtl_config`) as keyword arguments of
        :class:`rmtl.RMTL`, with ``compat``; goes in the next release.

        Returns
        -------
        dict
            :meth:`rmtl_config` as a dict, plus ``"compat"``.
        """
        warnings.warn(
            "RunConfig.rmtl_kwargs() is now RunConfig.rmtl_config(), an rmtl.RMTLConfig "
            "(rmtl_kwargs goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return {**self.rmtl_config().to_dict(), "compat": self.compat}

    def executor(self) -> Any:
        """The ``executor`` argument of :func:`rmtl.experiment`; with ``ray``, connects first.

        Returns
        -------
        str or int
            ``"ray"``, or the number of local processes (``processes``).
        """
        if self.ray:
            connect(None if self.ray is True else self.ray)
            return "ray"
        return self.processes

    def budgets(self, train_rows: int) -> dict[str, dict[str, Any]]:
        """What each stage runs on ``train_rows`` training rows (a resolved config): stage 1's
        epoch limit, step floor and the epochs the floor makes; stage 2's epochs; stage 3's
        epoch limit and how its arms are budgeted.

        Parameters
        ----------
        train_rows : int
            Rows of the training split.

        Returns
        -------
        dict
            ``stage1``, ``stage2`` and ``stage3``, each a dict of its budget's settings.
        """
        batch = self.rmtl_config().batch_size
        per_epoch = -(-train_rows // batch)
        stage3 = self.epochs if self.finetune_epochs is None else self.finetune_epochs
        return {
            "stage1": {
                "epochs": self.epochs,
                "min_steps": self.min_steps,
                "steps_per_epoch": per_epoch,
                "most_epochs": max(self.epochs, -(-self.min_steps // per_epoch)),
                "early_stopping": self.early_stopping,
            },
            "stage2": {"critic_epochs": self.critic_epochs},
            "stage3": {
                "epochs": stage3,
                "steps_per_epoch": per_epoch,
                "budget": self.budget,
                "early_stopping": self.early_stopping if self.budget == "matched" else None,
            },
        }


def describe_budgets(b: Mapping[str, Mapping[str, Any]]) -> str:
    """:meth:`RunConfig.budgets` in one line, for the run's header.

    Parameters
    ----------
    b : mapping
        What :meth:`RunConfig.budgets` returns.

    Returns
    -------
    str
    """
    s1, s3 = b["stage1"], b["stage3"]
    floor = (
        f", a {s1['min_steps']}-step floor raising them to {s1['most_epochs']}"
        if s1["most_epochs"] > s1["epochs"]
        else ""
    )
    arms = (
        f"RMTL up to {s3['epochs']} epochs stopping on validation {s3['early_stopping']}, "
        "the controls exactly RMTL's kept epochs"
        if s3["budget"] == "matched"
        else f"every arm exactly {s3['epochs']} epochs"
    )
    return (
        f"stage 1: up to {s1['epochs']} epochs of {s1['steps_per_epoch']} steps{floor}, "
        f"stopping on validation {s1['early_stopping']}; "
        f"stage 2: {b['stage2']['critic_epochs']} critic epochs; "
        f"stage 3: {arms}"
    )


def read_toml(path: str) -> dict[str, Any]:
    """A TOML file as a dict; a syntax error is a ValueError naming the file.

    Parameters
    ----------
    path : str
        The file.

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        When the file is not valid TOML or not UTF-8 text, naming it.
    """
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML ({e})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not valid TOML (not UTF-8 text: {e})") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_names(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


# what each RunConfig field holds, as (test, what is expected): checked where a table enters
# (config_from_table, naming the file) and by RunConfig.resolved, before any value is used
_OPTIONAL_TEXT = (lambda v: v is None or isinstance(v, str), "a string")
_OPTIONAL_INT = (lambda v: v is None or _is_int(v), "an integer")
_FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dataset": (lambda v: isinstance(v, str), "a string"),
    "data": _OPTIONAL_TEXT,
    "preset": (lambda v: isinstance(v, str), "a string"),
    "models": (_is_names, 'a list of backbone names, e.g. ["esmm", "mmoe"]'),
    "rmtl_models": (_is_names, 'a list of backbone names, e.g. ["esmm"]'),
    "seeds": _OPTIONAL_INT,
    "lam": (_is_number, "a number"),
    "gamma": (_is_number, "a number"),
    "epochs": _OPTIONAL_INT,
    "finetune_epochs": _OPTIONAL_INT,
    "critic_epochs": _OPTIONAL_INT,
    "min_steps": _OPTIONAL_INT,
    "early_stopping": _OPTIONAL_TEXT,
    "budget": (lambda v: isinstance(v, str), "a string"),
    "controls": (_is_names, 'a list of control names, e.g. ["continued"]'),
    "balancers": (
        lambda v: v == "all" or _is_names(v),
        'a list of balancer names, e.g. ["uw"], or "all"',
    ),
    "init_output_bias": _OPTIONAL_TEXT,
    "compat": _OPTIONAL_TEXT,
    "context": _OPTIONAL_TEXT,
    "n_users": _OPTIONAL_INT,
    "data_seed": (_is_int, "an integer"),
    "out": (_OPTIONAL_TEXT[0], "a directory path (a string)"),
    "resume": (_OPTIONAL_TEXT[0], "a directory path (a string)"),
    "progress": (lambda v: isinstance(v, bool), "true or false"),
    "processes": (_OPTIONAL_INT[0], "a number of processes (an integer)"),
    "ray": (lambda v: v is None or isinstance(v, (bool, str)), "true or a cluster address"),
}


def _check_types(values: Mapping[str, Any], where: str = "") -> None:
    """TypeError naming the first key of ``values`` (RunConfig fields) whose value is not of
    the field's type, what it expects and (``where``, e.g. the file) where it came from."""
    for key, value in values.items():
        test, expected = _FIELD_TYPES[key]
        if not test(value):
            raise TypeError(f"{where}{key}: expected {expected}, got {value!r}")


def load_config(path: str) -> dict[str, Any]:
    """The [run] table (or the top level) of a TOML file as RunConfig keyword arguments;
    unknown keys are an error naming them.

    Parameters
    ----------
    path : str
        The TOML file.

    Returns
    -------
    dict
        Keyword arguments of :class:`RunConfig`.
    """
    raw = read_toml(path)
    return config_from_table(raw.get("run", raw), path)


def config_from_table(table: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A TOML table as RunConfig keyword arguments; an unknown key or a value of the wrong type
    is a ValueError naming the file, the key and what it expects. The key ``jobs`` (renamed
    ``processes``) still works, with a DeprecationWarning.

    Parameters
    ----------
    table : mapping
        The TOML table (a ValueError if it is not one).
    path : str
        The file it was read from, for the error messages.

    Returns
    -------
    dict
        Keyword arguments of :class:`RunConfig` (lists as tuples).

    Raises
    ------
    ValueError
        Naming ``path``: when ``table`` is not a mapping, holds a key that is no field of
        :class:`RunConfig` (``jobs`` is one only without ``processes``), or a value not of
        its field's type, naming the key and what it expects.
    """
    if not isinstance(table, Mapping):
        raise ValueError(f"{path}: [run]: expected a table of settings, got {table!r}")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    renamed = "jobs" in table and "processes" not in table
    unknown = sorted(set(table) - known - ({"jobs"} if renamed else set()))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    for key, value in table.items():  # named as written in the file
        test, expected = _FIELD_TYPES["processes" if key == "jobs" else key]
        if not test(value):
            raise ValueError(f"{path}: {key}: expected {expected}, got {value!r}")
    if renamed:
        warnings.warn(
            f"{path}: the key 'jobs' is now 'processes' ('jobs' goes in the next release)",
            DeprecationWarning,
            stacklevel=3,
        )
        table = {("processes" if k == "jobs" else k): v for k, v in table.items()}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}


def load_dataset(c: RunConfig) -> SessionData:
    """The job's dataset: generated, a prepared .npz file, or a raw directory.

    Parameters
    ----------
    c : RunConfig
        The run (its ``dataset``, ``data``, ``n_users`` and ``data_seed``).

    Returns
    -------
    SessionData
    """
    if c.dataset == "synthetic":
        if c.data is not None:
            return SessionData.load(c.data)
        return synthetic("retailrocket", n_users=c.n_users, seed=c.data_seed)
    if os.path.isfile(c.data):
        return SessionData.load(c.data)
    return load_retailrocket(c.data) if c.dataset == "retailrocket" else load_kuairand(c.data)


def describe_gemm(info: Mapping[str, Any]) -> str:
    """:func:`rmtl.blas_info` in one line, for the run's header: the path the core's matrix
    products take and, for the built-in kernel, why.

    Parameters
    ----------
    info : mapping
        What :func:`rmtl.blas_info` returns.

    Returns
    -------
    str
    """
    if info["backend"] == "blas":
        split = ", one thread per call on rmtl's pool" if info["blas_per_thread"] else ""
        return f"SciPy's BLAS sgemm{split}"
    if info["forced_builtin"]:
        why = "RMTL_BLAS=builtin"
    elif not info["blas_available"]:
        why = "SciPy's sgemm could not be loaded"
    elif info["address_space_limited"]:
        why = "the default under an address-space limit (ulimit -v), where OpenBLAS can hang"
    else:
        why = "set with rmtl.set_gemm_backend"
    return f"rmtl's built-in kernel ({why})"


def environment() -> dict[str, str]:
    """Versions that decide the numbers: Python, rmtl, NumPy, SciPy, the BLAS in use.

    Returns
    -------
    dict of str to str
        ``python``, ``platform``, ``rmtl``, ``numpy``, ``scipy`` and ``blas``
        (:func:`rmtl.blas_info` as JSON).
    """
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "rmtl": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": json.dumps(blas_info()),
    }
