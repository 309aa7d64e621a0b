"""rmtl: Multi-Task Recommendations with Reinforcement Learning, with a C core."""

import importlib as _importlib
import logging as _logging
import os as _os

__version__ = "0.1.0"  # before the imports: modules of the package read it

try:
    from . import _core  # noqa: F401
except ImportError as _e:  # the source tree shadows the installed package
    raise ImportError(
        f"rmtl's C extension is not built in {_os.path.dirname(__file__)}: this is probably the "
        "source checkout shadowing the installed package. Run from another directory, use the "
        "`rmtl` command, or build in place with `pip install -e .`"
    ) from _e
from . import _moved, balancers, datasets, metrics, models
from ._io import CorruptFileError
from .agent import RMTL
from .backend import blas_info, get_num_threads, set_gemm_backend, set_num_threads
from .config import RMTLConfig
from .context import session_context, with_context
from .critic import Critic
from .data import SessionData
from .env import SessionEnv, VecSessionEnv
from .lab import ExperimentResult, experiment
from .metrics import evaluate
from .models import load, save
from .replay import ReplayBuffer, collect
from .train import History, NonFiniteLossError, Trainer

_moved.install()
# per-epoch lines are INFO records of "rmtl.*" loggers; shown only if the user configures
# logging (e.g. logging.basicConfig(level=logging.INFO))
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "SessionData",
    "session_context",
    "with_context",
    "Trainer",
    "History",
    "evaluate",
    "save",
    "load",
    "blas_info",
    "set_gemm_backend",
    "set_num_threads",
    "get_num_threads",
    "metrics",
    "models",
    "Critic",
    "RMTL",
    "RMTLConfig",
    "experiment",
    "ExperimentResult",
    "datasets",
    "balancers",
    "SessionEnv",
    "VecSessionEnv",
    "ReplayBuffer",
    "collect",
    "CorruptFileError",
    "NonFiniteLossError",
]


def __getattr__(name: str):
    """``rmtl.torch`` on first use (it imports torch, which ``import rmtl`` does not), and
    ``rmtl.experiments`` and the other moved modules (:mod:`rmtl._moved`), with a
    DeprecationWarning."""
    if name == "torch":
        return _importlib.import_module("rmtl.torch")
    old = f"rmtl.{name}"
    if old in _moved.MOVED:
        _moved.warn(old)
        return _importlib.import_module(_moved.MOVED[old])
    raise AttributeError(f"module 'rmtl' has no attribute {name!r}")
