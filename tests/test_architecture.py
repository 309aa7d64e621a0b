"""The shape of the code: the import graph of ``rmtl/`` and the include graph of ``csrc/``
have no circle; the method never imports the lab; ``rmtl/`` is at most 10 levels deep (from
the command line down) and has
at most 16 public top-level modules; every module imports at module level (a function-local
import only for an optional dependency)."""

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {
    "matplotlib",
    "ray",
    "pyarrow",
    "pandas",
    "tqdm",
    "threadpoolctl",
    "tomllib",
    "tomli",
    "torch",
    "gymnasium",
}


def _modules():
    out = {}
    for p in sorted((ROOT / "rmtl").rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _imports(name, path, modules):
    """(imported module, function-local?) pairs of one module, the package's own only."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    local = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            # `from . import x` names submodules; `from .m import x` the module m
            for t in subs or ([target] if target in modules else []):
                found.append((t, id(node) in local))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in local) for a in node.names if a.name in modules]
    return [(t, is_local) for t, is_local in found if t != name and t != "rmtl"]


def _graph():
    modules = _modules()
    return modules, {m: sorted({t for t, _ in _imports(m, p, modules)}) for m, p in modules.items()}


def _cycle(graph):
    """One circle of the graph as a list of nodes, or None."""
    state = {}

    def visit(n, path):
        state[n] = 1
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                return path[path.index(m) :] + [m]
            if m not in state:
                found = visit(m, path + [m])
                if found:
                    return found
        state[n] = 2
        return None

    for n in graph:
        if n not in state:
            found = visit(n, [n])
            if found:
                return found
    return None


def test_python_imports_have_no_circle_and_the_method_never_imports_the_lab():
    _, graph = _graph()
    assert _cycle(graph) is None
    # the package's face (__init__: the public names) and `python -m rmtl` may name the lab
    faces = ("rmtl", "rmtl.__main__")
    upward = [
        (m, t)
        for m, ts in graph.items()
        for t in ts
        if not m.startswith("rmtl.lab") and m not in faces and t.startswith("rmtl.lab")
    ]
    assert upward == []


def test_python_package_depth_and_public_modules():
    _, graph = _graph()

    @cache
    def depth(n):
        return 1 + max((depth(m) for m in graph[n]), default=0)

    # counted from the command line down (rmtl.__main__ only calls rmtl.lab.cli.main)
    assert max(depth(n) for n in graph if n != "rmtl.__main__") <= 10
    public = [n for n in graph if n.count(".") == 1 and not n.split(".")[1].startswith("_")]
    assert len(public) <= 16, public


def test_imports_at_module_level_except_optional_dependencies():
    modules = _modules()
    late = []
    for _name, path in modules.items():
        tree = ast.parse(path.read_text())
        for f in ast.walk(tree):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(f):
                if isinstance(node, ast.Import):
                    roots = {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom):
                    roots = {"." if node.level else node.module.split(".")[0]}
                else:
                    continue
                if not roots <= OPTIONAL:
                    late.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert late == []


def test_c_includes_have_no_circle():
    graph = {}
    for p in sorted((ROOT / "csrc").glob("*.[ch]")):
        graph[p.name] = [m for m in re.findall(r'#include "([^"]+)"', p.read_text())]
    # a source's header is the same unit: X.c -> X.h is no edge of the unit graph
    unit = lambda f: f.rsplit(".", 1)[0]  # noqa: E731
    units = {}
    for f, incs in graph.items():
        units.setdefault(unit(f), set()).update(unit(i) for i in incs if unit(i) != unit(f))
    assert _cycle({k: sorted(v) for k, v in units.items()}) is None
