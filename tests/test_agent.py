"""RMTL agent: the three stages, weights, transfer, checkpoints and resume, bad arguments."""

import json
import os

import numpy as np
import pytest

import rmtl

NET = dict(embed_dim=8, bottom_dims=(16, 8), tower_dims=(8,), dropout=0.1)
FAST = dict(
    critic_bottom_dims=(16, 8),
    critic_tower_dims=(8,),
    critic_epochs=3,
    critic_batch_size=64,
    batch_size=64,
    epochs=3,
    lr=1e-2,
    critic_lr=3e-3,
    progress=False,
)


def session_data(n_sessions=300, seed=0):
    """Sessions whose click rate is set by field 0 and falls with the position in the session,
    purchases a fraction of clicks: something for both the backbone and the critics to learn."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 7, n_sessions)
    n = int(lengths.sum())
    pos = np.concatenate([np.arange(k) for k in lengths])
    sparse = np.stack([rng.integers(1, 6, n), rng.integers(0, 4, n), np.minimum(pos, 3)], 1)
    p = np.array([0.0, 0.05, 0.2, 0.5, 0.8, 0.95])[sparse[:, 0]] * 0.85**pos
    click = (rng.random(n) < p).astype(np.float32)
    pay = click * (rng.random(n) < 0.5)
    return rmtl.SessionData(
        np.repeat(np.arange(n_sessions), lengths),
        np.arange(n),
        sparse,
        rng.normal(size=(n, 1)),
        np.stack([click, pay], 1),
        (6, 4, 4),
        truth=np.stack([p, 0.5 * p], 1),
    )


@pytest.fixture(scope="module")
def splits():
    return session_data().split()


def make_agent(data, name="esmm", seed=0, **kw):
    model = rmtl.models.create(
        name, data.field_dims, data.num_dense, data.num_tasks, seed=seed, **NET
    )
    return rmtl.RMTL(model, seed=seed, **dict(FAST, **kw))


def test_fit_runs_three_stages(splits):
    tr, va, te = splits
    agent = make_agent(tr).fit(tr, va)
    assert set(agent.history) == {"pretrain", "critics", "finetuned-rmtl"}
    assert len(agent.critics) == 2 and all(not c.training for c in agent.critics)
    assert agent.backbone is not agent.pretrained and not agent.backbone.training
    p0, p1 = (
        agent.pretrained.predict(te.sparse, te.dense),
        agent.backbone.predict(te.sparse, te.dense),
    )
    assert not np.allclose(p0, p1)
    critics = agent.history["critics"]
    assert len(critics["epochs"]) == 3 and critics["complete"]
    assert all(np.isfinite(r["td_loss_task0"]) for r in critics["epochs"])
    epochs = agent.history["finetuned-rmtl"]["epochs"]
    assert all(e["mean_weight_task0"] >= 1 and e["mean_weight_task1"] >= 1 for e in epochs)
    assert rmtl.evaluate(agent.backbone, te)["task0"]["auc"] > 0.7


def test_stage3_weights_at_least_one_and_match_formulas(splits):
    tr, va, te = splits
    agent = make_agent(tr)
    agent.pretrain(tr, va)
    agent.fit_critics(tr)
    prob = agent.pretrained.predict(te.sparse, te.dense)
    q = agent.q_values(te, prob)
    assert (q <= 0).all() and (q < 0).mean() > 0.5
    w = agent.loss_weights(te)
    assert (w >= 1).all() and (w > 1).any()
    np.testing.assert_allclose(w, 1 - 0.7 * q, rtol=1e-6)
    np.testing.assert_allclose(
        agent.loss_weights(te, weighting="label"), 1 - 0.7 * te.labels * q, rtol=1e-6
    )
    np.testing.assert_allclose(agent.loss_weights(te, weighting="neg_q"), -q, rtol=1e-6)
    assert (agent.loss_weights(te, weighting="constant") == 0.5).all()
    # the controls: continued every weight one, static its task weights, permuted RMTL's own
    assert (agent.loss_weights(te, weighting="continued") == 1).all()
    static = agent.loss_weights(te, weighting="static", task_weights=(1.5, 2.5))
    assert (static[:, 0] == 1.5).all() and (static[:, 1] == 2.5).all()
    np.testing.assert_array_equal(agent.loss_weights(te, weighting="permuted"), w)
    with pytest.raises(ValueError, match="task_weights"):
        agent.loss_weights(te, weighting="static")
    with pytest.raises(ValueError, match="task_weights: only read by the static weighting"):
        agent.loss_weights(te, task_weights=(1.0, 1.0))
    rmtl_kind = rmtl._core.enums["weighting"]["rmtl"]
    with pytest.raises(TypeError, match="q: expected dtype float32"):
        rmtl._core.loss_weights(q.astype(np.float64), te.labels, rmtl_kind, lam=0.7)
    with pytest.raises(ValueError, match="q: expected size 2 in dimension 1"):
        rmtl._core.loss_weights(np.ascontiguousarray(q[:, :1]), te.labels, rmtl_kind, lam=0.7)
    hist = agent.finetune(tr, va, weighting="neg_q")
    assert all(e["mean_weight_task0"] >= 0 for e in hist.epochs)


def test_critics_rank_actions_as_rewards_imply(splits):
    """Stage 2 through the agent. The expected reward of action a is p log a + (1-p) log(1-a)
    with p the true probability, so a=1 beats a=0 exactly where p > 1/2: the critics must
    rank the two actions that way wherever p is clearly away from 1/2."""
    tr, va, _ = splits
    agent = make_agent(tr, critic_epochs=100)
    agent.fit_critics(tr)
    ones = np.ones_like(tr.labels)
    margin = agent.q_values(tr, ones) - agent.q_values(tr, 0 * ones)
    clear = np.abs(tr.truth - 0.5) > 0.25
    agree = np.sign(margin) == np.sign(tr.truth - 0.5)
    for k in range(2):
        assert agree[clear[:, k], k].mean() > 0.85, k
    assert (
        margin[tr.truth[:, 0] > 0.75, 0].mean() > 1.0
        and margin[tr.truth[:, 0] < 0.25, 0].mean() < -1.0
    )


def test_constant_weighting_needs_no_critics(splits):
    tr, va, _ = splits
    agent = make_agent(tr, weighting="constant")
    agent.pretrain(tr, va)
    hist = agent.finetune(tr, va)
    assert all(e["mean_weight_task0"] == pytest.approx(0.5) for e in hist.epochs)
    with pytest.raises(RuntimeError, match="fit_critics"):
        agent.finetune(tr, va, weighting="rmtl")


@pytest.mark.parametrize("name", ["esmm", "mmoe"])
def test_continued_equals_rmtl_at_lam_zero(splits, name):
    """The control is RMTL's stage 3 with every weight one: same epochs, early stopping, batch
    order, seed and fresh Adam, so at lam = 0 (w = 1 - 0 Q = 1) the two are bit-for-bit equal;
    at lam > 0 they differ."""
    tr, va, te = splits
    agent = make_agent(tr, name=name)
    agent.pretrain(tr, va)
    agent.fit_critics(tr)
    runs = {}
    for weighting, lam in (("continued", None), ("rmtl", 0.0), ("rmtl", None)):
        hist = agent.finetune(tr, va, weighting=weighting, lam=lam)
        runs[weighting, lam] = (
            agent.backbone.state_dict(),
            hist.column("train_loss"),
            hist.column("valid_auc"),
        )
    control, zero, weighted = runs["continued", None], runs["rmtl", 0.0], runs["rmtl", None]
    assert control[2] == zero[2]  # validation AUC per epoch: same epochs, same early stopping
    # the epoch's loss is summed per C call, whose size follows the clock: equal up to rounding
    assert control[1] == pytest.approx(zero[1], rel=1e-12)
    for key, value in control[0].items():
        np.testing.assert_array_equal(value, zero[0][key], err_msg=key)
    assert control[1] != weighted[1]
    assert (agent.loss_weights(te, weighting="continued") == 1).all()


def test_continued_needs_no_critics(splits):
    tr, va, _ = splits
    agent = make_agent(tr, weighting="continued")
    agent.pretrain(tr, va)
    assert len(agent.finetune(tr, va).epochs) >= 1 and not agent.critics


def test_same_seed_same_result(splits):
    tr, va, te = splits
    preds = [
        make_agent(tr, seed=s, target=t).fit(tr, va).backbone.predict(te.sparse, te.dense)
        for s, t in ((4, "ddpg"), (4, "ddpg"), (5, "ddpg"))
    ]
    np.testing.assert_array_equal(preds[0], preds[1])
    assert not np.array_equal(preds[0], preds[2])


def test_checkpoints_resume_every_stage(splits, tmp_path):
    tr, va, te = splits
    full = make_agent(tr, checkpoint_dir=tmp_path / "full").fit(tr, va)
    # stop stage 2 after one epoch, then resume with a new agent on the same directory
    part = make_agent(tr, checkpoint_dir=tmp_path / "part")
    part.pretrain(tr, va)
    part.fit_critics(tr, epochs=1)
    resumed = make_agent(tr, checkpoint_dir=tmp_path / "part").fit(tr, va)
    assert [r["epoch"] for r in resumed.history["critics"]["epochs"]] == [1, 2, 3]
    np.testing.assert_array_equal(
        resumed.pretrained.predict(te.sparse, te.dense),
        full.pretrained.predict(te.sparse, te.dense),
    )
    for a, b in zip(resumed.critics, full.critics):
        np.testing.assert_array_equal(
            a.predict(te.sparse, te.dense, te.labels[:, 0]),
            b.predict(te.sparse, te.dense, te.labels[:, 0]),
        )
    # a finished run reloads without training and gives the same model
    again = make_agent(tr, checkpoint_dir=tmp_path / "full")
    before = os.path.getmtime(tmp_path / "full" / "finetuned-rmtl.npz")
    again.fit(tr, va)
    assert os.path.getmtime(tmp_path / "full" / "finetuned-rmtl.npz") == before
    np.testing.assert_array_equal(
        again.backbone.predict(te.sparse, te.dense), full.backbone.predict(te.sparse, te.dense)
    )
    assert again.history == full.history


def test_checkpoint_dir_of_another_configuration_is_refused(splits, tmp_path):
    tr, va, _ = splits
    make_agent(tr, checkpoint_dir=tmp_path)
    with open(tmp_path / "agent.json") as f:
        assert json.load(f)["config"]["lam"] == 0.7
    with pytest.raises(ValueError, match="another configuration"):
        make_agent(tr, checkpoint_dir=tmp_path, lam=0.5)
    with pytest.raises(ValueError, match="another configuration"):
        make_agent(tr, name="sharedbottom", checkpoint_dir=tmp_path)


def test_transfer_weights_another_backbone(splits, tmp_path):
    tr, va, te = splits
    agent = make_agent(tr, checkpoint_dir=tmp_path).fit(tr, va)
    own = agent.backbone
    other = rmtl.models.create("sharedbottom", tr.field_dims, 1, 2, seed=3, **NET)
    rmtl.Trainer(other, lr=1e-2, batch_size=64, progress=False).fit(tr, va, epochs=2)
    start = other.predict(te.sparse, te.dense)
    hist = agent.finetune(tr, va, backbone=other)
    assert agent.backbone is own and hist.epochs
    assert not np.allclose(other.predict(te.sparse, te.dense), start)
    assert (tmp_path / "transfer-sharedbottom-seed3-rmtl.npz").exists()
    assert all(e["mean_weight_task0"] >= 1 for e in hist.epochs)


def test_actor_update_and_variants_run(splits):
    tr, va, _ = splits
    agent = make_agent(
        tr,
        actor_update=True,
        init_training_step=0,
        behaviour="actor",
        ips=True,
        reward="abs",
        target="ddpg",
    )
    agent.pretrain(tr, va)
    before = agent.pretrained.state_dict()
    records = agent.fit_critics(tr)
    assert all(np.isfinite(r["actor_loss"]) for r in records)
    actor = agent._stage2.actor
    assert any(not np.array_equal(actor.state_dict()[k], v) for k, v in before.items())
    for k, v in before.items():  # stage 3 restarts from the pretrained weights, untouched
        np.testing.assert_array_equal(agent.pretrained.state_dict()[k], v)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(behaviour="greedy"), "behaviour"),
        (dict(target="sac"), "target"),
        (dict(weighting="x"), "weighting"),
        (dict(gamma=1.5), "gamma"),
        (dict(critic_batch_size=0), "critic_batch_size"),
        (dict(lam=-1), "lam"),
    ],
)
def test_bad_arguments_name_the_option(splits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_agent(splits[0], **kwargs)


def test_bad_calls(splits):
    tr, va, _ = splits
    with pytest.raises(TypeError, match="unexpected keyword"):
        make_agent(tr, critic_layers=3)
    with pytest.raises(TypeError, match="backbone"):
        rmtl.RMTL("esmm")
    agent = make_agent(tr)
    with pytest.raises(RuntimeError, match="fit_critics"):
        agent.q_values(tr, tr.labels)
    with pytest.raises(ValueError, match="weighting"):
        agent.finetune(tr, va, weighting="square")
    with pytest.raises(ValueError, match="epochs"):
        agent.fit_critics(tr, epochs=0)


def test_an_agent_from_a_ready_config_trains_as_from_its_keywords(splits):
    """RMTL.from_config takes an RMTLConfig as it is (its construction checked it);
    RMTLConfig.replace checks only what it changes; from_kwargs is RMTL's own conversion."""
    tr, va, _ = splits
    kwargs = {k: v for k, v in FAST.items() if k != "progress"}
    config = rmtl.RMTLConfig.from_kwargs(kwargs)
    assert config == rmtl.RMTLConfig(**kwargs)
    model = rmtl.models.create("esmm", tr.field_dims, tr.num_dense, tr.num_tasks, **NET)
    typed = rmtl.RMTL.from_config(model, config, progress=False)
    plain = make_agent(tr)
    assert typed.config is config and typed.config == plain.config
    a, b = typed.pretrain(tr, va), plain.pretrain(tr, va)
    assert a.column("train_loss") == b.column("train_loss") and a.best_epoch == b.best_epoch
    with pytest.raises(TypeError, match="config: expected an rmtl.RMTLConfig"):
        rmtl.RMTL.from_config(model, kwargs)
    with pytest.raises(ValueError, match="ple_paper"):
        rmtl.RMTL.from_config(
            rmtl.models.create("ple_paper", tr.field_dims, tr.num_dense, tr.num_tasks, **NET),
            config,
            compat="authors",
        )
    assert config.replace(lam=1, seed=4) == rmtl.RMTLConfig(**dict(kwargs, lam=1.0, seed=4))
    with pytest.raises(ValueError, match="lam: expected a finite value"):
        config.replace(lam=-1)
    for bad in (float("inf"), float("nan")):  # no bounds to show: just finite
        with pytest.raises(ValueError, match=r"critic_output_bias: expected a finite number, got"):
            config.replace(critic_output_bias=bad)
    with pytest.raises(TypeError, match="unexpected fields"):
        config.replace(colour=1)
    authors = rmtl.RMTLConfig.from_kwargs({"reward": "bce"}, compat="authors")
    assert authors.batch_order == "time" and authors.reward == "bce"  # given beats the authors'
    with pytest.raises(TypeError, match="lam: expected a number, got None"):
        rmtl.RMTLConfig(lam=None)  # None only where the field allows it
    assert rmtl.RMTLConfig(finetune_epochs=None, critic_output_bias=None).finetune_epochs is None


def test_finetune_lam_override(splits, tmp_path):
    tr, va, te = splits
    agent = make_agent(tr, checkpoint_dir=tmp_path)
    agent.pretrain(tr, va)
    agent.fit_critics(tr)
    hist = agent.finetune(tr, va, lam=2.0)
    q = agent.q_values(tr, agent.pretrained.predict(tr.sparse, tr.dense))
    assert hist.epochs[0]["mean_weight_task0"] == pytest.approx(
        float((1 - 2.0 * q[:, 0]).mean()), rel=0.2
    )
    assert (tmp_path / "finetuned-rmtl-lam2.npz").exists()
    assert "finetuned-rmtl-lam2" in agent.history
    with pytest.raises(ValueError, match="lam"):
        agent.finetune(tr, va, lam=-1)


def test_on_epoch_sees_every_epoch_of_stages_1_and_3(splits):
    tr, va, _ = splits
    seen = []
    agent = make_agent(
        tr, on_epoch=lambda stage, rec: seen.append((stage, rec["epoch"], rec["valid_auc"]))
    )
    agent.fit(tr, va)
    expected = [
        (stage, e["epoch"], e["valid_auc"])
        for stage in ("pretrain", "finetuned-rmtl")
        for e in agent.history[stage]["epochs"]
    ]
    assert seen == expected and len(seen) >= 2
