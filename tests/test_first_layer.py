"""The first layer over the embedding computed over each field's distinct codes in the batch:
parity with the PyTorch twins (forward, every gradient, 5 Adam steps, prediction) for every
backbone and the critic with the path forced on, forced off and chosen automatically, on both
GEMM paths; a field whose codes are all distinct and a batch with one code per field; the
automatic choice; bit-identical weights for any thread count."""

import os
import subprocess
import sys

import numpy as np
import pytest
from test_models import assert_adam_steps_match

import rmtl
from rmtl.critic import Critic

# field 3 has more codes than a batch has rows: its codes are all distinct in BATCHES["distinct"];
# embed_dim 32 makes the automatic choice take the distinct codes for the small fields
FIELDS = (5, 7, 3, 400)
SMALL = dict(embed_dim=32, bottom_dims=(12, 8), tower_dims=(7,), dropout=0.0)
MODES = ("plain", "distinct", "auto")
BACKBONES = [
    ("singletask", 2, {}),
    ("sharedbottom", 2, {}),
    ("esmm", 2, {}),
    ("omoe", 2, dict(num_experts=3)),
    ("mmoe", 3, dict(num_experts=3, bottom_dims=(180, 8))),
    ("ple", 2, dict(num_experts=2)),
    ("ple", 3, dict(num_experts=2)),
    ("ple_paper", 2, dict(num_experts=2)),
    ("aitm", 2, {}),
]


def codes(n, kind, seed):
    """(n, 4) codes: mixed (repeats in the small fields, field 3 all distinct) or one code per
    field"""
    rng = np.random.default_rng(seed)
    if kind == "constant":
        return np.tile(np.array([[1, 0, 2, 399]], np.int32), (n, 1))
    sparse = np.stack(
        [rng.integers(0, d, n) for d in FIELDS[:3]] + [rng.permutation(FIELDS[3])[:n]], 1
    )
    sparse[0, 0] = 0  # the padding row of the table
    return sparse.astype(np.int32)


def batch(n=40, num_tasks=2, kind="distinct", seed=0):
    rng = np.random.default_rng(seed + 100)
    labels = (rng.random((n, num_tasks)) < 0.5).astype(np.float32)
    return codes(n, kind, seed), rng.normal(size=(n, 2)).astype(np.float32), labels


def assert_grads_match(ours, net):
    named = dict(net.named_parameters())
    assert set(ours) == set(named)
    for k, p in named.items():
        g = p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32)
        scale = max(1e-3, float(np.abs(g).max()))
        np.testing.assert_allclose(ours[k], g, atol=2e-5 * scale, rtol=1e-4, err_msg=k)


@pytest.mark.parametrize("kind", ["distinct", "constant"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,T,kw", BACKBONES, ids=[f"{b[0]}-T{b[1]}" for b in BACKBONES])
def test_backbone_matches_torch(name, T, kw, mode, kind, gemm, torch):
    from torch_reference import twin_of, weighted_bce

    model = rmtl.models.create(name, FIELDS, 2, T, seed=4, **dict(SMALL, **kw))
    model.first_layer = mode
    net = twin_of(model)
    data = [batch(num_tasks=T, kind=kind, seed=s) for s in range(2)]
    t = [(torch.from_numpy(s).long(), torch.from_numpy(d), torch.from_numpy(y)) for s, d, y in data]
    loss = model.loss_and_grad(*data[0])
    loss_t = weighted_bce(net(*t[0][:2]), t[0][2])
    loss_t.backward()
    assert loss == pytest.approx(loss_t.item(), rel=1e-5)
    assert_grads_match(dict(model.named_grads()), net)
    assert_adam_steps_match(model, net, data, t)
    with torch.no_grad():
        want = net.eval()(*t[1][:2]).numpy()
    np.testing.assert_allclose(
        model.predict(*data[1][:2], tables=False), want, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(model.eval()(*data[1][:2]), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["distinct", "constant"])
@pytest.mark.parametrize("mode", MODES)
def test_critic_matches_torch(mode, kind, gemm, torch):
    from torch_reference import critic_twin_of

    critic = Critic(FIELDS, 2, seed=3, **SMALL)
    critic.first_layer = mode
    list(critic.named_parameters())[-1][1][...] = 0.1  # rows on both sides of the final ReLU
    sparse, dense, _ = batch(kind=kind)
    action = np.random.default_rng(2).random(len(sparse)).astype(np.float32)
    net = critic_twin_of(critic)
    grad_q = np.random.default_rng(1).normal(size=len(action)).astype(np.float32)
    grad_a = critic.backward(sparse, dense, action, grad_q)
    a_t = torch.tensor(action, requires_grad=True)
    q_t = net(torch.from_numpy(sparse).long(), torch.from_numpy(dense), a_t)
    (q_t * torch.from_numpy(grad_q)).sum().backward()
    np.testing.assert_allclose(
        critic(sparse, dense, action), q_t.detach().numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(grad_a, a_t.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert_grads_match(dict(critic.named_grads()), net)


def test_first_layer_rejects_unknown_modes():
    model = rmtl.models.SharedBottom(FIELDS, 2, 1, **SMALL)
    assert model.first_layer == "auto"
    with pytest.raises(ValueError, match="first_layer: expected one of"):
        model.first_layer = "fast"


def grads_by_mode(model, data):
    out = {}
    for mode in MODES:
        model.first_layer = mode
        model.loss_and_grad(*data)
        out[mode] = np.concatenate([g.ravel() for _, g in model.named_grads()])
    return out


def test_auto_takes_distinct_codes_where_they_pay():
    """embed_dim 32, 64 rows, 2 codes per field: every field pays, so auto equals the distinct
    path bit for bit (and the plain path differs in rounding); embed_dim 6 with 6 dense
    columns: neither a field nor folding the numerical layer pays, auto equals plain."""
    fields = (2, 2, 2)
    rng = np.random.default_rng(0)
    data = (
        rng.integers(0, 2, (64, 3)).astype(np.int32),
        rng.normal(size=(64, 2)).astype(np.float32),
        (rng.random((64, 1)) < 0.5).astype(np.float32),
    )
    model = rmtl.models.SharedBottom(fields, 2, 1, **SMALL)
    g = grads_by_mode(model, data)
    assert np.array_equal(g["auto"], g["distinct"]) and not np.array_equal(g["auto"], g["plain"])
    model.first_layer = "auto"
    model(*data[:2])
    assert model._core.first_layer_rows == (2, 2, 2) and model._core.distinct_fold
    model.first_layer = "plain"
    model(*data[:2])
    assert model._core.first_layer_rows == (64, 64, 64) and not model._core.distinct_fold
    wide = (data[0], rng.normal(size=(64, 6)).astype(np.float32), data[2])
    model = rmtl.models.SharedBottom(fields, 6, 1, **dict(SMALL, embed_dim=6))
    g = grads_by_mode(model, wide)
    assert np.array_equal(g["auto"], g["plain"]) and not np.array_equal(g["auto"], g["distinct"])
    assert not model._core.distinct_fold  # 6 (64 + 6) >= 64 * 6: folding would not pay
    model = rmtl.models.SharedBottom(fields, 5, 1, **dict(SMALL, embed_dim=6))
    model(wide[0], wide[1][:, :5])
    assert model._core.distinct_fold  # 5 (64 + 6) < 64 * 6
    model(wide[0][:8], wide[1][:8, :5])
    assert not model._core.distinct_fold  # 5 (8 + 6) >= 8 * 6


def test_auto_at_a_narrow_embedding():
    """embed_dim 16 (the experiment presets'), 64 rows: a field pays when (64 - u) 16 > 12 * 64,
    that is with at most 15 distinct codes; 16 or more keep the plain product."""
    model = rmtl.models.SharedBottom((15, 16, 64), 1, 1, **dict(SMALL, embed_dim=16))
    sparse = np.stack([np.arange(64) % 15, np.arange(64) % 16, np.arange(64)], 1).astype(np.int32)
    model(sparse, np.zeros((64, 1), np.float32))
    assert model._core.first_layer_rows == (15, 64, 64)


THREADS_SCRIPT = """
import numpy as np, rmtl
rmtl.set_num_threads({threads})
rng = np.random.default_rng(0)
n, fields = 6000, (50, 900, 4, 30)
sparse = np.stack([rng.integers(0, d, n) for d in fields], 1).astype(np.int32)
dense = rng.normal(size=(n, 3)).astype(np.float32)
labels = (rng.random((n, 2)) < 0.3).astype(np.float32)
session = np.repeat(np.arange(n // 3), 3)
data = rmtl.SessionData(session, np.arange(n), sparse, dense, labels, fields)
out = []
for name in ("mmoe", "sharedbottom", "aitm"):
    m = rmtl.models.create(name, fields, 3, 2, embed_dim=32, bottom_dims=(256, 64),
                           tower_dims=(32,), dropout=0.2, seed=1)
    m.first_layer = {mode!r}
    rmtl.Trainer(m, batch_size=1024, progress=False).fit(data, epochs=1)
    out.append(np.concatenate([p.ravel() for p in m.parameters()]))
np.save({out!r}, np.concatenate(out))
"""


@pytest.mark.parametrize("mode", ["distinct", "auto"])
@pytest.mark.parametrize("backend", ["builtin", "blas"])
def test_same_seed_same_bits_for_any_thread_count(tmp_path, mode, backend):
    """rmtl's loops (the sums by code included) and its products (parts fixed by the shape,
    each on one BLAS thread) give the same bits for 1, 2 and 3 threads"""
    if backend == "blas" and not rmtl.blas_info()["blas_per_thread"]:
        pytest.skip(
            "the BLAS cannot be told per thread: it splits products by its own thread count"
        )
    res = []
    for threads in (1, 2, 3):
        out = str(tmp_path / f"w{threads}.npy")
        env = dict(os.environ, RMTL_BLAS=backend)
        code = THREADS_SCRIPT.format(threads=threads, mode=mode, out=out)
        subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tmp_path)
        res.append(np.load(out))
    assert np.array_equal(res[0], res[1]) and np.array_equal(res[0], res[2])


def test_set_num_threads_applies_and_validates():
    from rmtl.backend import _blas_controllers

    before, blas_before = rmtl.get_num_threads(), [c.num_threads for c in _blas_controllers()]
    try:
        rmtl.set_num_threads(1)
        assert rmtl.get_num_threads() == 1
        blas = [c.num_threads for c in _blas_controllers()]
        if rmtl.blas_info()[
            "blas_per_thread"
        ]:  # rmtl's products run on its pool: SciPy's BLAS stays
            assert blas == blas_before
        else:
            assert blas == [1] * len(blas)
    finally:
        rmtl.set_num_threads(before)
    assert rmtl.get_num_threads() == before
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="n: expected an integer 1..256"):
            rmtl.set_num_threads(bad)
