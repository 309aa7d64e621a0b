"""Critics against their PyTorch twin: forward, every gradient (parameters and action), the TD
loss, the actor loss, the weighted fine-tuning loss and the soft update, on both GEMM paths;
values never positive; a trained critic ranks actions as its rewards imply."""

import numpy as np
import pytest

import rmtl
from rmtl import _core
from rmtl.critic import Critic

FIELDS = (5, 7, 3)
SMALL = dict(embed_dim=6, bottom_dims=(12, 8), tower_dims=(7, 5), dropout=0.0)
WEIGHTINGS = _core.enums["weighting"]


def make_critic(seed=3, bias=0.15, **kw):
    """A small critic; the output bias puts some rows on each side of the ReLU."""
    critic = Critic(FIELDS, 2, seed=seed, **dict(SMALL, **kw))
    output_bias(critic)[...] = bias
    return critic


def output_bias(critic):
    """The bias of the tower's final Linear(.., 1): the last tensor of the table."""
    return list(critic.named_parameters())[-1][1]


def straddle(critic, sparse, dense, action):
    """Set the output bias so that half of these rows fall on each side of the final ReLU."""
    bias = output_bias(critic)
    bias[...] = 10.0
    raw = -critic(sparse, dense, action) - 10.0
    bias[...] = -np.median(raw)


def states(n=40, seed=0):
    rng = np.random.default_rng(seed)
    sparse = np.stack([rng.integers(0, d, n) for d in FIELDS], 1).astype(np.int32)
    sparse[0, 0] = 0  # the padding row of the table
    dense = rng.normal(size=(n, 2)).astype(np.float32)
    return sparse, dense, rng.random(n).astype(np.float32)


def as_torch(torch, sparse, dense):
    return torch.from_numpy(sparse).long(), torch.from_numpy(dense)


def assert_grads_equal(ours, net, atol=2e-5):
    named = dict(net.named_parameters())
    assert set(ours) == set(named)
    for k, p in named.items():
        scale = max(1e-3, float(p.grad.abs().max()))
        np.testing.assert_allclose(ours[k], p.grad.numpy(), atol=atol * scale, rtol=1e-4, err_msg=k)


def test_forward_and_all_gradients_match_torch(gemm, torch):
    from torch_reference import critic_twin_of

    critic = make_critic()
    sparse, dense, action = states()
    straddle(critic, sparse, dense, action)
    net = critic_twin_of(critic)
    grad_q = np.random.default_rng(1).normal(size=len(action)).astype(np.float32)
    grad_a = critic.backward(sparse, dense, action, grad_q)
    a_t = torch.tensor(action, requires_grad=True)
    q_t = net(*as_torch(torch, sparse, dense), a_t)
    (q_t * torch.from_numpy(grad_q)).sum().backward()
    q = critic(sparse, dense, action)
    np.testing.assert_allclose(q, q_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert (q < 0).any() and (q == 0).any()  # both sides of the ReLU are exercised
    np.testing.assert_allclose(grad_a, a_t.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert np.abs(grad_a).max() > 1e-3
    assert_grads_equal(dict(critic.named_grads()), net)


def test_gradients_after_other_batch_sizes_match_torch(torch):
    """A backward pass on 40 rows after a prediction on 300 rows (which grows the buffers) and
    backward passes on 70 and 25 has its own gradients only (as PyTorch)."""
    from torch_reference import critic_twin_of

    critic = make_critic()
    net = critic_twin_of(critic)
    critic.predict(*states(n=300, seed=2))
    for n in (70, 25):
        critic.backward(*states(n=n, seed=n), np.ones(n, np.float32))
    sparse, dense, action = states()
    grad_q = np.random.default_rng(1).normal(size=len(action)).astype(np.float32)
    grad_a = critic.backward(sparse, dense, action, grad_q)
    a_t = torch.tensor(action, requires_grad=True)
    (net(*as_torch(torch, sparse, dense), a_t) * torch.from_numpy(grad_q)).sum().backward()
    np.testing.assert_allclose(grad_a, a_t.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert_grads_equal(dict(critic.named_grads()), net)


def test_state_dict_keys_and_shapes_equal_reference(torch):
    from torch_reference import CriticNeg

    ours = {k: v.shape for k, v in make_critic().state_dict().items()}
    theirs = {
        k: tuple(v.shape)
        for k, v in CriticNeg(list(FIELDS), 2, 6, [12, 8], [7, 5], 0.0).state_dict().items()
    }
    assert ours == theirs
    full = Critic(FIELDS, 1).state_dict()
    assert full["action_layer.weight"].shape == (128, 1)
    assert full["bottom.mlp.0.weight"].shape == (512, (len(FIELDS) + 2) * 128)
    assert full["tower.mlp.6.weight"].shape == (1, 64)


def test_action_gradient_matches_finite_differences():
    critic = make_critic(embed_dim=3, bottom_dims=(5,), tower_dims=(4,))
    sparse, dense, action = states(n=12, seed=2)
    straddle(critic, sparse, dense, action)
    grad = critic.backward(sparse, dense, action)
    h = np.float32(1e-2)
    up = critic(sparse, dense, action + h).astype(np.float64)
    down = critic(sparse, dense, action - h).astype(np.float64)
    smooth = (
        np.abs((up - critic(sparse, dense, action)) - (critic(sparse, dense, action) - down)) < 1e-4
    )
    assert smooth.sum() >= 6  # rows without a ReLU kink inside [-h, h]
    np.testing.assert_allclose(grad[smooth], ((up - down) / (2 * h))[smooth], atol=2e-3, rtol=2e-2)


@pytest.mark.parametrize("bias", [-2.0, 0.0, 0.15, 3.0])
def test_values_are_never_positive(bias):
    for seed in range(3):
        critic = make_critic(seed=seed, bias=bias, dropout=0.3).train()
        sparse, dense, action = states(n=500, seed=seed)
        for q in (critic(sparse, dense, action * 4 - 2), critic.predict(sparse, dense, action)):
            assert q.dtype == np.float32 and (q <= 0).all()
    assert (make_critic(bias=3.0).predict(sparse, dense, action) < 0).all()


def test_dropout_in_training_mode_only():
    critic = make_critic(dropout=0.5, bias=1.0)
    sparse, dense, action = states(n=100)
    assert not np.array_equal(critic.train()(sparse, dense, action), critic(sparse, dense, action))
    np.testing.assert_array_equal(
        critic.eval()(sparse, dense, action), critic.predict(sparse, dense, action)
    )


def transition_batch(n=48, seed=5):
    rng = np.random.default_rng(seed)
    s, s2 = states(n, seed), states(n, seed + 1)
    reward = np.log(rng.uniform(1e-4, 1, n)).astype(np.float32)
    done = (rng.random(n) < 0.3).astype(np.float32)
    weight = rng.uniform(0.5, 3, n).astype(np.float32)
    return s, s2, reward, done, weight


@pytest.mark.parametrize(
    "td3,weighted", [(True, False), (True, True), (False, False), (False, True)]
)
def test_td_loss_gradient_matches_torch(td3, weighted, gemm, torch):
    from torch_reference import critic_twin_of, td_loss

    q, q_target = make_critic(seed=3), make_critic(seed=4, bias=0.3)
    net, net_target = critic_twin_of(q), critic_twin_of(q_target)
    (sparse, dense, action), (nsparse, ndense, naction), reward, done, weight = transition_batch()
    w = weight if weighted else None
    loss = _core.td_backward(
        q._core,
        q_target._core,
        sparse,
        dense,
        action,
        nsparse,
        ndense,
        naction,
        reward,
        done,
        w,
        0.9,
        td3,
    )
    t = torch.from_numpy
    loss_t = td_loss(
        net,
        net_target,
        as_torch(torch, sparse, dense),
        t(action),
        as_torch(torch, nsparse, ndense),
        t(naction),
        t(reward),
        t(done),
        None if w is None else t(w),
        0.9,
        td3,
    )
    loss_t.backward()
    assert loss == pytest.approx(loss_t.item(), rel=1e-5)
    assert_grads_equal(dict(q.named_grads()), net)


def test_td_loss_gradient_matches_finite_differences():
    """d(TD loss)/d(theta) of a few entries of every parameter tensor, by central differences
    in float64 arithmetic on the float32 loss (the DDPG target does not move with q)."""
    small = dict(embed_dim=3, bottom_dims=(6,), tower_dims=(4,))
    q, q_target = make_critic(seed=3, **small), make_critic(seed=4, bias=0.3, **small)
    (sparse, dense, action), (nsparse, ndense, naction), reward, done, weight = transition_batch(
        n=16
    )

    def loss():
        return _core.td_backward(
            q._core,
            q_target._core,
            sparse,
            dense,
            action,
            nsparse,
            ndense,
            naction,
            reward,
            done,
            weight,
            0.9,
            False,
        )

    loss()
    grads = {k: g.copy() for k, g in q.named_grads()}
    rng = np.random.default_rng(0)
    checked = 0
    for name, p in q.named_parameters():
        flat = p.reshape(-1)
        for j in rng.choice(flat.size, min(3, flat.size), replace=False):
            if name.startswith("embedding") and j < 3:
                continue  # the padding row never moves
            base, h = flat[j], np.float32(3e-3)
            flat[j] = base + h
            up = loss()
            flat[j] = base - h
            down = loss()
            flat[j] = base
            g = grads[name].reshape(-1)[j]
            assert (up - down) / (2 * h) == pytest.approx(g, abs=2e-3, rel=2e-2), (name, j)
            checked += 1
    assert checked >= 25


@pytest.mark.parametrize("name", ["esmm", "sharedbottom"])
def test_actor_loss_gradient_matches_torch(name, gemm, torch):
    from torch_reference import actor_loss, critic_twin_of, twin_of

    actor = rmtl.models.create(name, FIELDS, 2, 2, seed=5, **SMALL)
    critics = [make_critic(seed=10 + k, bias=0.4) for k in range(2)]
    sparse, dense, _ = states()
    weight = np.random.default_rng(3).uniform(0.5, 2, (len(sparse), 2)).astype(np.float32)
    net = twin_of(actor)
    loss = _core.actor_backward(actor._core, [c._core for c in critics], sparse, dense, weight)
    loss_t = actor_loss(
        net,
        [critic_twin_of(c) for c in critics],
        *as_torch(torch, sparse, dense),
        torch.from_numpy(weight),
    )
    loss_t.backward()
    assert loss == pytest.approx(loss_t.item(), rel=1e-5)
    assert_grads_equal(dict(actor.named_grads()), net)


TASK_WEIGHTS = (0.7, 1.9)


def stage3_batch(n=50):
    """A stage-3 batch: states and ESMM labels (pay implies click)."""
    sparse, dense, _ = states(n=n)
    labels = (np.random.default_rng(4).random((n, 2)) < 0.5).astype(np.float32)
    labels[:, 1] *= labels[:, 0]
    return sparse, dense, labels


@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
def test_weighted_step_matches_torch(weighting, gemm, torch):
    """One stage-3 step: the loss, its weights and every gradient equal PyTorch's. static
    weights task k by TASK_WEIGHTS[k]; permuted applies rmtl's weights with the batch's rows
    permuted by _core.permutation(50, seed, 0) (the model's first step), keeping rmtl's sums."""
    from torch_reference import critic_twin_of, twin_of, weighted_bce

    model = rmtl.models.ESMM(FIELDS, 2, 2, seed=7, **SMALL)
    critics = [
        make_critic(seed=20 + k, bias=0.3).eval() for k in range(2)
    ]  # stage 3 uses the critics' mode
    sparse, dense, labels = stage3_batch()
    net, twins = twin_of(model), [critic_twin_of(c).eval() for c in critics]
    lam = 0.7
    extra = {"static": dict(task_weights=TASK_WEIGHTS), "permuted": dict(seed=5)}.get(weighting, {})
    loss_sum, wsum = model.train_chunk(
        np.arange(50),
        sparse,
        dense,
        labels,
        batch_size=50,
        lr=1e-3,
        critics=critics,
        weighting=weighting,
        lam=lam,
        **extra,
    )
    x = as_torch(torch, sparse, dense)
    prob = net(*x)
    with torch.no_grad():
        q = torch.stack([c(*x, prob[:, k].detach()) for k, c in enumerate(twins)], 1)
    y = torch.from_numpy(labels)
    perm = torch.from_numpy(_core.permutation(50, 5, 0))
    w = {
        "rmtl": 1 - lam * q,
        "constant": torch.full_like(q, 0.5),
        "label": 1 - lam * y * q,
        "neg_q": -q,
        "static": torch.tensor(TASK_WEIGHTS).expand_as(q),
        "permuted": (1 - lam * q)[perm],
    }[weighting]
    loss_t = weighted_bce(prob, y, w)
    loss_t.backward()
    assert loss_sum / 50 == pytest.approx(loss_t.item(), rel=1e-5)
    np.testing.assert_allclose(wsum, w.sum(0).numpy(), rtol=1e-5)
    assert (q < 0).any()
    if weighting in ("rmtl", "permuted"):
        assert (w >= 1).all() and (w > 1).any()
    if weighting == "permuted":  # the rows' weights really moved
        assert (w != 1 - lam * q).any(1).float().mean() > 0.5
    assert_grads_equal(dict(model.named_grads()), net)


def stage3_params(weighting=None, chunks=(6,), threads=1, critics=None, **kw):
    """The parameters of a fresh ESMM after sum(chunks) stage-3 steps of 10 rows, run as one
    train_chunk call per entry of chunks (that many steps each) on `threads` threads."""
    model = rmtl.models.ESMM(FIELDS, 2, 2, seed=7, **SMALL)
    sparse, dense, labels = stage3_batch(n=60)
    rows = np.random.default_rng(1).permutation(60)
    before = rmtl.get_num_threads()
    rmtl.set_num_threads(threads)
    try:
        start = 0
        for steps in chunks:
            model.train_chunk(
                rows[start : start + 10 * steps],
                sparse,
                dense,
                labels,
                batch_size=10,
                lr=1e-2,
                critics=critics,
                weighting=weighting,
                lam=0.7,
                **kw,
            )
            start += 10 * steps
    finally:
        rmtl.set_num_threads(before)
    return np.concatenate([p.ravel() for p in model.state_dict().values()])


def test_permuted_weights_reproducible_per_seed():
    """A seed gives the same bits on 1 or 2 threads and for 6 steps in one call or 2 + 4 (the
    permutation follows the model's step count); another seed other weights."""
    critics = [make_critic(seed=20 + k, bias=0.3).eval() for k in range(2)]
    ref = stage3_params("permuted", critics=critics, seed=3)
    np.testing.assert_array_equal(
        stage3_params("permuted", (2, 4), threads=2, critics=critics, seed=3), ref
    )
    assert not np.array_equal(stage3_params("permuted", critics=critics, seed=4), ref)
    assert not np.array_equal(stage3_params("rmtl", critics=critics), ref)
    p = _core.permutation(10, 3, 1)
    assert sorted(p) == list(range(10)) and not np.array_equal(p, _core.permutation(10, 3, 2))


def test_permuted_keeps_rmtl_weight_sums():
    critics = [make_critic(seed=20 + k, bias=0.3).eval() for k in range(2)]
    sparse, dense, labels = stage3_batch()
    sums = [
        rmtl.models.ESMM(FIELDS, 2, 2, seed=7, **SMALL).train_chunk(
            np.arange(50),
            sparse,
            dense,
            labels,
            batch_size=50,
            lr=1e-3,
            critics=critics,
            weighting=w,
            lam=0.7,
        )[1]
        for w in ("rmtl", "permuted")
    ]
    assert sums[0] == sums[1]


def test_static_unit_weights_equal_the_unweighted_step():
    """static with every task weight 1 (and no critics) is the plain BCE step, bit for bit."""
    ones = stage3_params("static", task_weights=np.ones(2, np.float32))
    np.testing.assert_array_equal(ones, stage3_params())
    assert not np.array_equal(stage3_params("static", task_weights=TASK_WEIGHTS), ones)


@pytest.mark.parametrize(
    "weighting,task_weights,match",
    [
        ("static", None, "task_weights: expected a float32 array of 2 weights"),
        ("static", (1.0, 2.0, 3.0), r"task_weights: expected shape \(2\)"),
        ("static", (1.0, -0.5), "task_weights: expected finite weights >= 0, got -0.5 for task 1"),
        ("static", (np.nan, 1.0), "task_weights: expected finite weights >= 0, got nan for task 0"),
        ("static", (np.inf, 1.0), "task_weights: expected finite weights >= 0, got inf"),
        ("rmtl", (1.0, 1.0), "task_weights: only read by the static weighting; expected None"),
        ("permuted", (1.0, 1.0), "task_weights: only read by the static weighting"),
        (None, (1.0, 1.0), "task_weights: only read by the static weighting"),
    ],
)
def test_task_weights_errors_name_the_argument(weighting, task_weights, match):
    model = rmtl.models.ESMM(FIELDS, 2, 2, seed=7, **SMALL)
    critics = [make_critic(seed=20 + k) for k in range(2)]
    sparse, dense, labels = stage3_batch(n=10)
    before = model.state_dict()
    with pytest.raises(ValueError, match=match):
        model.train_chunk(
            np.arange(10),
            sparse,
            dense,
            labels,
            batch_size=10,
            lr=1e-3,
            weighting=weighting,
            critics=critics if weighting else None,
            task_weights=task_weights,
        )
    with pytest.raises(ValueError, match=r"task_weights: expected size 2 in dimension 0, got 3"):
        _core.train_chunk(
            model=model._core,
            rows=np.arange(10),
            sparse=sparse,
            dense=dense,
            labels=labels,
            batch_size=10,
            lr=1e-3,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            weighting=WEIGHTINGS["static"],
            task_weights=np.ones(3, np.float32),
        )
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_soft_update_matches_torch(torch):
    from torch_reference import critic_twin_of, soft_update, twin_of

    target, source = make_critic(seed=1), make_critic(seed=2)
    t_net, s_net = critic_twin_of(target), critic_twin_of(source)
    _core.soft_update(target._core, source._core, 0.2)
    soft_update(t_net, s_net, 0.2)
    for k, v in t_net.state_dict().items():
        np.testing.assert_allclose(
            target.state_dict()[k], v.numpy(), rtol=1e-6, atol=1e-7, err_msg=k
        )
    actor, actor_target = (rmtl.models.ESMM(FIELDS, 2, 2, seed=s, **SMALL) for s in (1, 2))
    a_net, at_net = twin_of(actor), twin_of(actor_target)
    _core.soft_update(actor_target._core, actor._core, 0.2)
    soft_update(at_net, a_net, 0.2)
    for k, v in at_net.state_dict().items():
        np.testing.assert_allclose(
            actor_target.state_dict()[k], v.numpy(), rtol=1e-6, atol=1e-7, err_msg=k
        )
    with pytest.raises(ValueError, match="architecture"):
        _core.soft_update(target._core, make_critic(bottom_dims=(4,))._core, 0.2)
    with pytest.raises(TypeError, match="Critic"):
        _core.soft_update(target._core, actor._core, 0.2)


def test_normal_draws_are_standard_normal_and_seeded():
    from scipy import stats

    z = _core.normal(200_000, 7, 3)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3
    np.testing.assert_array_equal(z, _core.normal(200_000, 7, 3))
    assert not np.array_equal(z[:100], _core.normal(100, 7, 4))


def session_transitions(n_sessions=150, length=4, seed=0):
    """Sessions of hand-built states whose label is fixed by field 0, uniform actions and the
    paper's reward y log a + (1 - y) log(1 - a), clipped to [1e-4, 1]."""
    rng = np.random.default_rng(seed)
    n = n_sessions * length
    sparse = np.stack([rng.integers(1, 6, n), rng.integers(0, 4, n)], 1).astype(np.int32)
    labels = (sparse[:, [0]] >= 3).astype(np.float32)
    dense = rng.normal(size=(n, 1)).astype(np.float32)
    rows = np.arange(n)
    last = rows % length == length - 1
    nxt = np.where(last, rows, rows + 1)
    action = rng.random((n, 1)).astype(np.float32)
    a = np.clip(action, 1e-4, 1)
    b = np.clip(1 - action, 1e-4, 1)
    reward = (labels * np.log(a) + (1 - labels) * np.log(b)).astype(np.float32)
    return (sparse, dense, labels), rows, nxt, action, reward, last.astype(np.float32)


def test_trained_critic_ranks_actions_as_rewards_imply():
    """After TD training, Q(s, a=y) > Q(s, a=1-y): the critic learned that the action matching
    the label earns the higher reward. An untrained critic does not rank them."""
    (sparse, dense, labels), rows, nxt, action, reward, done = session_transitions()
    actor = rmtl.models.SharedBottom(
        (6, 4), 1, 1, embed_dim=8, bottom_dims=(16,), tower_dims=(8,), dropout=0.0
    )
    critic = Critic(
        (6, 4), 1, embed_dim=8, bottom_dims=(32, 16), tower_dims=(16,), dropout=0.0, seed=1
    )
    critic.copy_embedding(actor)
    target = critic.clone()
    y = labels[:, 0]

    def margin():
        return critic.predict(sparse, dense, y) - critic.predict(sparse, dense, 1 - y)

    before = margin()
    B, steps = 60, 300
    order = np.concatenate(
        [np.random.default_rng(s).permutation(len(rows))[:B] for s in range(steps)]
    )
    adam = (3e-3, 0.9, 0.999, 1e-8, 0.0)
    losses, aloss, asteps = _core.td_chunk(
        actor=actor._core,
        actor_target=actor.clone()._core,
        critics=[critic._core],
        targets=[target._core],
        state=rows[order],
        next=nxt[order],
        action=action[order],
        reward=reward[order],
        done=done[order],
        sparse=sparse,
        dense=dense,
        labels=labels,
        batch_size=B,
        step=0,
        gamma=0.9,
        td3=True,
        noise_std=0.4,
        noise_clip=3e-3,
        ips=False,
        tau=0.2,
        soft_update_freq=2,
        actor_update=False,
        actor_update_freq=1,
        init_training_step=0,
        seed=11,
        critic_adam=adam,
        actor_adam=adam,
    )
    assert asteps == 0 and len(losses) == 1 and np.isfinite(losses[0])
    after = margin()
    assert (after > 0).mean() > 0.9 and after.mean() > 1.0
    assert not ((before > 0).mean() > 0.9 and before.mean() > 1.0)


def test_save_load_clone_keep_weights_and_optimizer(tmp_path):
    critic = make_critic(dropout=0.2).train()
    sparse, dense, action = states()
    critic.backward(sparse, dense, action)
    critic.adam_step(1e-2)
    critic.save(tmp_path / "c.npz")
    loaded, twin = Critic.load(tmp_path / "c.npz"), critic.clone()
    assert not loaded.training and twin.training
    for other in (loaded, twin):
        np.testing.assert_array_equal(
            other.predict(sparse, dense, action), critic.predict(sparse, dense, action)
        )
        assert other.optimizer_state()["steps"] == 1
        np.testing.assert_array_equal(
            other.optimizer_state()["adam_v"], critic.optimizer_state()["adam_v"]
        )
    rmtl.save(rmtl.models.ESMM(FIELDS, 2, 2, **SMALL), tmp_path / "m.npz")
    with pytest.raises(ValueError, match="not an rmtl critic file"):
        Critic.load(tmp_path / "m.npz")
    with pytest.raises(FileNotFoundError):
        Critic.load(tmp_path / "missing.npz")


def test_copy_embedding_names_a_task_out_of_range():
    single = rmtl.models.create("singletask", FIELDS, 2, 2, **SMALL)
    critic = make_critic()
    critic.copy_embedding(single, task=1)
    np.testing.assert_array_equal(
        dict(critic.named_parameters())["embedding.embedding.weight"],
        dict(single.named_parameters())["embedding.1.embedding.weight"],
    )
    for task in (2, -1, True, 1.0):
        with pytest.raises(ValueError, match=r"task: expected a task index in \[0, 2\) .*, got"):
            critic.copy_embedding(single, task=task)
    shared = rmtl.models.create("sharedbottom", FIELDS, 2, 2, **dict(SMALL, embed_dim=4))
    with pytest.raises(ValueError, match=r"backbone: .*embed_dim=6\), got shape \(15, 4\)"):
        critic.copy_embedding(shared)
