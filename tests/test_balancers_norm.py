"""rmtl.balancers that weight the task gradients by their norms (csrc/balance_norm.c): gradnorm
and imtl against LibMTL 1.1.5 (CI), imtl's IMTL-G direction against torchjd 0.18's IMTLG,
db_mtl and excess_mtl against LibMTL's repository (gated on RMTL_LIBMTL_REPO, a path to an
exported checkout), metabalance against a PyTorch twin written here from the paper and
torch-rechub's form and against torch-rechub's own MetaBalance (PyPI torch-rechub 0.9.0 in CI,
or a checkout at RMTL_TORCH_RECHUB), on given Jacobians and in training, and their
properties.

LibMTL's DB_MTL returns weights of 1 (its direction is not a combination of the step's
gradients), and so does rmtl's db_mtl; metabalance scales every parameter tensor differently
and has no task weights (None)."""

import os

import numpy as np
import pytest
import test_balancers
from conftest import require, require_torch
from test_balancers import assert_same, drive, steps_for

from rmtl import balancers

RECHUB = os.environ.get("RMTL_TORCH_RECHUB")
REQUIRED = os.environ.get("RMTL_REQUIRE_TORCH") == "1"

libmtl = test_balancers.libmtl  # LibMTL 1.1.5's weighting module (fixture)
libmtl_repo = test_balancers.libmtl_repo  # LibMTL's repository (fixture)


# ---------------------------------------------------------------- parity with LibMTL 1.1.5
@pytest.mark.parametrize("K", [2, 4])
def test_gradnorm_matches_libmtl(libmtl, K):
    """Epoch 0 is ew; from epoch 1 the loss scale is trained by Adam against the first epoch's
    mean losses (epochs end after steps 4, 9 and 14)."""
    import libmtl_driver

    steps, ends = steps_for(K), (4, 9, 14)
    theirs = libmtl_driver.run(libmtl.GradNorm, steps, {"alpha": 1.5}, epoch_ends=ends)
    ours = drive("gradnorm", steps, epoch_ends=ends)
    assert_same(ours, theirs)
    assert not np.allclose(ours[-1][1], 1.0)  # the weights did move


def test_gradnorm_matches_libmtl_with_other_settings(libmtl):
    """Another alpha, a larger learning rate and weight decay for the loss scale (K = 3)."""
    import libmtl_driver

    steps, ends = steps_for(3), (2, 9)
    opt = {"lr": 0.05, "weight_decay": 1e-2}
    theirs = libmtl_driver.run(libmtl.GradNorm, steps, {"alpha": 0.5}, epoch_ends=ends, **opt)
    assert_same(drive("gradnorm", steps, epoch_ends=ends, alpha=0.5, **opt), theirs)


@pytest.mark.parametrize("K", [2, 4])
def test_imtl_matches_libmtl(libmtl, K):
    """IMTL-G's weights on the gradients of the IMTL-L scaled losses, whose scale Adam trains."""
    import libmtl_driver

    steps = steps_for(K)
    theirs = libmtl_driver.run(libmtl.IMTL, steps, {})
    assert_same(drive("imtl", steps), theirs)


def test_imtl_matches_libmtl_with_a_faster_loss_scale(libmtl):
    """A learning rate that moves the loss scale visibly (K = 3, lr 0.1, weight decay)."""
    import libmtl_driver

    steps, opt = steps_for(3), {"lr": 0.1, "weight_decay": 1e-3}
    theirs = libmtl_driver.run(libmtl.IMTL, steps, {}, **opt)
    assert_same(drive("imtl", steps, **opt), theirs)


# ---------------------------------------------------------------- parity with torchjd 0.18
@pytest.fixture(scope="module")
def torchjd_imtlg():
    require_torch()
    aggregation = require("torchjd.aggregation", REQUIRED, "pip install torchjd==0.18")
    return aggregation.IMTLG()


@pytest.mark.parametrize("K", [2, 4])
def test_imtl_direction_is_torchjd_imtlg_up_to_scale(torchjd_imtlg, K):
    """torchjd's IMTLG is IMTL-G alone (weights summing to 1 on the raw gradients); rmtl's imtl
    combines the IMTL-L scaled gradients e^{s_k} g_k, whose IMTL-G direction is the same up to a
    positive factor (equal at the first step, where s = 0)."""
    import torch

    b = balancers.create("imtl", K)
    for i, (losses, jac) in enumerate(steps_for(K)):
        ours = b.step(losses, jac).astype(np.float64)
        ref = torchjd_imtlg(torch.tensor(jac[0])).numpy().astype(np.float64)
        if i == 0:
            np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
        scale = ours @ ref / (ref @ ref)
        assert scale > 0, f"step {i}"
        np.testing.assert_allclose(ours / scale, ref, rtol=1e-5, atol=1e-5, err_msg=f"step {i}")


# ---------------------------------------------------------------- LibMTL's repository
@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_db_mtl_matches_libmtl_repository(libmtl_repo, K, sigma):
    import libmtl_driver

    steps = steps_for(K)
    hyper = {"DB_beta": 0.9, "DB_beta_sigma": sigma}
    theirs = libmtl_driver.run(libmtl_repo.DB_MTL, steps, hyper)
    assert_same(drive("db_mtl", steps, beta=0.9, beta_sigma=sigma), theirs)


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("step_size", [1e-2, 0.5])
def test_excess_mtl_matches_libmtl_repository(libmtl_repo, K, step_size):
    """The first step records the reference excess (weights stay 1), later steps move the
    weights; epochs do not matter (LibMTL's first_epoch flag is cleared by the first call)."""
    import libmtl_driver

    steps, ends = steps_for(K), (4, 9)
    theirs = libmtl_driver.run(
        libmtl_repo.ExcessMTL, steps, {"robust_step_size": step_size}, epoch_ends=ends
    )
    ours = drive("excess_mtl", steps, epoch_ends=ends, robust_step_size=step_size)
    assert_same(ours, theirs)
    np.testing.assert_array_equal(ours[0][1], np.ones(K))


# ---------------------------------------------------------------- metabalance
SEGMENTS = (12, 5, 20)  # three parameter tensors, P = 37


def metabalance_twin(steps, segments, relax_factor=0.7, beta=0.9):
    """MetaBalance (He et al., WWW 2022, Algorithm 1) as torch-rechub applies it, in PyTorch
    float32, on parameter tensors of the given sizes: per tensor and task a moving average of
    the gradient norm (from 0, no bias correction), every task's gradient (the target task 0's
    as well) scaled by relax_factor m_0 / (m_k + 1e-5) + 1 - relax_factor, summed."""
    import torch

    params = [torch.zeros(n, requires_grad=True) for n in segments]
    bounds = np.cumsum((0,) + tuple(segments))
    avg = [torch.zeros(len(steps[0][0][0])) for _ in segments]
    out = []
    for losses, jac in steps:
        c, g = torch.tensor(losses[0]), torch.tensor(jac[0])
        task_losses = [
            c[k] + sum(g[k, bounds[t] : bounds[t + 1]] @ p for t, p in enumerate(params))
            for k in range(len(c))
        ]
        total = [torch.zeros(n) for n in segments]
        for k, loss in enumerate(task_losses):
            grads = torch.autograd.grad(loss, params)
            for t, grad in enumerate(grads):
                avg[t][k] = beta * avg[t][k] + (1 - beta) * grad.norm()
                factor = avg[t][0] / (avg[t][k] + 1e-5) * relax_factor + (1 - relax_factor)
                total[t] += grad * factor
        out.append((torch.cat(total).numpy(), None))
    return out


def drive_metabalance(steps, segments, **hyper):
    b = balancers.create("metabalance", steps[0][1].shape[-2], segments=segments, **hyper)
    out = [(b.step(losses, jac), b.weights) for losses, jac in steps]
    assert all(w is None for _, w in out)
    return out


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("segments", [SEGMENTS, (37,)])
def test_metabalance_matches_its_twin(K, segments):
    require_torch()
    steps = steps_for(K)
    assert_same(drive_metabalance(steps, segments), metabalance_twin(steps, segments))


def test_metabalance_matches_its_twin_with_other_settings():
    require_torch()
    steps = steps_for(3)
    ours = drive_metabalance(steps, SEGMENTS, relax_factor=0.3, beta=0.5)
    assert_same(ours, metabalance_twin(steps, SEGMENTS, relax_factor=0.3, beta=0.5))


@pytest.fixture(scope="module")
def rechub_metabalance():
    """torch-rechub's MetaBalance, LibMTL-style (libmtl_driver.metabalance_weighting), from a
    checkout at RMTL_TORCH_RECHUB or the installed torch-rechub (required when
    RMTL_REQUIRE_TORCH=1, as in CI); its optimizer class is the ``meta_balance`` attribute"""
    require_torch()
    import libmtl_driver

    try:
        return libmtl_driver.metabalance_weighting(RECHUB)
    except ImportError:
        why = "pip install torch-rechub==0.9.0, or set RMTL_TORCH_RECHUB to a checkout"
        if REQUIRED:
            pytest.fail(f"torch-rechub is not installed but RMTL_REQUIRE_TORCH=1 ({why})")
        pytest.skip(f"torch-rechub is not installed ({why})")


def run_rechub(cls, steps, segments, **hyper):
    """torch-rechub's optimizer on parameter tensors of the given sizes at zero: its step(losses)
    leaves the balanced gradient in the parameters' .grad."""
    import torch

    params = [torch.nn.Parameter(torch.zeros(n)) for n in segments]
    opt = cls(params, **hyper)
    bounds = np.cumsum((0,) + tuple(segments))
    out = []
    for losses, jac in steps:
        opt.zero_grad(set_to_none=True)
        c, g = torch.tensor(losses[0]), torch.tensor(jac[0])
        task_losses = [
            c[k] + sum(g[k, bounds[t] : bounds[t + 1]] @ p for t, p in enumerate(params))
            for k in range(len(c))
        ]
        opt.step(task_losses)
        out.append((torch.cat([p.grad for p in params]).numpy().copy(), None))
    return out


@pytest.mark.parametrize("K", [2, 4])
def test_metabalance_matches_torch_rechub(rechub_metabalance, K):
    steps = steps_for(K)
    theirs = run_rechub(
        rechub_metabalance.meta_balance, steps, SEGMENTS, relax_factor=0.7, beta=0.9
    )
    assert_same(drive_metabalance(steps, SEGMENTS), theirs)
    assert_same(metabalance_twin(steps, SEGMENTS), theirs)


@pytest.mark.parametrize("T", [2, 4])
@pytest.mark.parametrize("backbone", ["sharedbottom", "mmoe"])
def test_metabalance_trains_like_torch_rechub(rechub_metabalance, backbone, T):
    """20 training steps of rmtl's metabalance (one segment per shared parameter tensor)
    against torch-rechub's MetaBalance and Adam on the PyTorch twin: the parameters to 1e-5"""
    import types

    from test_balancers_training import check_training_parity

    reference = types.SimpleNamespace(MetaBalance=rechub_metabalance)
    check_training_parity(reference, "metabalance", backbone, T, "MetaBalance", {})


# ---------------------------------------------------------------- properties
def test_gradnorm_is_ew_in_the_first_epoch_then_balances_the_norms():
    """Epoch 0 sums the gradients; afterwards the weights stay positive summing to K, and with
    alpha = 0 (no training-rate term) they move toward equal weighted gradient norms."""
    rng = np.random.default_rng(3)
    jac = rng.normal(size=(2, 30)).astype(np.float32)
    jac[0] *= 10.0  # task 0's gradient is ten times longer
    losses = np.array([0.7, 0.4], np.float32)
    b = balancers.create("gradnorm", 2, alpha=0.0, lr=0.05)
    np.testing.assert_allclose(b.step(losses, jac), jac.sum(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(b.weights, [1.0, 1.0])
    b.end_epoch()
    gap = []
    for _ in range(100):
        b.step(losses, jac)
        w = b.weights
        assert (w > 0).all() and np.isclose(w.sum(), 2.0)
        norms = w * np.linalg.norm(jac, axis=1)
        gap.append(abs(norms[0] - norms[1]))
    assert b.weights[0] < 1.0 < b.weights[1]
    assert gap[-1] < 0.2 * gap[0]


def test_gradnorm_favours_the_task_that_learns_slowest():
    """Equal gradient norms: the task whose loss fell least since the first epoch gains."""
    jac = np.eye(2, 10, dtype=np.float32)
    b = balancers.create("gradnorm", 2, lr=0.05)
    b.step(np.array([1.0, 1.0], np.float32), jac)
    b.end_epoch()
    for _ in range(30):
        b.step(np.array([0.9, 0.3], np.float32), jac)  # task 0 learns slowest
    assert b.weights[0] > 1.0 > b.weights[1]


def test_imtl_direction_has_equal_projections_on_the_unit_gradients():
    """IMTL-G at the first step (no loss scale yet): u_k . d is the same for every task, the
    weights sum to 1, and rescaling a task's gradient does not turn the direction."""
    for K in (2, 3, 5):
        losses, jac = steps_for(K, n=1)[0]
        b = balancers.create("imtl", K)
        d = b.step(losses, jac).astype(np.float64)
        units = jac[0] / np.linalg.norm(jac[0], axis=1, keepdims=True)
        proj = units @ d
        np.testing.assert_allclose(proj, proj[0], rtol=1e-5)
        assert np.isclose(b.weights.sum(), 1.0)
        scaled = jac.copy()
        scaled[0, 0] *= 7.0
        d2 = balancers.create("imtl", K).step(losses, scaled).astype(np.float64)
        cos = d @ d2 / np.linalg.norm(d) / np.linalg.norm(d2)
        assert cos > 1 - 1e-6


def test_imtl_stays_finite_on_degenerate_gradients():
    """Where LibMTL's system is singular (a zero gradient, a repeated gradient) the
    pseudo-inverse keeps the direction finite: a zero gradient gets weight 0, and a repeated
    gradient counts once."""
    rng = np.random.default_rng(4)
    g = rng.normal(size=(2, 20)).astype(np.float32)
    losses = np.array([0.5, 0.5, 0.5], np.float32)
    zero = np.stack([g[0], np.zeros(20, np.float32), g[1]])
    b = balancers.create("imtl", 3)
    d = b.step(losses, zero)
    assert np.isfinite(d).all() and b.weights[1] == 0.0
    ref = balancers.create("imtl", 2).step(losses[:2], g)
    np.testing.assert_allclose(d, ref, rtol=1e-5, atol=1e-6)
    twice = np.stack([g[0], g[1], g[1]])
    b = balancers.create("imtl", 3)
    d = b.step(losses, twice)
    assert np.isfinite(d).all()
    np.testing.assert_allclose(d, ref, rtol=1e-5, atol=1e-6)


def test_db_mtl_scales_every_averaged_log_gradient_to_the_largest():
    """First step: the buffer is (1 - beta) times the log-loss gradients g_k / L_k, each scaled
    to the largest norm; weights are 1."""
    losses, jac = steps_for(3, n=1)[0]
    b = balancers.create("db_mtl", 3, beta=0.6)
    d = b.step(losses, jac).astype(np.float64)
    h = 0.4 * jac[0].astype(np.float64) / losses[0][:, None]
    norms = np.linalg.norm(h, axis=1)
    np.testing.assert_allclose(d, ((norms.max() / norms)[:, None] * h).sum(0), rtol=1e-6)
    np.testing.assert_array_equal(b.weights, np.ones(3))


def test_db_mtl_rejects_losses_without_a_logarithm():
    losses, jac = steps_for(2, n=1)[0]
    b = balancers.create("db_mtl", 2)
    b.step(losses, jac)
    before = b.state_dict()
    with pytest.raises(ValueError, match="losses or jacobian"):
        b.step(np.array([[0.5, -0.1]], np.float32), jac)
    np.testing.assert_array_equal(b.state_dict()["state"]["state"], before["state"]["state"])
    assert b.steps == 1


def test_excess_mtl_raises_the_weight_of_the_task_with_growing_excess():
    """Weights start at 1, stay positive summing to K, and move toward the task whose
    preconditioned gradient grows relative to its first step."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=(2, 25)).astype(np.float32)
    losses = np.array([0.5, 0.5], np.float32)
    b = balancers.create("excess_mtl", 2, robust_step_size=0.1)
    for i in range(15):
        jac = base * np.array([[1.0], [1.0 + 0.3 * i]], np.float32)
        d = b.step(losses, jac)
        w = b.weights
        np.testing.assert_allclose(d, w @ jac, rtol=1e-5, atol=1e-5)
        assert (w > 0).all() and np.isclose(w.sum(), 2.0)
        if i == 0:
            np.testing.assert_array_equal(w, [1.0, 1.0])
    assert b.weights[1] > b.weights[0]


def test_metabalance_limits():
    """relax_factor 0 is the sum of the gradients; relax_factor 1 with beta 0 scales every
    tensor's auxiliary gradient to the target task's norm on that tensor."""
    losses, jac = steps_for(3, n=1)[0]
    b = balancers.create("metabalance", 3, segments=SEGMENTS, relax_factor=0.0)
    np.testing.assert_allclose(b.step(losses, jac), jac[0].sum(0), rtol=1e-6, atol=1e-6)
    b = balancers.create("metabalance", 3, segments=SEGMENTS, relax_factor=1.0, beta=0.0)
    d = b.step(losses, jac)
    lo = 0
    for n in SEGMENTS:
        g = jac[0][:, lo : lo + n].astype(np.float64)
        norms = np.linalg.norm(g, axis=1)
        want = (norms[0] / (norms + 1e-5))[:, None] * g
        np.testing.assert_allclose(d[lo : lo + n], want.sum(0), rtol=1e-5, atol=1e-6)
        lo += n


@pytest.mark.parametrize(
    "name,hyper",
    [
        ("gradnorm", {}),
        ("imtl", {}),
        ("db_mtl", {"beta_sigma": 0.3}),
        ("excess_mtl", {}),
        ("metabalance", {"segments": SEGMENTS}),
    ],
)
def test_state_dict_continues_bit_for_bit(name, hyper):
    steps = steps_for(3, n=10)
    a = balancers.create(name, 3, **hyper)
    for i, s in enumerate(steps[:5]):
        a.step(*s)
        if i == 2:
            a.end_epoch()
    b = balancers.create(name, 3, **hyper)
    b.load_state_dict(a.state_dict())
    for s in steps[5:]:
        np.testing.assert_array_equal(a.step(*s), b.step(*s))
        if a.weights is not None:
            np.testing.assert_array_equal(a.weights, b.weights)


def test_hyperparameters_are_named_as_in_their_references():
    assert balancers.hyperparameters("gradnorm") == {"alpha": 1.5}
    assert balancers.hyperparameters("imtl") == {}
    assert balancers.hyperparameters("db_mtl") == {"beta": 0.9, "beta_sigma": 0.0}
    assert balancers.hyperparameters("excess_mtl") == {"robust_step_size": 1e-2}
    assert balancers.hyperparameters("metabalance") == {"relax_factor": 0.7, "beta": 0.9}
    for name in ("gradnorm", "imtl", "db_mtl", "excess_mtl", "metabalance"):
        assert balancers.create(name, 2).family == "gradients"


@pytest.mark.parametrize(
    "name,hyper,match",
    [
        ("gradnorm", {"alpha": -0.1}, "alpha: expected a finite value in \\[0, inf\\)"),
        ("gradnorm", {"alpha": float("nan")}, "alpha: expected a finite value"),
        ("db_mtl", {"beta": 1.0}, "beta: expected a finite value in \\[0, 1\\)"),
        ("db_mtl", {"beta": -0.5}, "beta: expected"),
        ("db_mtl", {"beta_sigma": -1.0}, "beta_sigma: expected"),
        ("excess_mtl", {"robust_step_size": 0.0}, "robust_step_size: expected .* \\(0, inf\\)"),
        ("excess_mtl", {"robust_step_size": -1e-2}, "robust_step_size: expected"),
        ("metabalance", {"relax_factor": 1.5}, "relax_factor: expected .* \\[0, 1\\]"),
        ("metabalance", {"relax_factor": -0.1}, "relax_factor: expected"),
        ("metabalance", {"beta": 1.0}, "beta: expected .* \\[0, 1\\)"),
        ("metabalance", {"beta": -0.1}, "beta: expected"),
    ],
)
def test_bad_hyperparameters_name_the_argument(name, hyper, match):
    with pytest.raises(ValueError, match=match):
        balancers.create(name, 2, **hyper)


def test_metabalance_segments_must_cover_the_gradient():
    b = balancers.create("metabalance", 2, segments=SEGMENTS)
    losses, jac = steps_for(2, n=1)[0]
    with pytest.raises(ValueError, match="jacobian: expected 37 columns"):
        b.step(losses, jac[:, :, :30])
