"""rmtl.balancers that project or re-combine the task gradients (csrc/balance_project.c): mgda,
pcgrad, gradvac and graddrop against LibMTL 1.1.5 (CI), gradvac's groups, aligned_mtl and moco
against LibMTL's repository (gated on RMTL_LIBMTL_REPO, a path to an exported checkout), mgda,
pcgrad, aligned_mtl and graddrop against torchjd 0.18's aggregators, and their properties.

Randomness: pcgrad and gradvac shuffle the task order and graddrop draws one uniform per
column, all from rmtl's counter-based stream (rmtl_bal_uniform). :func:`bal_uniform` replays
that stream in Python, so the reference side can be given the very same orders
(``random.shuffle`` replaced by :func:`replay_shuffle`) and draws (``torch.rand_like`` /
``torch.rand``) and compared exactly; with two tasks pcgrad's order cannot matter and the
plain LibMTL run is compared too.

Precision: LibMTL computes in float32. MGDA's Frank-Wolfe solver (K >= 3) stops on a change
below 1e-5 in L1 after steps clamped to 0.001 of the way, so float32 rounding moves its stopping
point: against LibMTL's float32 run its weights agree to 2e-3 (stated in the test); the same
LibMTL code run in float64 (torch's default dtype float64) agrees to 1e-9, which is the check of
the algorithm.

Scale conventions against torchjd (LibMTL's is rmtl's: the direction of the summed loss):
torchjd's MGDA and PCGrad have the same scale (simplex weights; the sum of the projected
gradients); torchjd's AlignedMTL with its default mean preference returns ``B 1 / K`` where
LibMTL returns ``B 1``, so rmtl's aligned_mtl is K times torchjd's; GradDrop is the same sum
(torchjd has no 1e-7 in the sign purity's denominator)."""

import contextlib
import os
import random

import numpy as np
import pytest
import test_balancers
from conftest import require, require_torch
from test_balancers import assert_same, drive, steps_for

from rmtl import balancers

REQUIRED = os.environ.get("RMTL_REQUIRE_TORCH") == "1"

libmtl = test_balancers.libmtl  # LibMTL 1.1.5's weighting module (fixture)
libmtl_repo = test_balancers.libmtl_repo  # LibMTL's repository (fixture)

M64 = (1 << 64) - 1


# ---------------------------------------------------------------- rmtl's random stream
def _mix(z):
    """SplitMix64's finaliser (csrc/rng.h rmtl_rng_mix)."""
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def bal_uniform(seed, step, index):
    """rmtl_bal_uniform of a balancer with ``seed`` at step ``step`` (steps taken before it)."""
    stream = 0x42414C41 ^ ((step << 32) & M64)
    key = _mix((seed & M64) ^ _mix((stream * 0xD1B54A32D192ED03 + 1) & M64))
    return (_mix(key ^ _mix((index + 0xA0761D6478BD642F) & M64)) >> 11) * 2.0**-53


def fisher_yates(items, seed, step, base):
    """rmtl's shuffle (Python's random.shuffle with rmtl's draws at base + t), in place."""
    for t in range(len(items) - 1, 0, -1):
        j = int(bal_uniform(seed, step, base + t) * (t + 1))
        items[t], items[j] = items[j], items[t]


def replay_shuffle(K, seed=0):
    """A stand-in for ``random.shuffle`` that gives LibMTL's PCGrad and GradVac rmtl's task
    orders: they shuffle once per task i and step, in that order; rmtl draws task i's order at
    indices i K + t of the step's stream."""
    calls = [0]

    def shuffle(items):
        step, i = divmod(calls[0], K)
        calls[0] += 1
        fisher_yates(items, seed, step, i * K)

    return shuffle


def replay_orders(K, n_steps, seed=0):
    """rmtl's orders of all K tasks for every task i and step (pcgrad's), in call order."""
    out = []
    for step in range(n_steps):
        for i in range(K):
            order = list(range(K))
            fisher_yates(order, seed, step, i * K)
            out.append(order)
    return out


def drive_seg(name, steps, segments=None, seed=0, **hyper):
    """drive() with parameter segments."""
    K = steps[0][1].shape[-2]
    b = balancers.create(name, K, seed=seed, segments=segments, **hyper)
    return [(b.step(losses, jac), b.weights) for losses, jac in steps]


# ---------------------------------------------------------------- the LibMTL side
@contextlib.contextmanager
def default_dtype(dtype):
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def libmtl_run(cls, steps, hyper, *, double=True, segments=None, rep=False):
    """LibMTL's directions and returned weights for ``steps`` ((losses (1, K), jacobian
    (1, K, P))), like libmtl_driver.run but: in float64 when ``double`` (torch's default dtype,
    so LibMTL's own buffers are float64 too), with the shared parameters split into one leaf
    module per segment (LibMTL's parameter tensors and layers, for GradVac's groups), and with
    ``rep`` LibMTL's representation gradients (rep_grad): the representation is one row of ones
    at the parameters plus one, and task k's loss is c_k + g_k . rep."""
    import libmtl_driver
    import torch

    dtype = torch.float64 if double else torch.float32
    _, K, P = steps[0][1].shape
    with default_dtype(dtype):
        h = libmtl_driver.host(cls, K, P, epochs=1)
        encoder = torch.nn.Module()
        encoder.parts = torch.nn.ModuleList()
        for n in [P] if segments is None else segments:
            part = torch.nn.Module()
            part.w = torch.nn.Parameter(torch.zeros(int(n)))
            encoder.parts.append(part)
        h.encoder = encoder
        params = [part.w for part in encoder.parts]
        out = []
        for losses, jac in steps:
            h.zero_grad_share_params()
            c = torch.tensor(np.asarray(losses[0], np.float32), dtype=dtype)
            g = torch.tensor(np.asarray(jac[0], np.float32), dtype=dtype)
            theta = torch.cat(params)
            if rep:
                h.rep_grad = True
                h.rep = (theta + 1.0).unsqueeze(0)
                h.rep_tasks = {t: h.rep.detach().clone().requires_grad_(True) for t in h.task_name}
                loss = torch.stack(
                    [c[k] + (g[k] * h.rep_tasks[t][0]).sum() for k, t in enumerate(h.task_name)]
                )
            else:
                loss = c + g @ theta
            w = h.backward(loss, **hyper)
            d = torch.cat([p.grad.detach().reshape(-1) for p in params])
            out.append((d.numpy().copy(), None if w is None else np.asarray(w, np.float64)))
    return out


@pytest.fixture
def replayed(monkeypatch):
    """random.shuffle replaced by rmtl's orders: call with K (and the seed)."""

    def use(K, seed=0):
        monkeypatch.setattr(random, "shuffle", replay_shuffle(K, seed))

    return use


def pairs_with_cosines(cosines, P=37, seed=3):
    """Two-task steps whose gradients (random directions and norms) have the given cosines."""
    rng = np.random.default_rng(seed)
    out = []
    for cos in cosines:
        q, _ = np.linalg.qr(rng.normal(size=(P, 2)))
        g0 = q[:, 0] * rng.uniform(0.5, 3.0)
        g1 = (cos * q[:, 0] + np.sqrt(1 - cos**2) * q[:, 1]) * rng.uniform(0.5, 3.0)
        losses = rng.uniform(0.2, 1.5, (1, 2)).astype(np.float32)
        out.append((losses, np.stack([g0, g1])[None].astype(np.float32)))
    return out


def conflicting_pairs(n=20):
    """Two-task steps whose gradients' cosine falls every step (-0.1 down to -0.86): GradVac's
    target (the EMA of past cosines) always lies above the new cosine, so LibMTL 1.1.5 (which
    moves the target only then) and the repository (always) take the same steps."""
    return pairs_with_cosines([-0.1 - 0.04 * i for i in range(n)])


# ---------------------------------------------------------------- parity with LibMTL 1.1.5
GN = ["none", "l2", "loss", "loss+"]


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("gn", GN)
def test_mgda_matches_libmtl(libmtl, gn, K):
    """LibMTL's float32 run; K = 4 at the float32 solver's tolerance (module docstring)."""
    import libmtl_driver

    steps = steps_for(K)
    theirs = libmtl_driver.run(libmtl.MGDA, steps, {"mgda_gn": gn})
    tol = 1e-5 if K == 2 else 2e-3
    assert_same(drive("mgda", steps, gn=gn), theirs, atol=tol, rtol=tol)


@pytest.mark.parametrize("K", [2, 4, 8])
@pytest.mark.parametrize("gn", GN)
def test_mgda_matches_libmtl_in_double(libmtl, gn, K):
    """The same LibMTL code in float64: the solver's every step and its stopping rule."""
    steps = steps_for(K)
    theirs = libmtl_run(libmtl.MGDA, steps, {"mgda_gn": gn})
    assert_same(drive("mgda", steps, gn=gn), theirs, atol=1e-6, rtol=1e-6)
    for (_, w), (_, w_ref) in zip(drive("mgda", steps, gn=gn), theirs):
        np.testing.assert_allclose(w, w_ref, rtol=1e-9, atol=1e-9)


def test_pcgrad_matches_libmtl_two_tasks(libmtl):
    """With two tasks the order cannot matter: LibMTL's own random order."""
    import libmtl_driver

    steps = steps_for(2)
    theirs = libmtl_driver.run(libmtl.PCGrad, steps, {})
    assert_same(drive("pcgrad", steps), theirs)


@pytest.mark.parametrize("seed", [0, 7])
def test_pcgrad_matches_libmtl_in_rmtls_order(libmtl, replayed, seed):
    import libmtl_driver

    steps = steps_for(4)
    replayed(4, seed)
    theirs = libmtl_driver.run(libmtl.PCGrad, steps, {})
    assert_same(drive("pcgrad", steps, seed=seed), theirs)


@pytest.mark.parametrize("beta", [0.5, 0.2])
def test_gradvac_matches_libmtl_two_tasks(libmtl, beta):
    """On falling cosines LibMTL 1.1.5's target rule equals the repository's (rmtl's); two tasks
    have one order. 1.1.5 returns the weights of its direction, as rmtl does with one group."""
    import libmtl_driver

    steps = conflicting_pairs()
    theirs = libmtl_driver.run(libmtl.GradVac, steps, {"beta": beta})
    assert_same(drive("gradvac", steps, beta=beta), theirs)


def test_gradvac_differs_from_libmtl_115_where_its_target_stays(libmtl):
    """The one documented deviation: 1.1.5 moves the target only on a conflict below it, so on
    agreeing gradients (cosine 0.8) its target stays 0 while rmtl's (the paper's and the
    repository's) rises to 0.4 and then corrects the next pair (cosine 0.2) towards it."""
    import libmtl_driver

    steps = pairs_with_cosines([0.8, 0.2])
    theirs = libmtl_driver.run(libmtl.GradVac, steps, {"beta": 0.5})
    ours = drive("gradvac", steps)
    np.testing.assert_allclose(ours[0][0], theirs[0][0], rtol=1e-5, atol=1e-5)
    assert np.abs(ours[1][0] - theirs[1][0]).max() > 1e-3


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_graddrop_matches_libmtl(libmtl, monkeypatch, K, leak):
    """LibMTL's GradDrop on representation gradients (one row of ones) with rmtl's draws."""
    import torch

    steps = steps_for(K)
    calls = [0]

    def rand_like(x, **kw):
        step = calls[0]
        calls[0] += 1
        u = [bal_uniform(0, step, j) for j in range(x.numel())]
        return torch.tensor(u, dtype=x.dtype).reshape(x.shape)

    monkeypatch.setattr(torch, "rand_like", rand_like)
    theirs = libmtl_run(libmtl.GradDrop, steps, {"leak": leak}, double=False, rep=True)
    assert_same(drive("graddrop", steps, leak=leak), theirs)


# ---------------------------------------------------------------- parity with LibMTL's repository
@pytest.mark.parametrize("K", [2, 4])
def test_mgda_and_pcgrad_match_libmtl_repo(libmtl_repo, replayed, K):
    steps = steps_for(K)
    theirs = libmtl_run(libmtl_repo.MGDA, steps, {"mgda_gn": "l2"})
    assert_same(drive("mgda", steps, gn="l2"), theirs, atol=1e-6, rtol=1e-6)
    replayed(K)
    theirs = libmtl_run(libmtl_repo.PCGrad, steps, {})
    assert_same(drive("pcgrad", steps), theirs)


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("group_type", [0, 1, 2])
def test_gradvac_matches_libmtl_repo(libmtl_repo, replayed, K, group_type):
    """Groups: the parameter tensors (one leaf module each, so LibMTL's layers are the tensors
    too). The repository returns ones as weights; rmtl's are its direction's (one group) or
    None (several), checked against the direction instead."""
    steps, segments = steps_for(K), [10, 20, 7]
    replayed(K)
    hyper = {"GradVac_beta": 0.5, "GradVac_group_type": group_type}
    theirs = libmtl_run(libmtl_repo.GradVac, steps, hyper, segments=segments)
    ours = drive_seg("gradvac", steps, segments=segments, group_type=group_type)
    assert_same(ours, theirs, atol=1e-6, rtol=1e-6, weights=False)
    for (d, w), (_, jac) in zip(ours, steps):
        if group_type == 0:
            np.testing.assert_allclose(w @ jac[0], d, rtol=1e-5, atol=1e-5)
        else:
            assert w is None


@pytest.mark.parametrize("K", [2, 4])
def test_aligned_mtl_matches_libmtl_repo(libmtl_repo, monkeypatch, K):
    """The repository calls torch.symeig (removed from torch): torch.linalg.eigh stands in."""
    import torch
    from libmtl_driver import symeig

    monkeypatch.setattr(torch, "symeig", symeig, raising=False)
    steps = steps_for(K)
    theirs = libmtl_run(libmtl_repo.Aligned_MTL, steps, {})
    assert_same(drive("aligned_mtl", steps), theirs, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize(
    "hyper",
    [{}, {"beta": 0.9, "beta_sigma": 0.2, "gamma": 0.5, "gamma_sigma": 0.0, "rho": 0.3}],
)
def test_moco_matches_libmtl_repo(libmtl_repo, K, hyper):
    import libmtl_driver

    full = {**balancers.hyperparameters("moco"), **hyper}
    theirs_hyper = {f"MoCo_{k}": v for k, v in full.items()}
    steps = steps_for(K)
    theirs = libmtl_driver.run(libmtl_repo.MoCo, steps, theirs_hyper)
    assert_same(drive("moco", steps, **hyper), theirs)
    theirs = libmtl_run(libmtl_repo.MoCo, steps, theirs_hyper)
    assert_same(drive("moco", steps, **hyper), theirs, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- torchjd 0.18
@pytest.fixture(scope="module")
def torchjd():
    require_torch()
    return require("torchjd.aggregation", REQUIRED, "RMTL_REQUIRE_TORCH=1 (pip install torchjd)")


def random_jacobians(K, n=10, P=37, seed=0):
    """Jacobians with conflicting rows of unequal scales (float32, (1, K, P))."""
    return [jac for _, jac in steps_for(K, P=P, n=n, seed=seed)]


def step_each(name, jacs, **hyper):
    b = balancers.create(name, jacs[0].shape[1], **hyper)
    return [b.step(np.ones((1, jacs[0].shape[1]), np.float32), jac) for jac in jacs]


@pytest.mark.parametrize("K", [2, 3, 4])
def test_mgda_matches_torchjd(torchjd, K):
    """Both find the min-norm point of the gradients' convex hull, LibMTL's way and torchjd's
    (plain Frank-Wolfe from the centre, here 2000 steps): same point, same scale. Two tasks have
    a closed form (to 1e-5); for more, torchjd's Frank-Wolfe converges as 1/steps, so the
    comparison is to 1% of the direction's largest element (the SLSQP check in the properties
    is the tight one). LibMTL's clamps (0.999 / 0.001) would leave 0.001 of the other gradient
    where the optimum is a corner; these Jacobians have interior optima."""
    import torch

    agg = torchjd.MGDA(epsilon=1e-9, max_iters=2000)
    for jac in random_jacobians(K):
        ours = step_each("mgda", [jac])[0]
        theirs = agg(torch.tensor(jac[0], dtype=torch.float64)).numpy()
        tol = 1e-5 if K == 2 else 1e-2
        np.testing.assert_allclose(ours, theirs, atol=tol * np.abs(theirs).max())


@pytest.mark.parametrize("K", [2, 4])
def test_pcgrad_matches_torchjd_in_rmtls_order(torchjd, monkeypatch, K):
    """torchjd draws a permutation per task with torch.randperm and skips the task itself; given
    rmtl's orders it gives the same direction (the same scale: the sum of projected
    gradients)."""
    import torch

    jacs = random_jacobians(K)
    orders = iter(replay_orders(K, len(jacs)))
    monkeypatch.setattr(torch, "randperm", lambda n, **kw: torch.tensor(next(orders)))
    agg = torchjd.PCGrad()
    ours = drive("pcgrad", [(np.ones((1, K), np.float32), jac) for jac in jacs])
    for (d, _), jac in zip(ours, jacs):
        theirs = agg(torch.tensor(jac[0], dtype=torch.float64)).numpy()
        np.testing.assert_allclose(d, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("K", [2, 3, 4])
def test_aligned_mtl_is_k_times_torchjd(torchjd, K):
    """LibMTL's alpha = B 1, torchjd's (mean preference) B 1 / K."""
    import torch

    agg = torchjd.AlignedMTL()
    jacs = random_jacobians(K)
    for d, jac in zip(step_each("aligned_mtl", jacs), jacs):
        theirs = agg(torch.tensor(jac[0], dtype=torch.float64)).numpy()
        np.testing.assert_allclose(d, K * theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("leak", [0.0, 0.25])
def test_graddrop_matches_torchjd(torchjd, monkeypatch, K, leak):
    import torch

    jacs = random_jacobians(K)
    calls = [0]

    def rand(shape, dtype=None, device=None):
        step = calls[0]
        calls[0] += 1
        return torch.tensor([bal_uniform(0, step, j) for j in range(shape[0])], dtype=dtype)

    monkeypatch.setattr(torch, "rand", rand)
    agg = torchjd.GradDrop(leak=torch.full((K,), leak, dtype=torch.float64))
    ours = drive("graddrop", [(np.ones((1, K), np.float32), jac) for jac in jacs], leak=leak)
    for (d, _), jac in zip(ours, jacs):
        theirs = agg(torch.tensor(jac[0], dtype=torch.float64)).numpy()
        np.testing.assert_allclose(d, theirs, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- properties
NAMES = ["mgda", "pcgrad", "gradvac", "graddrop", "aligned_mtl", "moco"]


def test_listed_with_libmtls_defaults():
    assert set(NAMES) <= set(balancers.names())
    assert balancers.hyperparameters("mgda") == {"gn": "none"}
    assert balancers.hyperparameters("pcgrad") == {}
    assert balancers.hyperparameters("gradvac") == {"beta": 0.5, "group_type": 0}
    assert balancers.hyperparameters("graddrop") == {"leak": 0.0}
    assert balancers.hyperparameters("aligned_mtl") == {}
    assert balancers.hyperparameters("moco") == {
        "beta": 0.5,
        "beta_sigma": 0.5,
        "gamma": 0.1,
        "gamma_sigma": 0.5,
        "rho": 0.0,
    }
    for name in NAMES:
        assert balancers.create(name, 2).family == "gradients"


@pytest.mark.parametrize("K", [2, 3, 5, 8])
@pytest.mark.parametrize("gn", GN)
def test_mgda_weights_are_min_norm(K, gn):
    """Weights on the simplex; the direction (of the normalised gradients) is their min-norm
    point to the solver's tolerance: its squared norm within 1% of the minimum (scipy's SLSQP
    on the simplex, to 1e-15). LibMTL's Frank-Wolfe steps, clamped to 0.001 of the way, can stop
    short of it (0.4% in one of these cases, as LibMTL's own code in float64 does)."""
    from scipy.optimize import minimize

    for losses, jac in steps_for(K, n=5):
        b = balancers.create("mgda", K, gn=gn)
        d = b.step(losses, jac).astype(np.float64)
        w = b.weights
        assert w.min() >= 0.0 and abs(w.sum() - 1.0) < 1e-9
        g = jac[0].astype(np.float64)
        norms = {
            "none": np.ones(K),
            "l2": np.linalg.norm(g, axis=1),
            "loss": losses[0].astype(np.float64),
            "loss+": losses[0] * np.linalg.norm(g, axis=1),
        }[gn]
        rows = g / norms[:, None]
        np.testing.assert_allclose(d, w @ rows, rtol=1e-5, atol=1e-5)
        G = rows @ rows.T
        best = minimize(
            lambda v, G=G: v @ G @ v,
            np.full(K, 1.0 / K),
            jac=lambda v, G=G: 2 * G @ v,
            bounds=[(0.0, 1.0)] * K,
            constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1.0}],
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 1000},
        ).x
        assert best @ G @ best * (1 - 1e-6) <= d @ d <= best @ G @ best * 1.01


def test_mgda_l2_ignores_gradient_scales():
    losses, jac = steps_for(3, n=1)[0]
    scaled = jac * np.array([1.0, 10.0, 0.1], np.float32)[None, :, None]
    a = balancers.create("mgda", 3, gn="l2").step(losses, jac)
    b = balancers.create("mgda", 3, gn="l2").step(losses, scaled)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mgda_zero_loss_normaliser_raises_and_zero_gradient_is_kept():
    losses, jac = steps_for(2, n=1)[0]
    zero_loss = losses.copy()
    zero_loss[0, 1] = 0.0
    with pytest.raises(ValueError, match="NaN or infinity"):
        balancers.create("mgda", 2, gn="loss").step(zero_loss, jac)
    zero_grad = jac.copy()
    zero_grad[0, 1] = 0.0
    d = balancers.create("mgda", 2, gn="l2").step(losses, zero_grad)
    assert np.isfinite(d).all()


def test_pcgrad_leaves_no_conflict_for_two_tasks():
    """Two conflicting gradients: each loses its component along the other, so the direction
    agrees with both; agreeing gradients are summed untouched."""
    for losses, jac in conflicting_pairs(n=5):
        b = balancers.create("pcgrad", 2)
        d = b.step(losses, jac).astype(np.float64)
        g = jac[0].astype(np.float64)
        assert (g @ d).min() >= -1e-5
        np.testing.assert_allclose(d, b.weights @ g, rtol=1e-5, atol=1e-5)
    g = np.abs(steps_for(3, n=1)[0][1])
    b = balancers.create("pcgrad", 3)
    np.testing.assert_allclose(b.step(np.ones((1, 3), np.float32), g), g[0].sum(0), rtol=1e-6)
    np.testing.assert_array_equal(b.weights, np.ones(3))


def test_pcgrad_in_a_fixed_order_is_the_papers_projection():
    """The direction for K = 4 equals PCGrad's projections written out in numpy, in the orders
    rmtl draws (replayed here)."""
    steps = steps_for(4, n=5)
    orders = iter(replay_orders(4, len(steps)))
    for (d, w), (_, jac) in zip(drive("pcgrad", steps), steps):
        g = jac[0].astype(np.float64)
        total = np.zeros(g.shape[1])
        for i in range(4):
            pc = g[i].copy()
            for j in next(orders):
                dot = pc @ g[j]
                if dot < 0:
                    pc -= dot / (g[j] @ g[j]) * g[j]
            total += pc
        np.testing.assert_allclose(d, total, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(d, w @ g, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["pcgrad", "gradvac", "graddrop"])
def test_random_methods_same_seed_same_bits(name):
    rng = np.random.default_rng(1)
    steps = [
        (np.ones((1, 4), np.float32), rng.normal(size=(1, 4, 37)).astype(np.float32))
        for _ in range(6)
    ]
    a = drive(name, steps, seed=3)
    b = drive(name, steps, seed=3)
    for (da, _), (db, _) in zip(a, b):
        np.testing.assert_array_equal(da, db)
    c = drive(name, steps, seed=4)
    assert any(not np.array_equal(da, dc) for (da, _), (dc, _) in zip(a, c))


def test_gradvac_first_step_is_pcgrad_for_two_tasks():
    """Targets start at 0: a conflict is corrected to orthogonality, exactly PCGrad's
    projection (up to GradVac's 1e-8 terms)."""
    steps = conflicting_pairs(n=1)
    np.testing.assert_allclose(
        drive("gradvac", steps)[0][0], drive("pcgrad", steps)[0][0], rtol=1e-5, atol=1e-5
    )


def test_gradvac_raises_cosine_to_its_target():
    """Two tasks, the same pair of gradients every step (cosine c < 0): the target is the EMA of
    c (0, c/2, 3c/4, ...), and each step's corrected g_0 + w g_1 (w = weight of task 1 minus
    1) has cosine with g_1 equal to the target before the step."""
    losses, jac = conflicting_pairs(n=1)[0]
    g = jac[0].astype(np.float64)

    def cosine(x, y):
        return x @ y / np.linalg.norm(x) / np.linalg.norm(y)

    c = cosine(g[0], g[1])
    b = balancers.create("gradvac", 2, beta=0.5)
    target = 0.0
    for _ in range(4):
        b.step(losses, jac)
        pc0 = g[0] + (b.weights[1] - 1.0) * g[1]
        np.testing.assert_allclose(cosine(pc0, g[1]), target, atol=1e-6)
        target = 0.5 * target + 0.5 * c
        targets = b.state_dict()["state"]["state"].reshape(2, 2)  # (K, K) with one group
        np.testing.assert_allclose(targets[0, 1], target, rtol=1e-6)


def test_gradvac_groups_need_segments_and_fall_back_to_one():
    steps = steps_for(3, n=3)
    one = drive_seg("gradvac", steps, group_type=0)
    grouped_single = drive_seg("gradvac", steps, group_type=2)  # no segments: one tensor
    for (a, _), (b, _) in zip(one, grouped_single):
        np.testing.assert_array_equal(a, b)
    several = drive_seg("gradvac", steps, segments=[30, 7], group_type=2)
    assert several[0][1] is None


def test_graddrop_keeps_one_sign_per_element():
    """With leak 0 every element of the direction is the sum of the positive or of the negative
    task gradients (or 0), chosen by rmtl's draw against the sign purity (replayed here); leak
    1 passes everything."""
    steps = steps_for(4, n=3)
    for step, ((d, w), (_, jac)) in enumerate(zip(drive("graddrop", steps), steps)):
        g = jac[0].astype(np.float64)
        pos, neg = np.where(g > 0, g, 0).sum(0), np.where(g < 0, g, 0).sum(0)
        purity = 0.5 * (1 + g.sum(0) / (np.abs(g).sum(0) + 1e-7))
        u = np.array([bal_uniform(0, step, j) for j in range(g.shape[1])])
        np.testing.assert_allclose(d, np.where(purity > u, pos, neg), rtol=1e-5, atol=1e-6)
        assert w is None
    losses, jac = steps[0]
    np.testing.assert_allclose(
        balancers.create("graddrop", 4, leak=1.0).step(losses, jac),
        jac[0].sum(0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_graddrop_expectation_over_seeds():
    """E[direction] = P pos + (1 - P) neg per element; the mean over 2000 seeds within 5
    standard errors."""
    losses, jac = steps_for(3, n=1, P=12)[0]
    g = jac[0].astype(np.float64)
    pos, neg = np.where(g > 0, g, 0).sum(0), np.where(g < 0, g, 0).sum(0)
    purity = 0.5 * (1 + g.sum(0) / (np.abs(g).sum(0) + 1e-7))
    runs = np.array(
        [balancers.create("graddrop", 3, seed=s).step(losses, jac) for s in range(2000)],
        np.float64,
    )
    mean = purity * pos + (1 - purity) * neg
    se = np.sqrt(purity * (1 - purity)) * np.abs(pos - neg) / np.sqrt(len(runs))
    assert (np.abs(runs.mean(0) - mean) <= 5 * se + 1e-6 * np.abs(mean) + 1e-7).all()


@pytest.mark.parametrize("K", [2, 3, 4, 8])
def test_aligned_mtl_aligns_the_gradients(K):
    """d = sqrt(l_min) J^T (J J^T)^(-1/2) 1: |d|^2 = K l_min and J d = sqrt(l_min) M^(1/2) 1 with
    M = J J^T (numpy's eigh as the reference)."""
    for losses, jac in steps_for(K, n=4, P=max(37, 3 * K)):
        b = balancers.create("aligned_mtl", K)
        d = b.step(losses, jac).astype(np.float64)
        g = jac[0].astype(np.float64)
        lam, V = np.linalg.eigh(g @ g.T)
        root = V @ np.diag(np.sqrt(lam)) @ V.T
        np.testing.assert_allclose(d @ d, K * lam.min(), rtol=1e-4)
        np.testing.assert_allclose(g @ d, np.sqrt(lam.min()) * root.sum(1), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(d, b.weights @ g, rtol=1e-5, atol=1e-5)


def test_aligned_mtl_drops_a_dependent_gradient():
    """A gradient that repeats another leaves rank K - 1: the kept eigenpairs are the nonzero
    ones, the result stays finite; all-zero gradients give weights 1 and a zero direction."""
    losses, jac = steps_for(3, n=1)[0]
    dup = jac.copy()
    dup[0, 2] = dup[0, 1]
    d = balancers.create("aligned_mtl", 3).step(losses, dup)
    assert np.isfinite(d).all() and np.abs(d).max() > 0
    b = balancers.create("aligned_mtl", 3)
    np.testing.assert_array_equal(b.step(losses, np.zeros_like(jac)), 0.0)
    np.testing.assert_array_equal(b.weights, np.ones(3))


def test_moco_tracks_rescaled_gradients():
    """beta 1 without decay: y is this step's gradients rescaled to their losses; gamma 0 keeps
    lambda at 1/K, so the direction is their mean; weights are a softmax."""
    for losses, jac in steps_for(3, n=3):
        b = balancers.create("moco", 3, beta=1.0, beta_sigma=0.0, gamma=0.0)
        d = b.step(losses, jac)
        g = jac[0].astype(np.float64)
        h = losses[0][:, None] * g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-8)
        np.testing.assert_allclose(d, h.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.weights, np.full(3, 1 / 3), rtol=1e-12)
    b = balancers.create("moco", 4)
    for losses, jac in steps_for(4, n=5):
        b.step(losses, jac)
        assert b.weights.min() > 0 and abs(b.weights.sum() - 1) < 1e-12


@pytest.mark.parametrize("name,hyper", [("gradvac", {}), ("moco", {}), ("pcgrad", {})])
def test_state_dict_continues_bit_for_bit(name, hyper):
    steps = steps_for(3, n=6)
    a = balancers.create(name, 3, seed=2, **hyper)
    for s in steps[:3]:
        a.step(*s)
    b = balancers.create(name, 3, seed=2, **hyper)
    b.load_state_dict(a.state_dict())
    for s in steps[3:]:
        np.testing.assert_array_equal(a.step(*s), b.step(*s))


@pytest.mark.parametrize(
    "name,hyper,match",
    [
        ("mgda", {"gn": "l3"}, "gn: expected one of"),
        ("mgda", {"gn": 1}, "gn: expected one of"),
        ("gradvac", {"beta": 1.5}, r"beta: expected a finite value in \[0, 1\] for gradvac"),
        ("gradvac", {"beta": -0.1}, "beta: expected a finite value in"),
        ("gradvac", {"group_type": 3}, "group_type: expected a finite integer in"),
        ("gradvac", {"group_type": 0.5}, "group_type: expected an integer"),
        ("graddrop", {"leak": 1.5}, r"leak: expected a finite value in \[0, 1\] for graddrop"),
        ("graddrop", {"leak": -1.0}, "leak: expected a finite value in"),
        ("moco", {"beta": 2.0}, r"beta: expected a finite value in \[0, 1\] for moco"),
        ("moco", {"gamma": -0.1}, "gamma: expected a finite value in"),
        ("moco", {"rho": float("nan")}, "rho: expected a finite value in"),
        ("moco", {"beta_sigma": -1.0}, "beta_sigma: expected a finite value in"),
        ("pcgrad", {"beta": 0.5}, "beta: not a hyperparameter of pcgrad"),
    ],
)
def test_bad_hyperparameters_name_the_argument(name, hyper, match):
    with pytest.raises((ValueError, TypeError), match=match):
        balancers.create(name, 2, **hyper)


@pytest.mark.parametrize("name", NAMES)
def test_degenerate_jacobians_give_finite_directions(name):
    """Zero gradients, repeated gradients and the largest task count stay finite; a zero
    Jacobian gives a zero direction (moco: its tracked gradients decay towards zero)."""
    losses, jac = steps_for(8, n=1)[0]
    b = balancers.create(name, 8)
    zero = np.zeros_like(jac)
    repeated = np.repeat(jac[:, :1], 8, axis=1)
    with_zero_row = jac.copy()
    with_zero_row[0, 3] = 0.0
    for j in (jac, repeated, with_zero_row, zero):
        d = b.step(losses, j)
        assert np.isfinite(d).all()
        if b.weights is not None:
            assert np.isfinite(b.weights).all()
    if name != "moco":
        np.testing.assert_array_equal(d, 0.0)
