"""The modules that moved when the package split into the method and the lab
(:mod:`rmtl.lab`): their old import paths keep working for one release, each with a
DeprecationWarning that names the new path.

An import system finder serves ``import rmtl.experiments`` (and ``from rmtl.experiments
import ...``) as the module now at ``rmtl.lab.experiment``, the same module object, so
isinstance checks and monkeypatching behave as before.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Optional

__all__ = ["MOVED", "install"]

MOVED = {
    "rmtl.experiments": "rmtl.lab.experiment",
    "rmtl.jobs": "rmtl.lab.graph",
    "rmtl.executors": "rmtl.lab.executors",
    "rmtl.report": "rmtl.lab.report",
    "rmtl.convergence": "rmtl.lab.convergence",
    "rmtl.job": "rmtl.lab.run",
    "rmtl.tune": "rmtl.lab.tune",
    "rmtl.sweep": "rmtl.lab.sweep",
    "rmtl.study": "rmtl.lab.study",
    "rmtl.plots": "rmtl.lab.plots",
    "rmtl.cli": "rmtl.lab.cli",
    "rmtl.stages": "rmtl._stages",
    "rmtl.checkpoint": "rmtl._checkpoint",
}
"""Old module path -> where it lives now."""
_INIT = os.path.join(os.path.dirname(__file__), "__init__.py")


def warn(old: str) -> None:
    """The DeprecationWarning for a use of the old path ``old``, attributed to the first
    caller outside the import machinery and this package's own entry points."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (
        frame.f_code.co_filename.startswith("<frozen importlib")
        or frame.f_code.co_filename in (__file__, _INIT)
    ):
        # warnings.warn counts no frame of the import machinery (CPython skips them)
        level += not frame.f_code.co_filename.startswith("<frozen importlib")
        frame = frame.f_back
    warnings.warn(
        f"{old} moved to {MOVED[old]}; import it from there ({old} goes in the next release)",
        DeprecationWarning,
        stacklevel=level + 1,
    )


class _Loader(importlib.abc.Loader):
    """Loads an old path as the module at its new path."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warn(spec.name)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The new module is already executed."""


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the old paths of :data:`MOVED`."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None
    ):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Loader())


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
