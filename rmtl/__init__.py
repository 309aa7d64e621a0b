"""rmtl: Multi-Task Recommendations with Reinforcement Learning, with a C core."""
import os as _os

try:
    from . import _core  # noqa: F401
except ImportError as _e:  # the source tree shadows the installed package
    raise ImportError(
        f"rmtl's C extension is not built in {_os.path.dirname(__file__)}: this is probably the "
        "source checkout shadowing the installed package. Run from another directory, use the "
        "`rmtl` command, or build in place with `pip install -e .`") from _e
from . import datasets, metrics, models
from .backend import blas_info, get_num_threads, set_gemm_backend, set_num_threads
from ._io import CorruptFileError
from .data import SessionData
from .context import session_context, with_context
from .metrics import evaluate
from .models import load, save
from .train import History, NonFiniteLossError, Trainer
from .critic import Critic
from .env import SessionEnv, VecSessionEnv
from .replay import ReplayBuffer, collect
from .agent import RMTL
from .experiments import experiment

__version__ = "0.1.0"
__all__ = ["SessionData", "session_context", "with_context", "Trainer", "History", "evaluate", "save", "load", "blas_info",
           "set_gemm_backend", "set_num_threads", "get_num_threads", "metrics", "models",
           "Critic", "RMTL", "experiment", "datasets",
           "SessionEnv", "VecSessionEnv", "ReplayBuffer", "collect", "CorruptFileError", "NonFiniteLossError"]
