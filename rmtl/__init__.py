"""rmtl: Multi-Task Recommendations with Reinforcement Learning, with a C core."""
from . import metrics, models
from .backend import blas_info, set_gemm_backend
from .data import SessionData
from .metrics import evaluate
from .models import load, save
from .train import History, Trainer

__version__ = "0.1.0"
__all__ = ["SessionData", "Trainer", "History", "evaluate", "save", "load", "blas_info",
           "set_gemm_backend", "metrics", "models"]
