"""Every public callable of the installed package that takes parameters documents them: its
docstring has a numpydoc ``Parameters`` section (a dataclass may use ``Attributes``) that
names every parameter; every public function or method annotated to return a value has a
``Returns`` (or ``Yields``) section; and every exception class a public callable raises in its
own body (a class: in ``__init__`` or ``__post_init__``), or in a private rmtl function it calls by
name (one level down: the checks of its arguments), is named in its ``Raises`` section.

Public means what the API pages show (``docs/conf.py``): the names in ``__all__`` of every
module that declares it, private ``_`` modules left out, and, for a class, its public methods.
A module whose import needs a missing optional dependency (``rmtl.torch`` needs torch) is left
out, except when ``RMTL_REQUIRE_TORCH=1`` or ``RMTL_REQUIRE_RAY=1`` (CI) requires it.
"""

import ast
import dataclasses
import importlib
import inspect
import os
import pkgutil
import re
import textwrap
import warnings

import rmtl

# public modules whose import needs an optional dependency, and the variable that requires it
OPTIONAL = {"rmtl.torch": "torch", "rmtl.lab.tune": "ray"}
REQUIRED_BY = {"torch": "RMTL_REQUIRE_TORCH", "ray": "RMTL_REQUIRE_RAY"}


def _section(title):
    return re.compile(rf"^{title}\n-{{3,}}$", re.MULTILINE)


PARAMETERS = _section("Parameters")
ATTRIBUTES = _section("Attributes")
RETURNS = re.compile(r"^(Returns|Yields)\n-{3,}$", re.MULTILINE)
RAISES = _section("Raises")
HEADER = re.compile(r"^\w[\w ]*\n-{3,}$", re.MULTILINE)


def _named(doc, section):
    """The names a section of ``doc`` documents (``a, b : int`` names a and b)."""
    names = set()
    for match in section.finditer(doc):
        following = HEADER.search(doc, match.end())
        body = doc[match.end() : following.start() if following else len(doc)]
        for line in body.splitlines():
            if line and not line[0].isspace():
                names.update(n.strip().lstrip("*") for n in re.split(r" :", line)[0].split(","))
    return names


def _importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _public_modules():
    """(modules declaring ``__all__``, top level first; what was left out and why)."""
    modules, left_out = [rmtl], []
    for info in pkgutil.walk_packages(rmtl.__path__, "rmtl."):
        if any(p.startswith("_") for p in info.name.split(".")) or info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            dependency = OPTIONAL.get(info.name)
            if dependency is None or _importable(dependency):
                raise  # the module itself is broken, not a dependency missing
            if os.environ.get(REQUIRED_BY[dependency]) == "1":
                raise
            left_out.append(f"{info.name} ({dependency} is not installed)")
            continue
        if hasattr(module, "__all__"):
            modules.append(module)
    return modules, left_out


def _parameters(obj):
    """The parameters of a callable besides self and cls ([] if it has no signature)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [p for p in signature.parameters if p not in ("self", "cls")]


def _ours(obj):
    return (getattr(obj, "__module__", None) or "").split(".")[0] == "rmtl"


def _undocumented(qualname, obj):
    """What is wrong with the parameter documentation of obj (and, for a class, of its public
    methods): a missing section or parameters it does not name."""
    out = []
    if inspect.isclass(obj):
        doc = inspect.getdoc(obj) or ""
        init = obj.__dict__.get("__init__")
        if init is not None and inspect.isfunction(init):
            doc += "\n" + (inspect.getdoc(init) or "")  # numpydoc reads either
        sections = (PARAMETERS, ATTRIBUTES) if dataclasses.is_dataclass(obj) else (PARAMETERS,)
        out += _check(qualname, _parameters(obj), doc, sections)
        if issubclass(obj, BaseException):
            return out
        for special in ("__init__", "__post_init__"):
            if inspect.isfunction(obj.__dict__.get(special)):
                out += _check_raises(qualname, obj.__dict__[special], doc)
        for name, member in vars(obj).items():
            if name.startswith("_"):
                continue
            if isinstance(member, property) and member.fget is not None:
                out += _check_raises(f"{qualname}.{name}", member.fget, inspect.getdoc(member))
                continue
            function = getattr(member, "__func__", member)  # staticmethod, classmethod
            if inspect.isfunction(function):
                out += _undocumented(f"{qualname}.{name}", function)
    elif callable(obj):
        doc = inspect.getdoc(obj) or ""
        out += _check(qualname, _parameters(obj), doc, (PARAMETERS,))
        if _returns_something(obj) and not RETURNS.search(doc):
            out.append(f"{qualname}: returns a value but has no Returns (or Yields) section")
        out += _check_raises(qualname, obj, doc)
    return out


def _raised(function, depth=1):
    """The exception classes ``function`` raises by name in its own body (``raise X(...)`` and
    ``raise X``, not a bare ``raise`` or a re-raised variable, nor raises of nested functions)
    and, ``depth`` levels down, in the private rmtl functions it calls by name (``_check(...)``
    or ``module._check(...)``): the checks of its arguments."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError):
        return set()
    names, pending = set(), list(ast.iter_child_nodes(tree.body[0]))
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = exc.attr if isinstance(exc, ast.Attribute) else getattr(exc, "id", "")
            if name[:1].isupper():
                names.add(name)
        if isinstance(node, ast.Call) and depth > 0:
            helper = _private_callee(function, node.func)
            if helper is not None:
                names |= _raised(helper, depth - 1)
        pending.extend(ast.iter_child_nodes(node))
    return names


def _private_callee(function, func):
    """The private rmtl function a call's ``func`` names from ``function``'s module, or None."""
    scope = getattr(function, "__globals__", {})
    if isinstance(func, ast.Name):
        name, target = func.id, scope.get(func.id)
    elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        module = scope.get(func.value.id)
        name = func.attr
        target = getattr(module, name, None) if inspect.ismodule(module) else None
    else:
        return None
    private = name.startswith("_") and not name.startswith("__")
    return target if private and inspect.isfunction(target) and _ours(target) else None


def _check_raises(qualname, function, doc):
    """[] when ``doc``'s Raises section names every exception class ``function`` raises."""
    raised = _raised(function)
    if not raised:
        return []
    if not RAISES.search(doc or ""):
        return [f"{qualname}: raises {', '.join(sorted(raised))} but has no Raises section"]
    named = {n.rsplit(".", 1)[-1] for n in _named(doc, RAISES)}  # rmtl.CorruptFileError
    missing = sorted(raised - named)
    if not missing:
        return []
    return [f"{qualname}: raises {', '.join(missing)}, not in its Raises section"]


def _returns_something(obj):
    """Whether a function's return annotation says it returns a value (not None)."""
    try:
        annotation = inspect.signature(obj).return_annotation
    except (TypeError, ValueError):
        return False
    return annotation not in (inspect.Signature.empty, None, "None")


def _check(qualname, parameters, doc, sections):
    """[] when ``doc`` has one of ``sections`` naming every parameter, else what is wrong."""
    if not parameters:
        return []
    if not any(s.search(doc) for s in sections):
        return [f"{qualname}({', '.join(parameters)}): no section"]
    named = set().union(*(_named(doc, s) for s in sections))
    missing = [p for p in parameters if p not in named]
    return [f"{qualname}: {', '.join(missing)} not documented"] if missing else []


def test_public_callables_document_their_parameters():
    modules, left_out = _public_modules()
    seen, checked, offenders = set(), 0, []
    for module in modules:
        for name in module.__all__:
            obj = getattr(module, name)
            if id(obj) in seen or inspect.ismodule(obj) or not _ours(obj):
                continue
            seen.add(id(obj))
            if callable(obj):
                checked += 1
                offenders += _undocumented(f"{module.__name__}.{name}", obj)
    assert checked > 100, f"only {checked} public callables found: is the discovery broken?"
    assert not offenders, (
        f"{len(offenders)} public callables take parameters that their docstring's numpydoc "
        "'Parameters' section (dataclasses: or 'Attributes') does not document, return a "
        "value without a 'Returns' section, or raise exceptions their 'Raises' section does "
        "not name:\n  "
        + "\n  ".join(offenders)
        + (f"\n(not checked: {', '.join(left_out)})" if left_out else "")
    )
    if left_out:
        warnings.warn(f"not checked: {', '.join(left_out)}", stacklevel=1)
