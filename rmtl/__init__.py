"""rmtl: Multi-Task Recommendations with Reinforcement Learning, with a C core."""
import os as _os

# Our OpenMP loops alternate with BLAS calls that run on OpenBLAS's own threads; spinning
# OpenMP workers would steal the cores BLAS needs (measured: 2.5x slower training steps).
# Likewise OpenBLAS workers spin about 2^28 cycles (~0.1 s) after every product by default,
# taking a core from our OpenMP loops in between (measured: 2x slower steps on 2 cores);
# 4 is OpenBLAS's minimum. libgomp and OpenBLAS read these once, when they load with the core
# below (so the second only helps if scipy.linalg was not imported before rmtl): they are set
# for that moment only, and the process environment (seen by other libraries loaded later and
# by child processes) stays the user's. A user's own setting wins.
_LOAD_ENV = {"OMP_WAIT_POLICY": "passive", "OPENBLAS_THREAD_TIMEOUT": "4"}
_unset = [k for k in _LOAD_ENV if k not in _os.environ]
_os.environ.update({k: _LOAD_ENV[k] for k in _unset})
try:
    from . import _core  # noqa: F401  (loads the core with the settings above)
except ImportError as _e:  # the source tree shadows the installed package
    raise ImportError(
        f"rmtl's C extension is not built in {_os.path.dirname(__file__)}: this is probably the "
        "source checkout shadowing the installed package. Run from another directory, use the "
        "`rmtl` command, or build in place with `pip install -e .`") from _e
finally:
    for _k in _unset:
        del _os.environ[_k]
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
