"""rmtl: Multi-Task Recommendations with Reinforcement Learning, with a C core."""
import os as _os

# Our OpenMP loops alternate with BLAS calls that run on OpenBLAS's own threads; spinning
# OpenMP workers would steal the cores BLAS needs (measured: 2.5x slower training steps).
# libgomp reads this once, when the core is loaded below; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "passive")
# Likewise OpenBLAS workers spin about 2^28 cycles (~0.1 s) after every product by default,
# taking a core from our OpenMP loops in between (measured: 2x slower steps on 2 cores);
# 4 is OpenBLAS's minimum. Read when SciPy's BLAS loads with the core, so it only helps if
# scipy.linalg was not imported before rmtl.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
try:
    from . import _core  # noqa: F401  (loads the core with the settings above)
except ImportError as _e:  # the source tree shadows the installed package
    raise ImportError(
        f"rmtl's C extension is not built in {_os.path.dirname(__file__)}: this is probably the "
        "source checkout shadowing the installed package. Run from another directory, use the "
        "`rmtl` command, or build in place with `pip install -e .`") from _e
from . import datasets, metrics, models
from .backend import blas_info, set_gemm_backend
from ._io import CorruptFileError
from .data import SessionData
from .metrics import evaluate
from .models import load, save
from .train import History, NonFiniteLossError, Trainer
from .critic import Critic
from .env import SessionEnv, VecSessionEnv
from .replay import ReplayBuffer, collect
from .agent import RMTL
from .experiments import experiment

__version__ = "0.1.0"
__all__ = ["SessionData", "Trainer", "History", "evaluate", "save", "load", "blas_info",
           "set_gemm_backend", "metrics", "models",
           "Critic", "RMTL", "experiment", "datasets",
           "SessionEnv", "VecSessionEnv", "ReplayBuffer", "collect", "CorruptFileError", "NonFiniteLossError"]
