"""Sphinx configuration of rmtl's documentation site.

Build: ``pip install '.[docs]' && sphinx-build -W --keep-going -b html docs docs/_build/html``.
The API pages are generated from every public name (``__all__``) of the package, and the
notebooks in ``notebooks/`` are executed (at the small CI size) and rendered as a gallery.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import shutil
from pathlib import Path

from sphinx.util import logging

import rmtl

ROOT = Path(__file__).resolve().parents[1]
DOCS = Path(__file__).resolve().parent
os.environ.setdefault("RMTL_NOTEBOOK_SMALL", "1")  # the notebooks' CI size; the kernels inherit it
os.environ.setdefault("RMTL_REPO", str(ROOT))  # where the notebooks find the committed results

project = "rmtl"
author = "rmtl developers"
copyright = "rmtl developers, MIT licence"
release = rmtl.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "numpydoc", "myst_nb"]
templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "test_site.py"]
html_theme = "pydata_sphinx_theme"
html_title = f"rmtl {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path: list[str] = []
autosummary_generate = True
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
myst_enable_extensions = ["dollarmath", "colon_fence"]
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 900
nb_merge_streams = True
suppress_warnings = ["myst.header"]

GALLERY = DOCS / "gallery"
_log = logging.getLogger("rmtl.docs")


def _public_modules() -> list[str]:
    """Every importable module of the package that declares ``__all__``, top level first."""
    names = ["rmtl"]
    for info in pkgutil.walk_packages(rmtl.__path__, "rmtl."):
        if any(part.startswith("_") for part in info.name.split(".")) or info.name.endswith(
            "__main__"
        ):
            continue
        if hasattr(importlib.import_module(info.name), "__all__"):
            names.append(info.name)
    return names


def _missing_docstrings(qualname: str, obj: object) -> list[str]:
    """Public names (and, for classes, public methods and properties defined in rmtl) without a
    docstring."""
    if getattr(obj, "__module__", None) == "typing":  # a type alias: its doc is typing's
        return []
    missing = [] if inspect.getdoc(obj) else [qualname]
    if inspect.isclass(obj):
        for name, member in vars(obj).items():
            if name.startswith("_") or not (
                inspect.isfunction(member) or isinstance(member, property)
            ):
                continue
            if not inspect.getdoc(member):
                missing.append(f"{qualname}.{name}")
    return missing


def write_api() -> list[str]:
    """Write ``api.rst`` from ``__all__`` of every public module; return the public names
    (and methods) that have no docstring."""
    seen: dict[int, str] = {}
    sections: list[str] = []
    missing: list[str] = []
    for modname in _public_modules():
        module = importlib.import_module(modname)
        entries = []
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or id(obj) in seen:
                continue
            seen[id(obj)] = f"{modname}.{name}"
            entries.append(name)
            missing += _missing_docstrings(f"{modname}.{name}", obj)
        if entries:
            doc = (inspect.getdoc(module) or "").split("\n\n")[0].replace("\n", " ")
            body = "\n".join(f"   {e}" for e in entries)
            sections.append(
                f"``{modname}``\n{'-' * (len(modname) + 4)}\n\n{doc}\n\n"
                f".. currentmodule:: {modname}\n\n"
                f".. autosummary::\n   :toctree: generated\n\n{body}\n"
            )
    text = (
        "API reference\n=============\n\n"
        "Every public name of the package, generated from its docstrings.\n\n" + "\n".join(sections)
    )
    path = DOCS / "api.rst"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return missing


def copy_notebooks() -> None:
    """Copy ``notebooks/*.ipynb`` into the gallery folder, where the build executes them."""
    GALLERY.mkdir(exist_ok=True)
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        target = GALLERY / nb.name
        if not target.exists() or target.read_bytes() != nb.read_bytes():
            shutil.copyfile(nb, target)


# Generated before Sphinx looks for source files, so autosummary and the gallery see them.
MISSING_DOCSTRINGS = write_api()
copy_notebooks()


def warn_missing_docstrings(app) -> None:
    """A public name without a docstring is a build warning (an error with ``-W``)."""
    for qual in MISSING_DOCSTRINGS:
        _log.warning(f"public name {qual} has no docstring")


def setup(app) -> None:
    app.connect("builder-inited", warn_missing_docstrings)
