"""rmtl.balancers that weight the losses from the losses alone (csrc/balance_scale.c): gls, dwa
and rlw against LibMTL 1.1.5 (CI), famo and stch against LibMTL's repository (gated on
RMTL_LIBMTL_REPO, a path to an exported checkout), and their properties.

LibMTL's GLS returns ``L_k / (K prod L)`` as its weights, STCH returns ones and FAMO returns
None, none of which are the weights of the gradient they leave; rmtl's ``weights`` of a loss
balancer are the gradient's weights (training backpropagates ``sum_k w_k L_k``). For those
three the tests compare ``weights`` with the weights recovered from LibMTL's direction (least
squares over the Jacobian's rows, which are linearly independent here)."""

import numpy as np
import pytest
import test_balancers
from test_balancers import assert_same, drive, steps_for

from rmtl import balancers

libmtl = test_balancers.libmtl  # LibMTL 1.1.5's weighting module (fixture)
libmtl_repo = test_balancers.libmtl_repo  # LibMTL's repository (fixture)


def recovered_weights(direction, jac):
    """The weights w with direction = w @ jac (K, P), by least squares in double."""
    w, *_ = np.linalg.lstsq(jac[0].astype(np.float64).T, direction.astype(np.float64), rcond=None)
    return w


def assert_weights_of_direction(ours, theirs, steps, rtol=1e-5, atol=1e-5):
    """rmtl's weights against those recovered from LibMTL's directions."""
    for i, ((_, w), (d_ref, _), (_, jac)) in enumerate(zip(ours, theirs, steps)):
        np.testing.assert_allclose(
            w, recovered_weights(d_ref, jac), rtol=rtol, atol=atol, err_msg=f"weights, step {i}"
        )


def after_losses(steps, seed=1):
    """Losses of each step's batch at the updated parameters (a little lower, unevenly)."""
    rng = np.random.default_rng(seed)
    return [
        (losses[0] * rng.uniform(0.8, 1.05, losses.shape[1])).astype(np.float32)
        for losses, _ in steps
    ]


# ---------------------------------------------------------------- parity with LibMTL 1.1.5
@pytest.mark.parametrize("K", [2, 4])
def test_gls_matches_libmtl(libmtl, K):
    import libmtl_driver

    steps = steps_for(K)
    theirs = libmtl_driver.run(libmtl.GLS, steps, {})
    ours = drive("gls", steps)
    assert_same(ours, theirs, weights=False)
    assert_weights_of_direction(ours, theirs, steps)


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("T", [2.0, 0.5])
def test_dwa_matches_libmtl(libmtl, K, T):
    import libmtl_driver

    steps, ends = steps_for(K), (4, 9, 14)
    theirs = libmtl_driver.run(libmtl.DWA, steps, {"T": T}, epoch_ends=ends)
    ours = drive("dwa", steps, epoch_ends=ends, T=T)
    assert_same(ours, theirs)
    assert not np.allclose(ours[-1][1], 1.0)  # the last two epochs are weighted


@pytest.mark.parametrize("K", [2, 4])
def test_rlw_matches_libmtl_in_distribution(libmtl, K):
    """LibMTL 1.1.5's RLW (dist Normal, its default) and rmtl's draw from the same law: the
    means of the sorted weights agree within 5 standard errors over 2000 steps each."""
    import libmtl_driver
    import torch

    torch.manual_seed(0)
    n = 2000
    steps = [(np.ones((1, K), np.float32), np.eye(K, 3 * K, dtype=np.float32)[None])] * n
    theirs = np.sort([w for _, w in libmtl_driver.run(libmtl.RLW, steps, {"dist": "Normal"})], 1)
    b = balancers.create("rlw", K, seed=3)
    b.bind(3 * K)
    ours = np.sort([b.step_weights(losses[0]) for losses, _ in steps], 1)
    se = np.sqrt(ours.var(0) / n + theirs.var(0) / n)
    assert np.all(np.abs(ours.mean(0) - theirs.mean(0)) < 5 * se)


# ---------------------------------------------------------------- parity with LibMTL's repository
@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("w_lr,w_gamma", [(0.025, 1e-3), (0.2, 0.05)])
def test_famo_matches_libmtl_repository(libmtl_repo, K, w_lr, w_gamma):
    import libmtl_driver

    steps = steps_for(K)
    after = after_losses(steps)
    hyper = {"FAMO_w_lr": w_lr, "FAMO_w_gamma": w_gamma}
    theirs = libmtl_driver.run(libmtl_repo.FAMO, steps, hyper, after=after)
    ours = drive("famo", steps, after=after, w_lr=w_lr, w_gamma=w_gamma)
    assert_same(ours, theirs)
    assert_weights_of_direction(ours, theirs, steps)
    assert np.ptp(ours[-1][1]) > 0.01  # the logits moved away from uniform


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("mu,warmup", [(1.0, 1), (0.5, 2), (2.0, 0)])
def test_stch_matches_libmtl_repository(libmtl_repo, K, mu, warmup):
    import libmtl_driver

    steps, ends = steps_for(K), (3, 7, 11, 15)
    hyper = {"STCH_mu": mu, "STCH_warmup_epoch": warmup}
    theirs = libmtl_driver.run(libmtl_repo.STCH, steps, hyper, epoch_ends=ends)
    ours = drive("stch", steps, epoch_ends=ends, mu=mu, warmup_epoch=warmup)
    assert_same(ours, theirs, weights=False)  # LibMTL returns ones
    assert_weights_of_direction(ours, theirs, steps)


@pytest.mark.parametrize("name,cls", [("gls", "GLS"), ("dwa", "DWA")])
def test_gls_dwa_match_libmtl_repository(libmtl_repo, name, cls):
    import libmtl_driver

    steps, ends = steps_for(3), (4, 9, 14)
    hyper = {"T": 2.0} if name == "dwa" else {}
    theirs = libmtl_driver.run(getattr(libmtl_repo, cls), steps, hyper, epoch_ends=ends)
    assert_same(drive(name, steps, epoch_ends=ends), theirs, weights=name == "dwa")


# ---------------------------------------------------------------- properties
def test_gls_weights_are_the_geometric_means_gradient():
    losses, jac = steps_for(3, n=1)[0]
    b = balancers.create("gls", 3)
    d = b.step(losses, jac)
    L = losses[0].astype(np.float64)
    w = np.prod(L) ** (1 / 3) / (3 * L)
    np.testing.assert_allclose(b.weights, w, rtol=1e-12)
    np.testing.assert_allclose(d, w @ jac[0], rtol=1e-5, atol=1e-5)


def test_dwa_is_equal_weighting_for_two_epochs_then_softmax_of_ratios():
    b = balancers.create("dwa", 2, T=2.0)
    b.bind(1)
    for means in ([1.0, 2.0], [0.5, 1.8]):
        np.testing.assert_array_equal(b.step_weights(np.array(means, np.float32)), [1.0, 1.0])
        b.end_epoch()
    r = np.array([0.5 / 1.0, 1.8 / 2.0]) / 2.0
    want = 2 * np.exp(r) / np.exp(r).sum()
    w = b.step_weights(np.array([0.3, 0.3], np.float32))
    np.testing.assert_allclose(w, want, rtol=1e-6)
    assert abs(w.sum() - 2.0) < 1e-12


@pytest.mark.parametrize("K", [2, 5])
def test_rlw_weights_are_a_softmax_of_standard_normals(K):
    """Positive, summing to 1; the log-ratios log(w_0 / w_1) = z_0 - z_1 have mean 0 and
    variance 2; each weight's mean is 1/K and the largest weight's mean matches a large Monte
    Carlo sample of softmax(N(0, I)) (2000 steps, 5 standard errors)."""
    n = 2000
    b = balancers.create("rlw", K, seed=7)
    b.bind(4)
    ones = np.ones(K, np.float32)
    w = np.array([b.step_weights(ones) for _ in range(n)])
    assert np.all(w > 0)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-12)
    lr = np.log(w[:, 0] / w[:, 1])
    assert abs(lr.mean()) < 5 * np.sqrt(2.0 / n)
    assert abs(lr.var() - 2.0) < 5 * 2.0 * np.sqrt(2.0 / n)
    se = w.std(0) / np.sqrt(n)
    assert np.all(np.abs(w.mean(0) - 1.0 / K) < 5 * se)
    z = np.random.default_rng(0).normal(size=(200_000, K))
    p = np.exp(z - z.max(1, keepdims=True))
    top = (p / p.sum(1, keepdims=True)).max(1).mean()
    assert abs(w.max(1).mean() - top) < 5 * w.max(1).std() / np.sqrt(n)


def test_rlw_same_seed_same_bits_other_seed_differs():
    steps = steps_for(3, n=5)

    def run(seed):
        return drive("rlw", steps, seed=seed)

    a, b, c = run(11), run(11), run(12)
    for (da, wa), (db, wb) in zip(a, b):
        np.testing.assert_array_equal(da, db)
        np.testing.assert_array_equal(wa, wb)
    assert not any(np.array_equal(wa, wc) for (_, wa), (_, wc) in zip(a, c))
    assert not np.array_equal(a[0][1], a[1][1])  # fresh draws every step
    for (d, w), (_, jac) in zip(a, steps):
        np.testing.assert_allclose(d, w @ jac[0], rtol=1e-5, atol=1e-5)


def test_famo_weights_sum_to_one_and_follow_the_slower_task():
    """Without after_step the logits stay uniform: w is proportional to 1 / L. A task whose
    loss falls less than the others' gains weight after update_w."""
    b = balancers.create("famo", 2, w_gamma=0.0)
    b.bind(1)
    w = b.step_weights(np.array([0.5, 1.0], np.float32))
    np.testing.assert_allclose(w, [2 / 3, 1 / 3], rtol=1e-7)
    for _ in range(5):
        b.step_weights(np.array([1.0, 1.0], np.float32))
        b.after_step(np.array([0.5, 0.99], np.float32))  # task 1 barely improves
    w = b.step_weights(np.array([1.0, 1.0], np.float32))
    assert w[1] > w[0] and abs(w.sum() - 1.0) < 1e-12


def test_famo_after_step_before_any_step_changes_nothing():
    b = balancers.create("famo", 2)
    b.bind(1)
    before = b.state_dict()["state"]["state"].copy()
    b.after_step(np.array([0.5, 0.5], np.float32))
    np.testing.assert_array_equal(b.state_dict()["state"]["state"], before)


def test_stch_warms_up_on_log_losses_then_fixes_the_nadir():
    b = balancers.create("stch", 2, mu=1.0, warmup_epoch=1)
    b.bind(1)
    L = np.array([0.5, 2.0], np.float32)
    np.testing.assert_allclose(b.step_weights(L), 1 / L, rtol=1e-7)  # epoch 0: log losses
    b.end_epoch()
    b.step_weights(np.array([1.0, 4.0], np.float32))  # epoch 1: the nadir's losses
    b.step_weights(np.array([3.0, 2.0], np.float32))
    b.end_epoch()
    nadir = np.array([2.0, 3.0])
    for L in ([1.0, 1.5], [0.4, 0.3]):
        L = np.array(L, np.float32)
        r = L / nadir
        s = r / r.sum()  # softmax of log(L / nadir) with mu = 1
        np.testing.assert_allclose(b.step_weights(L), 2 * s / L, rtol=1e-7)


@pytest.mark.parametrize(
    "name,hyper,after",
    [("famo", {}, True), ("stch", {"warmup_epoch": 1}, False), ("dwa", {}, False)],
)
def test_state_dict_continues_bit_for_bit(name, hyper, after):
    steps, ends = steps_for(2, n=12), (2, 5, 8)
    late = after_losses(steps)
    a = balancers.create(name, 2, **hyper)
    b = balancers.create(name, 2, **hyper)
    for i, s in enumerate(steps):
        if i == 6:
            b.load_state_dict(a.state_dict())
        da = a.step(*s)
        if i >= 6:
            np.testing.assert_array_equal(da, b.step(*s))
        for x in (a, b) if i >= 6 else (a,):
            if after:
                x.after_step(late[i])
            if i in ends:
                x.end_epoch()


@pytest.mark.parametrize("name", ["gls", "famo", "stch"])
def test_losses_outside_the_domain_raise(name):
    losses, jac = steps_for(2, n=1)[0]
    b = balancers.create(name, 2)
    bad = losses.copy()
    bad[0, 1] = -0.5 if name != "gls" else 0.0
    with pytest.raises(ValueError, match="losses"):
        b.step(bad, jac)
    assert b.steps == 0


@pytest.mark.parametrize(
    "name,hyper,match",
    [
        ("dwa", {"T": 0.0}, "T: expected a finite value in \\(0, inf\\) for dwa, got 0"),
        ("dwa", {"T": -1.0}, "T: expected"),
        ("famo", {"w_lr": -0.1}, "w_lr: expected a finite value in \\[0, inf\\) for famo"),
        ("famo", {"w_gamma": -1e-3}, "w_gamma: expected"),
        ("stch", {"mu": 0.0}, "mu: expected a finite value in \\(0, inf\\) for stch"),
        ("stch", {"mu": -1.0}, "mu: expected"),
        ("stch", {"warmup_epoch": -1}, "warmup_epoch: expected a finite integer in \\[0, inf\\)"),
        ("stch", {"warmup_epoch": 1.5}, "warmup_epoch: expected an integer for stch"),
        ("rlw", {"dist": "Normal"}, "dist: not a hyperparameter of rlw"),
    ],
)
def test_bad_hyperparameters_name_the_argument(name, hyper, match):
    with pytest.raises((ValueError, TypeError), match=match):
        balancers.create(name, 2, **hyper)


def test_defaults_are_libmtls():
    assert balancers.hyperparameters("dwa") == {"T": 2.0}
    assert balancers.hyperparameters("famo") == {"w_lr": 0.025, "w_gamma": 1e-3}
    assert balancers.hyperparameters("stch") == {"mu": 1.0, "warmup_epoch": 4}
    assert balancers.hyperparameters("gls") == balancers.hyperparameters("rlw") == {}
