"""rmtl.balancers that solve a small problem over the task weights (csrc/balance_solve.c):
cagrad against LibMTL 1.1.5 (CI; its CAGrad runs only for 3 tasks), nash_mtl, upgrad, fairgrad,
modo and sdmgrad against LibMTL's repository (gated on RMTL_LIBMTL_REPO, a path to an exported
checkout; cagrad there for any K), cagrad, nash_mtl, upgrad (and fairgrad, modo, sdmgrad) against
torchjd 0.18's aggregators (CI), and their properties (everywhere).

Tolerances. rmtl solves every inner problem to about 1e-12 in double; the references stop at
their solvers' tolerances:

- cagrad: LibMTL's scipy SLSQP at its default ftol 1e-6 leaves the weights about 1e-4 from the
  optimum (rmtl's objective is never higher than SLSQP's), so the default comparison allows
  1e-3 of the direction's largest entry and 1e-3 on the weights; with SLSQP tightened to
  ftol 1e-15 (patched in) they agree to 2e-5 (float32 Gram matrix in LibMTL). torchjd's CAGrad
  solves with CLARABEL on a float32 SVD: 1e-3 of the largest entry.
- nash_mtl: cvxpy's ECOS (gap 1e-8) leaves each problem's solution up to 1e-4 relative from the
  exact one on ill-conditioned Gram matrices, 5e-7 on these: 1e-5.
- upgrad (quadprog, exact), fairgrad (least_squares to 1e-8), modo (closed form): 1e-5.
- sdmgrad: LibMTL's inner SGD (lr 5 on a matrix normalised to a diagonal near 1) oscillates
  chaotically when it does not settle on a vertex, and float32 against double rounding then
  decides the weights (up to 5e-2 apart at K = 4, step 9 of these steps). The parity tests run
  LibMTL's class and torchjd's weighting in float64, where they agree to 1e-6, and LibMTL's
  float32 run at K = 2 and 3, where the iteration settles.

Scale conventions (rmtl's is LibMTL's, the direction of the summed loss): torchjd's CAGrad has
no rescale (rmtl's rescale 1 divides by 1 + calpha^2); its NashMTL clips the direction's norm to
max_norm without torch's 1e-6 (compared up to scale); UPGrad, FairGrad, MoDo and SDMGrad have
the same scale.
"""

import functools
import os

import numpy as np
import pytest
import test_balancers
from conftest import require, require_torch
from test_balancers import assert_same, drive, steps_for

from rmtl import balancers

# cvxpy warns that Nash-MTL's problem (LibMTL's and torchjd's) is not DPP at every solve
pytestmark = pytest.mark.filterwarnings("ignore:You are solving a parameterized problem")

REQUIRED = os.environ.get("RMTL_REQUIRE_TORCH") == "1"
#: the repository's solvers, required when RMTL_LIBMTL_REPO is set (test_balancers.libmtl_repo)
LIBMTL_REPO_NEEDS = ("scipy", "cvxpy", "ecos", "qpsolvers", "quadprog")

libmtl = test_balancers.libmtl  # LibMTL 1.1.5's weighting module (fixture)
libmtl_repo = test_balancers.libmtl_repo  # LibMTL's repository (fixture)

HYPER = {
    "cagrad": {"calpha": 0.5, "rescale": 1},
    "nash_mtl": {"update_weights_every": 1, "optim_niter": 20, "max_norm": 1.0},
    "upgrad": {"norm_eps": 1e-4, "reg_eps": 1e-4},
    "fairgrad": {"alpha": 1.0},
    "modo": {"gamma": 1e-3, "rho": 0.1},
    "sdmgrad": {"lamda": 0.3, "niter": 20},
}
# LibMTL's class and keyword prefix per balancer
LIBMTL = {
    "cagrad": ("CAGrad", ""),
    "nash_mtl": ("Nash_MTL", ""),
    "upgrad": ("UPGrad", "UPGrad_"),
    "fairgrad": ("FairGrad", "FairGrad_"),
    "modo": ("MoDo", "MoDo_"),
    "sdmgrad": ("SDMGrad", "SDMGrad_"),
}
SAMPLES = {"modo": 3, "sdmgrad": 3}


def libmtl_hyper(name, **hyper):
    """LibMTL's keyword arguments of balancer ``name`` (defaults overridden by ``hyper``)."""
    prefix = LIBMTL[name][1]
    return {prefix + k: v for k, v in {**HYPER[name], **hyper}.items()}


def steps_of(name, K, **kw):
    return steps_for(K, samples=SAMPLES.get(name, 1), **kw)


def max_diffs(ours, theirs, relative=False):
    """The largest differences of directions (absolute, or relative to the reference's largest
    entry) and of weights (NaN without weights)."""

    def dir_diff(d, dr):
        return float(np.abs(d - dr).max() / (np.abs(dr).max() if relative else 1.0))

    dd = max(dir_diff(d, dr) for (d, _), (dr, _) in zip(ours, theirs))
    dw = [float(np.abs(w - wr).max()) for (_, w), (_, wr) in zip(ours, theirs) if wr is not None]
    return dd, max(dw) if dw else float("nan")


def assert_close_to_scale(ours, theirs, rel, weights=None):
    """Directions within ``rel`` of each reference direction's largest entry (solver
    tolerances are relative to the problem's scale); weights within ``weights``."""
    for i, ((d, w), (dr, wr)) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(d, dr, rtol=0, atol=rel * np.abs(dr).max(), err_msg=f"step {i}")
        if weights is not None and wr is not None:
            np.testing.assert_allclose(w, wr, rtol=0, atol=weights, err_msg=f"weights, step {i}")


def cagrad_objective(w, jac, calpha):
    """CAGrad's inner objective w^T A b + c sqrt(w^T A w + 1e-8) (LibMTL's form)."""
    g = jac.astype(np.float64)
    A = g @ g.T
    c = calpha * np.sqrt(A.mean() + 1e-8) + 1e-8
    return w @ A.mean(1) + c * np.sqrt(w @ A @ w + 1e-8)


@pytest.fixture
def tight_slsqp(monkeypatch):
    """Makes the CAGrad module of LibMTL call scipy's SLSQP with ftol 1e-15 (patched into the
    module's ``minimize``), so that the comparison measures rmtl, not SLSQP's stopping rule."""
    from scipy.optimize import minimize

    def patch(weighting):
        # the globals of the class's own module (sys.modules may hold another LibMTL's)
        module_globals = weighting.CAGrad.backward.__globals__
        tight = functools.partial(minimize, options={"ftol": 1e-15, "maxiter": 1000})
        monkeypatch.setitem(module_globals, "minimize", tight)

    return patch


# ---------------------------------------------------------------- parity with LibMTL 1.1.5
def test_cagrad_matches_libmtl(libmtl):
    """LibMTL 1.1.5's CAGrad reshapes to 3 tasks (K = 3 only). SLSQP stops at ftol 1e-6: rmtl's
    weights are the better minimisers of the same objective, within 1e-3 of SLSQP's."""
    import libmtl_driver

    steps = steps_for(3)
    theirs = libmtl_driver.run(libmtl.CAGrad, steps, libmtl_hyper("cagrad"))
    ours = drive("cagrad", steps)
    assert_close_to_scale(ours, theirs, 1e-3, weights=1e-3)
    for (_, jac), (_, w), (_, wr) in zip(steps, ours, theirs):
        f, f_ref = cagrad_objective(w, jac[0], 0.5), cagrad_objective(wr, jac[0], 0.5)
        assert f <= f_ref + 1e-9 * abs(f_ref)


@pytest.mark.parametrize("calpha,rescale", [(0.5, 1), (0.2, 0), (0.9, 2)])
def test_cagrad_matches_libmtl_with_a_tight_slsqp(libmtl, tight_slsqp, calpha, rescale):
    import libmtl_driver

    tight_slsqp(libmtl)
    steps = steps_for(3)
    hyper = {"calpha": calpha, "rescale": rescale}
    theirs = libmtl_driver.run(libmtl.CAGrad, steps, hyper)
    assert_close_to_scale(drive("cagrad", steps, **hyper), theirs, 2e-5, weights=2e-5)


def test_libmtl_115_cagrad_runs_only_for_three_tasks(libmtl):
    """Why the 1.1.5 test uses K = 3: its objective reshapes the weights to (1, 3)."""
    import libmtl_driver

    with pytest.raises(ValueError, match="reshape"):
        libmtl_driver.run(libmtl.CAGrad, steps_for(2, n=1), libmtl_hyper("cagrad"))


# ---------------------------------------------------------------- parity with torchjd 0.18
@pytest.fixture(scope="module")
def torchjd():
    """torchjd's aggregation module, with the solvers its CAGrad (cvxpy, clarabel), NashMTL
    (cvxpy, ecos) and UPGrad (qpsolvers, quadprog) need."""
    require_torch()
    why = (
        "RMTL_REQUIRE_TORCH=1 (pip install torchjd==0.18.0 cvxpy ecos clarabel qpsolvers quadprog)"
    )
    for module in ("scipy", "cvxpy", "ecos", "clarabel", "qpsolvers", "quadprog"):
        require(module, REQUIRED, why)
    return require("torchjd.aggregation", REQUIRED, why)


def torch_rows(jac):
    import torch

    return torch.tensor(np.ascontiguousarray(jac))


@pytest.mark.parametrize("K", [2, 3, 4])
def test_cagrad_matches_torchjd_up_to_scale(torchjd, K):
    """torchjd's CAGrad(c) is LibMTL's rescale 0: rmtl's rescale 1 is it over 1 + calpha^2
    (CLARABEL's tolerance and a float32 SVD: 1e-3 of the largest entry)."""
    agg = torchjd.CAGrad(c=0.5)
    steps = steps_for(K)
    theirs = [(agg(torch_rows(jac[0])).numpy() / 1.25, None) for _, jac in steps]
    assert_close_to_scale(drive("cagrad", steps), theirs, 1e-3)


@pytest.mark.parametrize("K", [2, 3, 4])
def test_nash_mtl_matches_torchjd_up_to_scale(torchjd, K):
    """Same iteration of ECOS problems; torchjd clips the norm to max_norm exactly where torch's
    clip_grad_norm_ divides by norm + 1e-6, so the directions agree after normalising."""
    agg = torchjd.NashMTL(n_tasks=K, max_norm=1.0, update_weights_every=1, optim_niter=20)
    ours = drive("nash_mtl", steps_for(K))
    for i, ((_, jac), (d, _)) in enumerate(zip(steps_for(K), ours)):
        ref = agg(torch_rows(jac[0])).numpy().astype(np.float64)
        d = d.astype(np.float64)
        unit, unit_ref = d / np.linalg.norm(d), ref / np.linalg.norm(ref)
        np.testing.assert_allclose(unit, unit_ref, atol=1e-5, err_msg=f"step {i}")
        np.testing.assert_allclose(np.linalg.norm(d), np.linalg.norm(ref), rtol=1e-5)


@pytest.mark.parametrize("K", [2, 3, 4])
def test_upgrad_matches_torchjd(torchjd, K):
    """The same weights (quadprog's exact QPs) and the same scale."""
    agg = torchjd.UPGrad()
    steps = steps_for(K)
    theirs = [(agg(torch_rows(jac[0])).numpy(), None) for _, jac in steps]
    assert_same(drive("upgrad", steps), theirs)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad_matches_torchjd(torchjd, alpha):
    agg = torchjd.FairGrad(alpha=alpha)
    steps = steps_for(4)
    theirs = [(agg(torch_rows(jac[0])).numpy(), None) for _, jac in steps]
    assert_same(drive("fairgrad", steps, alpha=alpha), theirs)


@pytest.mark.parametrize("K", [2, 4])
def test_modo_matches_torchjd(torchjd, K):
    """torchjd's MoDoWeighting on J0 J1^T; the direction combines J2 (LibMTL's three samples)."""
    weighting = torchjd.MoDoWeighting(gamma=1e-3, rho=0.1)
    steps = steps_for(K, samples=3)
    theirs = []
    for _, jac in steps:
        J = torch_rows(jac)
        w = weighting(J[0] @ J[1].T)
        theirs.append(((w @ J[2]).numpy(), w.numpy()))
    assert_same(drive("modo", steps), theirs)


@pytest.mark.parametrize("K", [2, 4])
def test_sdmgrad_matches_torchjd_in_double(torchjd, K):
    """torchjd's SDMGradWeighting (lr 5 and momentum 0.5, LibMTL's) on J1 J2^T in float64 (its
    float32 run is chaotic where the inner SGD does not settle, see the module's docstring);
    the direction combines J0 with (w + lamda / K) / (1 + lamda)."""
    import torch

    weighting = torchjd.SDMGradWeighting(lr=5.0, momentum=0.5, n_iter=20, lambda_=0.3)
    steps = steps_for(K, samples=3)
    theirs = []
    for _, jac in steps:
        J = torch_rows(jac).to(torch.float64)
        theirs.append(((weighting(J[1] @ J[2].T) @ J[0]).numpy(), None))
    assert_same(drive("sdmgrad", steps), theirs, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- LibMTL's repository
@pytest.fixture
def np_alltrue(monkeypatch):
    """The repository's SDMGrad calls np.alltrue, which NumPy 2 removed (reached only when the
    weights already sum to 1): np.all stands in."""
    monkeypatch.setattr(np, "alltrue", np.all, raising=False)


def run_repo(weighting, name, steps, **hyper):
    import libmtl_driver

    cls = getattr(weighting, LIBMTL[name][0])
    return libmtl_driver.run(cls, steps, libmtl_hyper(name, **hyper))


def run_double(cls, steps, hyper):
    """LibMTL's class driven as libmtl_driver.run drives it, in float64 (torch's default dtype
    while it runs: the shared parameters, the losses and the class's own tensors)."""
    import libmtl_driver
    import torch

    S, K, P = steps[0][1].shape
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        h = libmtl_driver.host(cls, K, P, epochs=1)
        theta, out = h.encoder.theta, []
        for losses, jac in steps:
            h.encoder.zero_grad(set_to_none=False)
            loss = torch.tensor(losses.reshape(S, K), dtype=torch.float64)
            loss = loss + torch.tensor(jac, dtype=torch.float64) @ theta
            w = h.backward(loss[0] if S == 1 else loss, **hyper)
            out.append((theta.grad.numpy().copy(), None if w is None else np.asarray(w)))
            with torch.no_grad():
                theta.zero_()
        return out
    finally:
        torch.set_default_dtype(before)


@pytest.mark.parametrize("K", [2, 4, 8])
def test_cagrad_matches_libmtl_repo(libmtl_repo, K):
    """The repository's CAGrad runs for any K; SLSQP's default tolerance as for 1.1.5."""
    steps = steps_for(K)
    assert_close_to_scale(drive("cagrad", steps), run_repo(libmtl_repo, "cagrad", steps), 1e-3)


@pytest.mark.parametrize("K", [2, 4, 8])
def test_cagrad_matches_libmtl_repo_with_a_tight_slsqp(libmtl_repo, tight_slsqp, K):
    tight_slsqp(libmtl_repo)
    steps = steps_for(K)
    theirs = run_repo(libmtl_repo, "cagrad", steps)
    assert_close_to_scale(drive("cagrad", steps), theirs, 2e-5, weights=2e-5)


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize(
    "hyper",
    [
        {},
        {"update_weights_every": 3, "optim_niter": 5, "max_norm": 0.0},
        {"max_norm": 10.0},
    ],
)
def test_nash_mtl_matches_libmtl_repo(libmtl_repo, K, hyper):
    """cvxpy's ECOS problems against rmtl's barrier method (1e-5, ECOS's gap 1e-8)."""
    steps = steps_for(K)
    assert_same(
        drive("nash_mtl", steps, **hyper), run_repo(libmtl_repo, "nash_mtl", steps, **hyper)
    )


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("hyper", [{}, {"norm_eps": 1e-4, "reg_eps": 1e-2}])
def test_upgrad_matches_libmtl_repo(libmtl_repo, K, hyper):
    steps = steps_for(K)
    assert_same(drive("upgrad", steps, **hyper), run_repo(libmtl_repo, "upgrad", steps, **hyper))


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad_matches_libmtl_repo(libmtl_repo, K, alpha):
    steps = steps_for(K)
    theirs = run_repo(libmtl_repo, "fairgrad", steps, alpha=alpha)
    assert_same(drive("fairgrad", steps, alpha=alpha), theirs)


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("hyper", [{}, {"gamma": 0.05, "rho": 0.0}])
def test_modo_matches_libmtl_repo(libmtl_repo, K, hyper):
    """gamma 0.05 moves the weights to faces of the simplex."""
    steps = steps_for(K, samples=3)
    assert_same(drive("modo", steps, **hyper), run_repo(libmtl_repo, "modo", steps, **hyper))


@pytest.mark.parametrize("K", [2, 3])
def test_sdmgrad_matches_libmtl_repo(libmtl_repo, np_alltrue, K):
    """LibMTL's float32 run, at K where its inner SGD settles on these steps."""
    steps = steps_for(K, samples=3)
    assert_same(drive("sdmgrad", steps), run_repo(libmtl_repo, "sdmgrad", steps))


@pytest.mark.parametrize("K", [2, 4, 8])
@pytest.mark.parametrize("hyper", [{}, {"lamda": 1.0, "niter": 5}])
def test_sdmgrad_matches_libmtl_repo_in_double(libmtl_repo, np_alltrue, K, hyper):
    steps = steps_for(K, samples=3)
    theirs = run_double(libmtl_repo.SDMGrad, steps, libmtl_hyper("sdmgrad", **hyper))
    assert_same(drive("sdmgrad", steps, **hyper), theirs, atol=1e-6, rtol=1e-6)


def test_solver_parity_table(libmtl_repo, np_alltrue):
    """The report's table (printed; ``pytest -s`` shows it): the largest absolute differences
    of directions and weights over 20 steps at K = 2 and 4 against the repository's float32
    runs, within the tolerances above (sdmgrad's K = 4 is the chaotic case)."""
    bound = {"cagrad": 1e-3, "sdmgrad": 1e-5}
    for name in HYPER:
        for K in (2, 4):
            steps = steps_of(name, K)
            ours, theirs = drive(name, steps), run_repo(libmtl_repo, name, steps)
            dd, dw = max_diffs(ours, theirs)
            rel, _ = max_diffs(ours, theirs, relative=True)
            print(f"{name:9s} K={K} direction {dd:.2e} (relative {rel:.2e}) weights {dw:.2e}")
            if not (name == "sdmgrad" and K == 4):
                assert rel <= bound.get(name, 1e-5)


# ---------------------------------------------------------------- properties
def simplex_points(rng, K, n):
    return rng.dirichlet(np.full(K, 0.3), n)


@pytest.mark.parametrize("K", [2, 3, 5, 8])
@pytest.mark.parametrize("calpha", [0.0, 0.5, 0.9, 2.0])
def test_cagrad_weights_minimise_its_objective(K, calpha):
    """The weights lie on the simplex and no vertex or random point of it does better; the
    direction is (g0 + c g_w / |g_w|) / (1 + calpha^2) at distance calpha |g0| (the ball's
    radius) from g0 (rescale 1)."""
    rng = np.random.default_rng(K)
    b = balancers.create("cagrad", K, calpha=calpha)
    for losses, jac in steps_for(K, n=5):
        d = b.step(losses, jac).astype(np.float64)
        w = b.weights
        assert (w >= 0).all() and abs(w.sum() - 1) < 1e-12
        f = cagrad_objective(w, jac[0], calpha)
        others = np.vstack([np.eye(K), simplex_points(rng, K, 2000)])
        best = min(cagrad_objective(x, jac[0], calpha) for x in others)
        assert f <= best + 1e-12 * abs(best)
        g = jac[0].astype(np.float64)
        g0, gw = g.mean(0), w @ g
        c = calpha * np.linalg.norm(g0)
        want = (g0 + c * gw / np.linalg.norm(gw)) / (1 + calpha**2)
        np.testing.assert_allclose(d, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        if calpha > 0:
            radius = np.linalg.norm(d * (1 + calpha**2) - g0)
            np.testing.assert_allclose(radius, c, rtol=1e-5)


def test_cagrad_with_calpha_zero_is_the_mean_gradient():
    losses, jac = steps_for(4, n=1)[0]
    d = balancers.create("cagrad", 4, calpha=0.0, rescale=0).step(losses, jac)
    np.testing.assert_allclose(d, jac[0].mean(0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("K", [2, 4, 8])
def test_nash_mtl_weights_are_the_bargaining_solution(K):
    """Each step's weights are feasible for the last problem (alpha_i (G alpha)_i >= 1); for 2
    and 4 tasks on these steps every constraint is active, so they are the Nash bargaining
    solution G alpha = 1 / alpha (at 8 tasks some are not). The direction is clipped to norm
    max_norm (torch's clip_grad_norm_), unclipped with max_norm 0."""
    for max_norm in (1.0, 0.0):
        b = balancers.create("nash_mtl", K, max_norm=max_norm)
        for losses, jac in steps_for(K, n=8):
            d = b.step(losses, jac).astype(np.float64)
            g = jac[0].astype(np.float64)
            a = b.weights
            products = a * (g @ g.T @ a)
            assert (products >= 1 - 1e-6).all()
            if K <= 4:
                np.testing.assert_allclose(products, 1.0, rtol=1e-6)
            full = a @ g
            if max_norm == 0.0:
                np.testing.assert_allclose(d, full, rtol=1e-5, atol=1e-6)
            else:
                norm = np.linalg.norm(full)
                want = full * min(1.0, max_norm / (norm + 1e-6))
                np.testing.assert_allclose(d, want, rtol=1e-5, atol=1e-6)
                assert np.linalg.norm(d) <= max_norm * (1 + 1e-6)


def test_nash_mtl_keeps_its_weights_between_updates():
    b = balancers.create("nash_mtl", 3, update_weights_every=3)
    seen = []
    for losses, jac in steps_for(3, n=7):
        b.step(losses, jac)
        seen.append(b.weights.copy())
    np.testing.assert_array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[0], seen[2])
    assert not np.array_equal(seen[2], seen[3])
    np.testing.assert_array_equal(seen[3], seen[5])


def test_nash_mtl_keeps_the_weights_when_the_problem_is_infeasible():
    """Two opposite gradients: no a > 0 has G a > 0, so every problem fails and the weights stay
    at their start (1), as LibMTL keeps them when ECOS reports the problem infeasible."""
    g = np.array([[1.0, 0.0, 0.0], [-2.0, 0.0, 0.0]], np.float32)
    b = balancers.create("nash_mtl", 2, max_norm=0.0)
    d = b.step(np.ones(2, np.float32), g)
    np.testing.assert_array_equal(b.weights, [1.0, 1.0])
    np.testing.assert_allclose(d, g.sum(0))


@pytest.mark.parametrize("K", [2, 3, 5, 8])
def test_upgrad_direction_does_not_conflict(K):
    """The direction has a non-negative inner product with every task gradient, and every weight
    is at least 1/K (each v_i >= e_i / K and all v_i >= 0)."""
    for seed in range(3):
        b = balancers.create("upgrad", K)
        for losses, jac in steps_for(K, n=10, seed=seed):
            d = b.step(losses, jac).astype(np.float64)
            g = jac[0].astype(np.float64)
            scale = np.linalg.norm(g, axis=1) * np.linalg.norm(d)
            assert (g @ d >= -1e-6 * scale).all()
            assert (b.weights >= 1.0 / K - 1e-12).all()


def test_upgrad_without_conflict_is_the_mean_gradient():
    """Gradients with non-negative inner products are their own projections: weights 1/K."""
    rng = np.random.default_rng(3)
    jac = np.abs(rng.normal(size=(4, 20))).astype(np.float32)
    b = balancers.create("upgrad", 4)
    d = b.step(np.ones(4, np.float32), jac)
    np.testing.assert_allclose(b.weights, 0.25, atol=1e-12)
    np.testing.assert_allclose(d, jac.mean(0), rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 10.0])
@pytest.mark.parametrize("K", [2, 4, 8])
def test_fairgrad_weights_solve_its_equation(alpha, K):
    """G w = w^(-1/alpha) with w > 0."""
    b = balancers.create("fairgrad", K, alpha=alpha)
    for losses, jac in steps_for(K, n=5):
        d = b.step(losses, jac)
        g = jac[0].astype(np.float64)
        w = b.weights
        assert (w > 0).all()
        np.testing.assert_allclose(g @ g.T @ w, w ** (-1.0 / alpha), rtol=1e-9)
        np.testing.assert_allclose(d, w @ g, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("K", [2, 4, 8])
def test_modo_weights_stay_on_the_simplex(K):
    """lambda is one projected step of gamma (J0 J1^T lambda + rho lambda) from the last one
    (1/K at the start); the direction combines J2."""
    b = balancers.create("modo", K, gamma=0.05)
    lam = np.full(K, 1.0 / K)
    for losses, jac in steps_for(K, n=10, samples=3):
        d = b.step(losses, jac)
        J = jac.astype(np.float64)
        y = lam - 0.05 * (J[0] @ (J[1].T @ lam) + 0.1 * lam)
        u = np.sort(y)[::-1]
        css = np.cumsum(u)
        rho = np.nonzero(u * np.arange(1, K + 1) > css - 1)[0][-1]
        lam = np.maximum(y - (css[rho] - 1) / (rho + 1), 0)
        w = b.weights
        assert (w >= 0).all() and abs(w.sum() - 1) < 1e-12
        np.testing.assert_allclose(w, lam, atol=1e-9)
        np.testing.assert_allclose(d, w @ J[2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("K", [2, 4, 8])
def test_sdmgrad_weights_stay_on_the_simplex(K):
    """SDMGrad returns no weights (None, as LibMTL); its state w stays on the simplex and the
    direction is (J0^T w + lamda mean_k J0_k) / (1 + lamda)."""
    b = balancers.create("sdmgrad", K)
    for losses, jac in steps_for(K, n=10, samples=3):
        d = b.step(losses, jac)
        assert b.weights is None
        w = b.state_dict()["state"]["state"]
        assert (w >= 0).all() and abs(w.sum() - 1) < 1e-12
        g = jac[0].astype(np.float64)
        np.testing.assert_allclose(d, (w @ g + 0.3 * g.mean(0)) / 1.3, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(HYPER))
def test_defaults_are_libmtls(name):
    assert balancers.hyperparameters(name) == HYPER[name]
    assert balancers.create(name, 2).samples == SAMPLES.get(name, 1)


@pytest.mark.parametrize("name", list(HYPER))
def test_same_seed_same_bits_and_state_dict_continues(name):
    steps = steps_for(3, n=8, samples=SAMPLES.get(name, 1))
    a, b = balancers.create(name, 3), balancers.create(name, 3)
    for s in steps[:4]:
        np.testing.assert_array_equal(a.step(*s), b.step(*s))
    c = balancers.create(name, 3)
    c.load_state_dict(a.state_dict())
    for s in steps[4:]:
        np.testing.assert_array_equal(a.step(*s), c.step(*s))


@pytest.mark.parametrize("name", list(HYPER))
def test_zero_gradients_give_a_finite_direction(name):
    S = SAMPLES.get(name, 1)
    b = balancers.create(name, 3)
    d = b.step(np.ones((S, 3), np.float32), np.zeros((S, 3, 10), np.float32))
    assert np.isfinite(d).all()
    assert b.weights is None or np.isfinite(b.weights).all()


@pytest.mark.parametrize("name", list(HYPER))
def test_parallel_gradients_give_a_finite_direction(name):
    """A rank-one Jacobian (every task gradient a multiple of one vector)."""
    S = SAMPLES.get(name, 1)
    v = np.random.default_rng(0).normal(size=10)
    jac = np.broadcast_to(np.outer([1.0, 2.0, 0.5], v), (S, 3, 10)).astype(np.float32)
    b = balancers.create(name, 3)
    for _ in range(3):
        d = b.step(np.ones((S, 3), np.float32), jac)
        assert np.isfinite(d).all()
        assert d.astype(np.float64) @ v >= 0.0


def test_double_sampling_balancers_need_three_jacobians():
    losses, jac = steps_for(2, n=1)[0]
    with pytest.raises(ValueError, match=r"jacobian: expected shape \(3, 2, P\)"):
        balancers.create("modo", 2).step(np.ones((3, 2)), jac[0])
    with pytest.raises(ValueError, match=r"losses: expected 6 values"):
        balancers.create("sdmgrad", 2).step(losses, np.repeat(jac, 3, axis=0))


@pytest.mark.parametrize(
    "name,hyper,match",
    [
        ("cagrad", {"calpha": -0.1}, "calpha: expected a finite value in \\[0, inf\\)"),
        ("cagrad", {"rescale": 3}, "rescale: expected a finite integer in \\[0, 2\\]"),
        ("cagrad", {"rescale": 0.5}, "rescale: expected an integer"),
        ("nash_mtl", {"update_weights_every": 0}, "update_weights_every: expected"),
        ("nash_mtl", {"optim_niter": 0}, "optim_niter: expected a finite integer in \\[1,"),
        ("nash_mtl", {"max_norm": -1.0}, "max_norm: expected a finite value in \\[0, inf\\)"),
        ("upgrad", {"norm_eps": -1e-4}, "norm_eps: expected"),
        ("upgrad", {"reg_eps": -1e-4}, "reg_eps: expected"),
        ("fairgrad", {"alpha": 0.0}, "alpha: expected a finite value in \\(0, inf\\)"),
        ("fairgrad", {"alpha": -1.0}, "alpha: expected a finite value in \\(0, inf\\)"),
        ("modo", {"gamma": 0.0}, "gamma: expected a finite value in \\(0, inf\\)"),
        ("modo", {"rho": -0.1}, "rho: expected"),
        ("sdmgrad", {"lamda": -0.3}, "lamda: expected"),
        ("sdmgrad", {"niter": 0}, "niter: expected a finite integer in \\[1,"),
        ("sdmgrad", {"niter": 2.5}, "niter: expected an integer"),
        ("cagrad", {"calpha": float("nan")}, "calpha: expected a finite value"),
        ("cagrad", {"c": 0.5}, "c: not a hyperparameter of cagrad"),
    ],
)
def test_bad_hyperparameters_name_them(name, hyper, match):
    with pytest.raises((ValueError, TypeError), match=match):
        balancers.create(name, 3, **hyper)
