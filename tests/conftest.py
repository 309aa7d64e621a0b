import importlib
import os

import numpy as np
import pytest

import rmtl


def require(module, required, why):
    """Import an optional test dependency; if missing, skip the calling test (or module), or
    fail when ``required`` (``why`` says which setting requires it or how to install it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if required:
            pytest.fail(f"{module} is not installed but {why}")
        pytest.skip(f"{module} is not installed ({why})", allow_module_level=True)


def optional(module: str, extra: str = "test"):
    """An optional test stack: skipped with the reason when missing, except under CI=true,
    where every stack must be installed and run."""
    return require(
        module, os.environ.get("CI", "").lower() == "true", f"pip install 'rmtl[{extra}]'"
    )


def require_torch():
    """Import torch; a missing torch skips, or fails when RMTL_REQUIRE_TORCH=1 (CI)."""
    torch = require("torch", os.environ.get("RMTL_REQUIRE_TORCH") == "1", "RMTL_REQUIRE_TORCH=1")
    torch.set_num_threads(2)
    return torch


# the slow tests (`pytest -m "not slow"` leaves them out; the README's command runs them):
# the notebooks, the fault and interrupt tests (subprocesses killed mid-write), the thread
# tests (every thread count) and the Ray tests (a local cluster)
SLOW_MODULES = {"test_notebooks", "test_faults", "test_interrupt", "test_threads"}


def pytest_collection_modifyitems(items):
    """Mark the slow tests: by module, by a thread-count name, or by the Ray ``cluster`` fixture."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if (
            module in SLOW_MODULES
            or "thread" in item.name
            or "cluster" in getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def torch():
    return require_torch()


@pytest.fixture(params=["blas", "builtin"])
def gemm(request):
    """Run the test on both matrix-multiply paths, restoring the default afterwards."""
    before = rmtl.blas_info()["backend"]
    rmtl.set_gemm_backend(request.param)
    yield request.param
    rmtl.set_gemm_backend(before)


def random_session_data(
    n_sessions=60, field_dims=(5, 7, 3), num_dense=2, num_tasks=2, seed=0, esmm=True
):
    """A small random SessionData for tests (labels with pay implying click when esmm)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 8, n_sessions)
    n = int(lengths.sum())
    session = np.repeat(np.arange(n_sessions) * 3 + 11, lengths)
    time = np.sort(rng.integers(0, 10**9, n))
    sparse = np.stack([rng.integers(0, d, n) for d in field_dims], 1)
    dense = rng.normal(size=(n, num_dense)).astype(np.float32)
    labels = (rng.random((n, num_tasks)) < 0.4).astype(np.float32)
    if esmm and num_tasks >= 2:
        labels[:, 1] *= labels[:, 0]
    user = rng.integers(0, 10, n)
    return rmtl.SessionData(session, time, sparse, dense, labels, field_dims, user=user)
