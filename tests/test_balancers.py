"""rmtl.balancers: the pure contract (step on given losses and Jacobians) against LibMTL's
classes (PyPI release 1.1.5, driven by tests/libmtl_driver.py) and torchjd's aggregators, and
the balancers' input handling. LibMTL is installed with ``pip install --no-deps LibMTL==1.1.5``
(its torchvision dependency is only for its ResNet; the driver stubs it)."""

import os

import numpy as np
import pytest
from balancer_steps import random_steps
from conftest import require, require_torch

import rmtl
from rmtl import balancers

REQUIRED = os.environ.get("RMTL_REQUIRE_TORCH") == "1"
REPO = os.environ.get("RMTL_LIBMTL_REPO")


@pytest.fixture(scope="module")
def libmtl():
    """LibMTL 1.1.5's weighting module (skipped without it; required in CI)."""
    require_torch()
    import libmtl_driver

    try:
        return libmtl_driver.import_weighting()
    except ImportError:
        why = "pip install --no-deps LibMTL==1.1.5"
        if REQUIRED:
            pytest.fail(f"LibMTL is not installed but RMTL_REQUIRE_TORCH=1 ({why})")
        pytest.skip(f"LibMTL is not installed ({why})")


@pytest.fixture(scope="module")
def libmtl_repo(request):
    """LibMTL's repository weighting module from RMTL_LIBMTL_REPO, a path to an exported
    checkout (skipped when unset), imported by libmtl_driver.import_repository so that later
    tests still see 1.1.5. The modules a test module lists in ``LIBMTL_REPO_NEEDS`` (the
    repository's solvers) must be installed when the variable is set."""
    if not REPO:
        pytest.skip("RMTL_LIBMTL_REPO is not set (a path to an exported LibMTL checkout)")
    require_torch()
    import libmtl_driver

    needs = getattr(request.module, "LIBMTL_REPO_NEEDS", ())
    for module in needs:
        require(module, True, f"RMTL_LIBMTL_REPO is set (pip install {' '.join(needs)})")
    return libmtl_driver.import_repository(REPO)


def drive(name, steps, *, epoch_ends=(), after=None, seed=0, **hyper):
    """rmtl's directions and weights on the same steps as libmtl_driver.run."""
    b = balancers.create(name, num_tasks=steps[0][1].shape[-2], seed=seed, **hyper)
    out = []
    for i, (losses, jac) in enumerate(steps):
        out.append((b.step(losses, jac), b.weights))
        if after is not None:
            b.after_step(after[i])
        if i in epoch_ends:
            b.end_epoch()
    return out


def assert_same(ours, theirs, atol=1e-5, rtol=1e-5, weights=True):
    for i, ((d, w), (d_ref, w_ref)) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(d, d_ref, rtol=rtol, atol=atol, err_msg=f"direction, step {i}")
        if weights and w_ref is not None:
            np.testing.assert_allclose(w, w_ref, rtol=rtol, atol=atol, err_msg=f"weights, step {i}")


def steps_for(K, P=37, n=20, samples=1, seed=0):
    """The test steps of K tasks (balancer_steps.random_steps, seeded by seed and K)."""
    return random_steps(np.random.default_rng(seed + 10 * K), n, K, P, samples)


# ---------------------------------------------------------------- parity with LibMTL 1.1.5
@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("name,cls", [("ew", "EW"), ("uw", "UW")])
def test_loss_balancers_match_libmtl(libmtl, name, cls, K):
    import libmtl_driver

    steps = steps_for(K)
    theirs = libmtl_driver.run(getattr(libmtl, cls), steps, {})
    assert_same(drive(name, steps), theirs)


# ---------------------------------------------------------------- the contract
def test_names_are_listed_with_their_defaults():
    assert balancers.names()[:3] == ["ew", "linear", "uw"]
    for name in balancers.names():
        assert isinstance(balancers.hyperparameters(name), dict)


def test_linear_applies_the_fixed_weights():
    steps = steps_for(3, n=2)
    b = balancers.create("linear", 3, weights=[1.0, 0.5, 2.0])
    d = b.step(*steps[0])
    np.testing.assert_allclose(d, np.array([1.0, 0.5, 2.0]) @ steps[0][1][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(b.weights, [1.0, 0.5, 2.0])


def test_state_dict_continues_bit_for_bit():
    steps = steps_for(2, n=6)
    a = balancers.create("uw", 2)
    for s in steps[:3]:
        a.step(*s)
    b = balancers.create("uw", 2)
    b.load_state_dict(a.state_dict())
    for s in steps[3:]:
        np.testing.assert_array_equal(a.step(*s), b.step(*s))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: balancers.create("nope", 2), "balancer: expected one of"),
        (lambda: balancers.create("ew", 1), "num_tasks: expected 2 to"),
        (lambda: balancers.create("ew", 2, space="weights"), "space: expected one of"),
        (lambda: balancers.create("ew", 2, T=2.0), "T: not a hyperparameter of ew"),
        (lambda: balancers.create("linear", 2, weights=[1.0]), "weights: expected 2 task weights"),
        (lambda: balancers.create("linear", 2, weights=[1.0, -1.0]), "weights: expected finite"),
        (lambda: balancers.create("uw", 2, weights=[1.0, 1.0]), "weights: only linear"),
    ],
)
def test_bad_settings_name_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_non_finite_input_raises_and_changes_nothing():
    losses, jac = steps_for(2, n=1)[0]
    b = balancers.create("uw", 2)
    before = b.step(losses, jac)
    state = b.state_dict()
    bad = jac.copy()
    bad[0, 1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        b.step(losses, bad)
    assert b.state_dict()["state"]["steps"] == state["state"]["steps"]
    np.testing.assert_array_equal(b.state_dict()["state"]["state"], state["state"]["state"])
    assert before.dtype == np.float32


def test_wrong_shapes_name_the_argument():
    losses, jac = steps_for(2, n=1)[0]
    b = balancers.create("ew", 2)
    with pytest.raises(ValueError, match="losses: expected 2 values"):
        b.step(losses[:, :1], jac)
    with pytest.raises(ValueError, match=r"jacobian: expected shape \(2, P\)"):
        b.step(losses, jac[0, :1])
    b.step(losses, jac)
    with pytest.raises(ValueError, match="jacobian: expected 37 columns"):
        b.step(losses, jac[:, :, :5])


def test_is_exported():
    assert rmtl.balancers is balancers
