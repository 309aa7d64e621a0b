"""rmtl: Multi-Task Recommendations with Reinforcement Learning, with a C core."""
import os as _os

# Our OpenMP loops alternate with BLAS calls that run on OpenBLAS's own threads; spinning
# OpenMP workers would steal the cores BLAS needs (measured: 2.5x slower training steps).
# libgomp reads this once, when the core is loaded below; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "passive")
from . import metrics, models
from .backend import blas_info, set_gemm_backend
from .data import SessionData
from .metrics import evaluate
from .models import load, save
from .train import History, Trainer

__version__ = "0.1.0"
__all__ = ["SessionData", "Trainer", "History", "evaluate", "save", "load", "blas_info",
           "set_gemm_backend", "metrics", "models"]
