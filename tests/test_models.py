"""Backbones against their PyTorch twins: forward, every gradient, Adam steps, both GEMM paths."""

import numpy as np
import pytest

import rmtl

SMALL = dict(embed_dim=6, bottom_dims=(12, 8), tower_dims=(7, 5), dropout=0.0)
FIELDS = (5, 7, 3)


def make(name, num_tasks=2, num_dense=2, seed=3, **kw):
    cfg = dict(SMALL, **kw)
    return rmtl.models.create(name, FIELDS, num_dense, num_tasks, seed=seed, **cfg)


def batch(n=33, num_dense=2, num_tasks=2, seed=0):
    rng = np.random.default_rng(seed)
    sparse = np.stack([rng.integers(0, d, n) for d in FIELDS], 1).astype(np.int32)
    sparse[0, 0] = 0  # the padding row of the table
    dense = rng.normal(size=(n, num_dense)).astype(np.float32)
    labels = (rng.random((n, num_tasks)) < 0.5).astype(np.float32)
    return sparse, dense, labels


# (backbone, tasks, config overrides): both PLEs with 1, 2 and 3 levels and 2 and 3 tasks,
# AITM with 1 to 3 tasks
CASES = [
    ("singletask", 1, {}),
    ("singletask", 3, {}),
    ("sharedbottom", 1, {}),
    ("sharedbottom", 3, {}),
    ("esmm", 2, {}),
    ("omoe", 2, {}),
    ("omoe", 1, dict(num_experts=3)),
    ("mmoe", 3, {}),
    ("mmoe", 2, dict(bottom_dims=(12,), num_experts=5)),
    ("ple", 3, dict(bottom_dims=(12,))),
    ("ple", 2, {}),
    ("ple", 2, dict(bottom_dims=(12,), num_experts=2)),
    ("ple", 3, {}),
    ("ple", 3, dict(bottom_dims=(12, 10, 8), num_experts=4)),
    ("ple_paper", 3, dict(bottom_dims=(12,))),
    ("ple_paper", 2, {}),
    ("ple_paper", 3, dict(bottom_dims=(12, 10, 8), num_experts=4)),
    ("aitm", 3, {}),
    ("aitm", 2, dict(bottom_dims=(12,))),
    ("aitm", 1, {}),
]
IDS = [f"{n}-T{t}-" + "-".join(f"{k}{v}" for k, v in kw.items()) for n, t, kw in CASES]


def torch_grad(p):
    """A parameter's gradient; torch leaves it None where the graph never reaches it."""
    return p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32)


@pytest.mark.parametrize("name,T,kw", CASES, ids=IDS)
def test_forward_and_gradients_match_torch(name, T, kw, gemm, torch):
    from torch_reference import twin_of, weighted_bce

    model = make(name, T, **kw)
    net = twin_of(model)
    sparse, dense, labels = batch(num_tasks=T)
    weights = np.random.default_rng(1).uniform(1, 3, labels.shape).astype(np.float32)
    loss = model.loss_and_grad(sparse, dense, labels, weights)
    prob_t = net(torch.from_numpy(sparse).long(), torch.from_numpy(dense))
    loss_t = weighted_bce(prob_t, torch.from_numpy(labels), torch.from_numpy(weights))
    loss_t.backward()
    np.testing.assert_allclose(model(sparse, dense), prob_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(loss_t.item(), rel=1e-5)
    grads = dict(model.named_grads())
    named = dict(net.named_parameters())
    assert set(grads) == set(named)
    for k, p in named.items():
        g = torch_grad(p)
        scale = max(1e-3, float(np.abs(g).max()))
        np.testing.assert_allclose(grads[k], g, atol=2e-5 * scale, rtol=1e-4, err_msg=k)


@pytest.mark.parametrize("name", ["singletask", "esmm", "mmoe", "ple", "aitm"])
def test_gradients_after_other_batch_sizes_match_torch(name, torch):
    """The activations are laid out for each pass's rows: a step on 33 rows after a prediction on
    300 (which grows the buffers) and steps on 60 and 20 has its own gradients only (as PyTorch)."""
    from torch_reference import twin_of, weighted_bce

    model = make(name, 2)
    net = twin_of(model)
    model.predict(*batch(n=300, seed=2)[:2])
    for n in (60, 20):
        model.loss_and_grad(*batch(n=n, seed=n))
    sparse, dense, labels = batch(seed=3)
    model.loss_and_grad(sparse, dense, labels)
    weighted_bce(
        net(torch.from_numpy(sparse).long(), torch.from_numpy(dense)), torch.from_numpy(labels)
    ).backward()
    grads = dict(model.named_grads())
    for k, p in net.named_parameters():
        g = torch_grad(p)
        np.testing.assert_allclose(
            grads[k], g, atol=2e-5 * max(1e-3, float(np.abs(g).max())), rtol=1e-4, err_msg=k
        )


@pytest.mark.parametrize("name,T,kw", CASES, ids=IDS)
def test_adam_steps_match_torch(name, T, kw, gemm, torch):
    from torch_reference import twin_of

    model = make(name, T, seed=5, **kw)
    net = twin_of(model)
    data = [batch(n=40, num_tasks=T, seed=s) for s in range(2)]
    tbatches = [
        (torch.from_numpy(s).long(), torch.from_numpy(d), torch.from_numpy(y)) for s, d, y in data
    ]
    assert_adam_steps_match(model, net, data, tbatches)


def assert_adam_steps_match(model, net, data, tbatches):
    """5 Adam steps of the model over its batches in turn and of its PyTorch twin: the same
    weights."""
    from torch_reference import adam_steps

    for step in range(5):
        model.loss_and_grad(*data[step % len(data)])
        model.adam_step(lr=1e-2, weight_decay=1e-3)
    adam_steps(net, tbatches, 5, lr=1e-2, weight_decay=1e-3)
    for k, v in net.state_dict().items():
        np.testing.assert_allclose(
            model.state_dict()[k], v.numpy(), atol=2e-5, rtol=1e-4, err_msg=k
        )


def test_state_dict_keys_and_shapes_equal_reference(torch):
    from torch_reference import TWINS

    for name, T, kw in CASES:
        model = make(name, T, **kw)
        extra = {"num_experts": kw["num_experts"]} if "num_experts" in kw else {}
        net = TWINS[name](
            list(FIELDS), 2, T, 6, list(kw.get("bottom_dims", [12, 8])), [7, 5], 0.0, **extra
        )
        ours = {k: v.shape for k, v in model.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        assert ours == theirs
    model = rmtl.models.ESMM(FIELDS, 1, 2)
    keys = model.state_dict()
    assert keys["tower.1.mlp.6.weight"].shape == (1, 64)
    assert keys["bottom.0.mlp.3.weight"].shape == (256, 512)
    assert keys["embedding.embedding.weight"].shape == (15, 128)


@pytest.mark.parametrize("name,T", [("sharedbottom", 2), ("ple", 2), ("ple", 3), ("ple_paper", 2)])
def test_load_state_dict_from_torch_module(name, T, gemm, torch):
    """A torch module's state dict (the authors' PLE: keys expert.<i>.<e>..., gate.<i>.<j>...)
    loads as it is and gives the module's predictions."""
    from torch_reference import TWINS

    extra = {"num_experts": 4} if name.startswith("ple") else {}
    torch.manual_seed(T)
    net = TWINS[name](list(FIELDS), 2, T, 6, [12, 8], [7, 5], 0.0, **extra).eval()
    model = make(name, T, **extra)
    model.load_state_dict(net.state_dict())  # torch tensors go in directly
    sparse, dense, _ = batch(num_tasks=T)
    expect = net(torch.from_numpy(sparse).long(), torch.from_numpy(dense)).detach().numpy()
    np.testing.assert_allclose(model.predict(sparse, dense), expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name,T",
    [
        ("sharedbottom", 2),
        ("esmm", 2),
        ("singletask", 2),
        ("omoe", 2),
        ("mmoe", 2),
        ("ple", 3),
        ("ple_paper", 3),
        ("aitm", 3),
    ],
)
def test_finite_differences(name, T):
    model = make(name, T, num_dense=1, embed_dim=3, bottom_dims=(4,), tower_dims=(3,), seed=11)
    sparse, dense, labels = batch(n=6, num_dense=1, num_tasks=T, seed=4)
    center = model.loss_and_grad(sparse, dense, labels)
    grads = {k: g.copy() for k, g in model.named_grads()}
    rng = np.random.default_rng(0)
    h, checked = 3e-3, 0
    for k, p in model.named_parameters():
        for _ in range(4):
            idx = tuple(rng.integers(0, s) for s in p.shape)
            old = p[idx]
            p[idx] = old + h
            up = model.loss_and_grad(sparse, dense, labels)
            p[idx] = old - h
            down = model.loss_and_grad(sparse, dense, labels)
            p[idx] = old
            if abs((up - center) - (center - down)) > 0.1 * h * max(abs(up - down) / h, 1e-2):
                continue  # a ReLU kink lies inside [-h, h]: central differences mean nothing there
            checked += 1
            assert grads[k][idx] == pytest.approx((up - down) / (2 * h), abs=1e-3, rel=1e-2), (
                k,
                idx,
            )
    assert checked > 2 * len(grads)


def test_padding_row_never_updated():
    model = make("sharedbottom", 2)
    table = dict(model.named_parameters())["embedding.embedding.weight"]
    row0 = table[0].copy()
    sparse, dense, labels = batch()
    sparse[:, 0] = 0
    for _ in range(3):
        model.loss_and_grad(sparse, dense, labels)
        assert not dict(model.named_grads())["embedding.embedding.weight"][0].any()
        model.adam_step(lr=0.1, weight_decay=0.5)
    np.testing.assert_array_equal(table[0], row0)


def test_dropout_masks_are_seeded_and_scaled():
    model = make("sharedbottom", 2, dropout=0.5, seed=9)
    sparse, dense, _ = batch(n=200)
    a = model.train()(sparse, dense)
    b = model(sparse, dense)
    assert not np.allclose(a, b)  # a new mask per training forward
    twin = make("sharedbottom", 2, dropout=0.5, seed=9)
    np.testing.assert_array_equal(twin.train()(sparse, dense), a)
    e1, e2 = model.eval()(sparse, dense), model(sparse, dense)
    np.testing.assert_array_equal(e1, e2)


def test_dropout_backward_matches_finite_differences():
    """With a fixed mask (same dropout counter), the analytic gradient is exact."""
    model = make(
        "sharedbottom", 2, num_dense=1, embed_dim=3, bottom_dims=(6,), tower_dims=(5,), dropout=0.3
    )
    sparse, dense, labels = batch(n=8, num_dense=1, seed=2)
    steps = model._core.steps
    model.loss_and_grad(sparse, dense, labels)
    g = dict(model.named_grads())["bottom.mlp.0.weight"].copy()
    p = dict(model.named_parameters())["bottom.mlp.0.weight"]
    h = 1e-2
    for idx in [(0, 0), (2, 5), (5, 11)]:
        old = p[idx]
        p[idx] = old + h
        model._core.steps = steps
        up = model.loss_and_grad(sparse, dense, labels)
        p[idx] = old - h
        model._core.steps = steps
        down = model.loss_and_grad(sparse, dense, labels)
        p[idx] = old
        assert g[idx] == pytest.approx((up - down) / (2 * h), abs=2e-3, rel=2e-2)


def test_init_follows_pytorch_defaults():
    model = rmtl.models.SharedBottom((1000, 500), 1, 2, seed=1)
    p = dict(model.named_parameters())
    w = p["bottom.mlp.0.weight"]
    bound = 1 / np.sqrt(w.shape[1])
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound
    emb = p["embedding.embedding.weight"]
    xb = np.sqrt(6 / (1500 + 128))
    assert np.abs(emb).max() <= xb and abs(emb.std() - xb / np.sqrt(3)) < 0.02 * xb
    again = rmtl.models.SharedBottom((1000, 500), 1, 2, seed=1)
    np.testing.assert_array_equal(again.state_dict()["bottom.mlp.0.weight"], w)
    other = rmtl.models.SharedBottom((1000, 500), 1, 2, seed=2)
    assert not np.array_equal(other.state_dict()["bottom.mlp.0.weight"], w)


def test_named_parameters_are_zero_copy_views():
    model = make("esmm")
    sparse, dense, _ = batch()
    before = model.predict(sparse, dense)
    for _, v in model.named_parameters():
        v[...] = 0
    after = model.predict(sparse, dense)
    np.testing.assert_allclose(after, np.where(np.arange(2) == 0, 0.5, 0.25) * np.ones_like(before))


def test_save_load_roundtrip(tmp_path):
    model = make("esmm", dropout=0.2)
    sparse, dense, labels = batch()
    model.loss_and_grad(sparse, dense, labels)
    model.adam_step()
    rmtl.save(model, tmp_path / "m.npz")
    back = rmtl.load(tmp_path / "m.npz")
    assert type(back) is rmtl.models.ESMM and back.config == model.config and not back.training
    np.testing.assert_array_equal(back.predict(sparse, dense), model.predict(sparse, dense))
    # both continue identically: optimizer state and dropout counter came along
    for m in (model, back):
        m.train()
        m.loss_and_grad(sparse, dense, labels)
        m.adam_step()
    np.testing.assert_array_equal(back.predict(sparse, dense), model.predict(sparse, dense))
