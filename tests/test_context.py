"""Session context (rmtl.context): the C features against a hand-computed fixture, no label
leakage, each mode reaching the critics and/or the backbone (also through the C training
loops), the synthetic momentum knob, and the checks on user-given inputs."""

import numpy as np
import pytest
from conftest import optional, random_session_data

import rmtl
from rmtl.agent import RMTL
from rmtl.context import CONTEXT_MODES, context_names, session_context, with_context
from rmtl.datasets import synthetic

optional("hypothesis")
# these imports must follow optional(), which skips the module when hypothesis is missing
from hypothesis import HealthCheck, given, settings  # noqa: E402 - after optional()
from hypothesis import strategies as st  # noqa: E402 - after optional()
from hypothesis.extra import numpy as hnp  # noqa: E402 - after optional()

FAST = settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

NET = dict(embed_dim=8, bottom_dims=(16,), tower_dims=(8,), dropout=0.0)


def tiny():
    """Two sessions (3 rows, 2 rows), times in ms, click/pay labels."""
    return rmtl.SessionData(
        [7, 7, 7, 4, 4],
        [1000, 3000, 3000, 50, 10050],
        np.zeros((5, 1), np.int64),
        np.arange(5, dtype=np.float32)[:, None],
        [[1, 1], [1, 0], [0, 0], [0, 0], [1, 0]],
        [2],
        task_names=("click", "pay"),
    )


def test_context_matches_hand_computed_fixture():
    ctx = session_context(tiny())
    want = np.log1p(
        np.array(
            [
                # position, seconds since start, clicks so far, pays so far
                [0, 0, 0, 0],
                [1, 2, 1, 1],
                [2, 2, 2, 1],
                [0, 0, 0, 0],
                [1, 10, 0, 0],
            ],
            np.float64,
        )
    ).astype(np.float32)
    np.testing.assert_allclose(ctx, want, rtol=1e-6)
    assert context_names(tiny()) == (
        "ctx_position",
        "ctx_seconds",
        "ctx_click_so_far",
        "ctx_pay_so_far",
    )


def test_context_never_reads_a_rows_own_or_later_labels():
    data = random_session_data(n_sessions=40, seed=3)
    base = session_context(data)
    rng = np.random.default_rng(0)
    for r in rng.choice(len(data), 10, replace=False):
        labels = data.labels.copy()
        labels[r:] = 1 - labels[r:]  # flip this row and every later row
        flipped = session_context(
            rmtl.SessionData(
                data.session, data.time, data.sparse, data.dense, labels, data.field_dims
            )
        )
        np.testing.assert_array_equal(flipped[: r + 1], base[: r + 1])
        end = data.offsets[np.searchsorted(data.offsets, r, side="right")]
        if end > r + 1:  # later rows of the same session see the flipped label
            assert not np.array_equal(flipped[r + 1 : end, 2:], base[r + 1 : end, 2:])


def test_context_is_the_same_before_and_after_a_split():
    data = random_session_data(n_sessions=30, seed=1)
    parts = data.split((0.5, 0.5))
    whole = with_context(data, "both")
    for part in parts:
        idx = np.flatnonzero(np.isin(data.session, part.session))
        np.testing.assert_array_equal(with_context(part, "both").dense, whole.dense[idx])


@pytest.mark.parametrize(
    "mode, backbone_sees, critic_sees",
    [
        (None, False, False),
        ("critic", False, True),
        ("backbone", True, False),
        ("both", True, True),
    ],
)
def test_each_mode_reaches_the_side_it_names(mode, backbone_sees, critic_sees):
    data = random_session_data(n_sessions=50, num_dense=1, seed=2)
    C = 2 + data.num_tasks
    ctx_data = with_context(data, mode)
    assert ctx_data.num_dense == 1 + C * backbone_sees
    assert ctx_data.critic_num_dense == 1 + C * critic_sees
    model = rmtl.models.create(
        "esmm", field_dims=data.field_dims, num_dense=ctx_data.num_dense, num_tasks=2, seed=0, **NET
    )
    agent = RMTL(
        model,
        progress=False,
        epochs=1,
        critic_epochs=1,
        batch_size=64,
        critic_batch_size=64,
        critic_bottom_dims=(16,),
        critic_tower_dims=(8,),
        critic_output_bias=1.0,
    )
    agent.fit(ctx_data, ctx_data)
    assert agent.critics[0].config.num_dense == ctx_data.critic_num_dense
    # shift every context feature: only the sides that read them change their output
    shifted = with_context(data, mode)
    if mode in ("backbone", "both"):
        shifted.dense[:, 1:] += 3.0
    if shifted.critic_only is not None:
        shifted.critic_only[...] += 3.0
    prob = np.full((len(data), 2), 0.3, np.float32)
    changed_q = not np.allclose(agent.q_values(ctx_data, prob), agent.q_values(shifted, prob))
    changed_p = not np.allclose(
        agent.backbone.predict(ctx_data.sparse, ctx_data.dense),
        agent.backbone.predict(shifted.sparse, shifted.dense),
    )
    assert (changed_q, changed_p) == (critic_sees, backbone_sees)


@pytest.mark.parametrize("mode", ["critic", "backbone", "both"])
def test_stage3_weights_in_c_use_the_critics_state(mode):
    """The C loop's stage-3 weights -Q (at a learning rate too small to move any float32
    parameter) equal Q of the critics' state as Python assembles it."""
    data = with_context(random_session_data(n_sessions=50, num_dense=1, seed=4), mode)
    model = rmtl.models.create(
        "esmm", field_dims=data.field_dims, num_dense=data.num_dense, num_tasks=2, seed=1, **NET
    )
    critics = [
        rmtl.Critic(
            data.field_dims, data.critic_num_dense, 8, (16,), (8,), dropout=0.0, seed=k
        ).eval()
        for k in range(2)
    ]
    prob = model.predict(data.sparse, data.dense)
    _, sums = model.train(True).train_chunk(
        np.arange(len(data)),
        data.sparse,
        data.dense,
        data.labels,
        batch_size=32,
        lr=1e-30,
        critics=critics,
        weighting="neg_q",
        extra=data.critic_only,
    )
    state = data.critic_dense()
    for k in range(2):
        want = -critics[k].predict(data.sparse, state, np.ascontiguousarray(prob[:, k])).sum()
        assert sums[k] == pytest.approx(float(want), rel=1e-4)


def test_stage2_critics_learn_from_their_extra_state():
    data = with_context(random_session_data(n_sessions=60, num_dense=1, seed=5), "critic")
    model = rmtl.models.create(
        "esmm", field_dims=data.field_dims, num_dense=1, num_tasks=2, seed=0, **NET
    )

    def td_losses(d):
        agent = RMTL(
            model.clone(),
            progress=False,
            critic_epochs=1,
            critic_batch_size=64,
            critic_bottom_dims=(16,),
            critic_tower_dims=(8,),
        )
        return agent.fit_critics(d)[0]

    shifted = with_context(random_session_data(n_sessions=60, num_dense=1, seed=5), "critic")
    shifted.critic_only[...] *= 5.0
    assert td_losses(data) == td_losses(data)
    assert td_losses(data) != td_losses(shifted)


def test_critics_of_another_context_are_refused():
    data = random_session_data(n_sessions=20, num_dense=1)
    critics = [rmtl.Critic(data.field_dims, 1, 8, (16,), (8,)) for _ in range(2)]
    model = rmtl.models.create("esmm", field_dims=data.field_dims, num_dense=1, num_tasks=2, **NET)
    trainer = rmtl.Trainer(model, progress=False, critics=critics, weighting="rmtl", lam=0.5)
    with pytest.raises(ValueError, match="critic_num_dense"):
        trainer.fit(with_context(data, "critic"), data, epochs=1)


def test_context_survives_save_and_load(tmp_path):
    data = with_context(random_session_data(n_sessions=10, seed=6), "backbone")
    data.save(tmp_path / "d.npz")
    back = rmtl.SessionData.load(tmp_path / "d.npz")
    assert (
        back.backbone_only == data.backbone_only and back.critic_num_dense == data.critic_num_dense
    )
    crit = with_context(random_session_data(n_sessions=10, seed=6), "critic")
    crit.save(tmp_path / "c.npz")
    np.testing.assert_array_equal(
        rmtl.SessionData.load(tmp_path / "c.npz").critic_only, crit.critic_only
    )


def test_with_context_checks_its_arguments():
    data = random_session_data(n_sessions=5)
    assert with_context(data, None) is data
    with pytest.raises(ValueError, match="mode"):
        with_context(data, "actor")
    with pytest.raises(ValueError, match="already"):
        with_context(with_context(data, "critic"), "both")
    with pytest.raises(TypeError, match="data"):
        session_context(data.labels)
    for mode in CONTEXT_MODES:
        with pytest.raises(TypeError, match="data: expected rmtl.SessionData, got ndarray"):
            with_context(data.labels, mode)


def test_momentum_raises_the_click_probability_after_a_click():
    kw = dict(n_users=60, seed=1, calibrate=False, click_offset=-2.0, task2_offset=-2.0)
    flat, lifted = synthetic("retailrocket", **kw), synthetic("retailrocket", momentum=1.0, **kw)
    for s in range(flat.num_sessions):
        a, b = flat.offsets[s], flat.offsets[s + 1]
        clicks = np.flatnonzero(flat.labels[a:b, 0])
        first = clicks[0] if clicks.size else b - a - 1
        # the same draws up to the first click; the row after it is more likely clicked
        np.testing.assert_array_equal(
            flat.truth[a : a + first + 1], lifted.truth[a : a + first + 1]
        )
        if clicks.size and first + 1 < b - a:
            assert lifted.truth[a + first + 1, 0] > flat.truth[a + first + 1, 0]


# ------------------------------------------------------------------ property-based input checks
def reference_context(data):
    """The features by their definition, one row at a time in Python."""
    out = []
    for s in range(data.num_sessions):
        a, b = data.offsets[s], data.offsets[s + 1]
        for r in range(a, b):
            seen = data.labels[a:r].sum(0)
            out.append(
                [np.log1p(r - a), np.log1p((data.time[r] - data.time[a]) / 1000.0), *np.log1p(seen)]
            )
    return np.array(out, np.float32)


@FAST
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=8),
    tasks=st.integers(1, 3),
    seed=st.integers(0, 2**31),
)
def test_context_equals_its_definition_on_random_sessions(lengths, tasks, seed):
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    session = np.repeat(np.arange(len(lengths)), lengths)
    time = np.concatenate([np.sort(rng.integers(0, 10**7, k)) for k in lengths])
    labels = (rng.random((n, tasks)) < 0.5).astype(np.float32)
    data = rmtl.SessionData(session, time, np.zeros((n, 1), np.int64), None, labels, [1])
    np.testing.assert_allclose(session_context(data), reference_context(data), rtol=1e-6, atol=1e-7)


@FAST
@given(
    backbone_only=st.one_of(st.integers(-3, 5), st.floats(), st.booleans(), st.text(max_size=2)),
    extra=st.one_of(
        st.none(),
        hnp.arrays(
            hnp.floating_dtypes() | hnp.integer_dtypes(),
            hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
        ),
    ),
)
def test_session_data_checks_the_one_sided_features(backbone_only, extra):
    base = random_session_data(n_sessions=2, num_dense=2, seed=0)
    try:
        data = rmtl.SessionData(
            base.session[:5],
            base.time[:5],
            base.sparse[:5],
            base.dense[:5],
            base.labels[:5],
            base.field_dims,
            backbone_only=backbone_only,
            critic_only=extra,
        )
    except (ValueError, TypeError) as e:
        assert str(e).split(":")[0] in ("backbone_only", "critic_only"), str(e)
        return
    width = 0 if extra is None else extra.shape[1]
    assert (
        data.critic_dense().shape
        == (5, 2 - data.backbone_only + width)
        == (5, data.critic_num_dense)
    )


@FAST
@given(
    mode=st.one_of(
        st.text(max_size=8), st.integers(), st.none(), st.sampled_from(["critic", "both"])
    ),
    what=st.sampled_from(["session data", "labels", None, 3, "text"]),
)
def test_with_context_accepts_only_its_modes(mode, what):
    data = random_session_data(n_sessions=3, seed=1)
    data = {"session data": data, "labels": data.labels}.get(what, what)
    try:
        out = with_context(data, mode)
    except TypeError as e:
        assert str(e).startswith("data:") and not isinstance(data, rmtl.SessionData)
        return
    except ValueError as e:
        assert str(e).startswith("mode:") and mode not in (None, "critic", "backbone", "both")
        return
    assert isinstance(data, rmtl.SessionData)
    assert out.critic_num_dense >= data.critic_num_dense


def test_the_core_checks_extra_and_the_critics_width():
    data = with_context(random_session_data(n_sessions=10, num_dense=1, seed=2), "critic")
    model = rmtl.models.create("esmm", field_dims=data.field_dims, num_dense=1, num_tasks=2, **NET)
    critics = [
        rmtl.Critic(data.field_dims, data.critic_num_dense, 8, (16,), (8,)) for _ in range(2)
    ]
    rows = np.arange(len(data))

    def step(extra, crit=critics, weighting="rmtl"):
        return model.train_chunk(
            rows,
            data.sparse,
            data.dense,
            data.labels,
            batch_size=8,
            lr=1e-3,
            critics=crit,
            weighting=weighting,
            extra=extra,
        )

    step(data.critic_only)
    with pytest.raises(ValueError, match="^extra"):
        step(data.critic_only[:-1])
    with pytest.raises(ValueError, match="^extra"):
        step(np.full_like(data.critic_only, np.nan))
    with pytest.raises(ValueError, match="^critics"):  # critics wider than dense + extra
        step(None)
    narrow = [rmtl.Critic(data.field_dims, 1, 8, (16,), (8,)) for _ in range(2)]
    with pytest.raises(ValueError, match="^critics"):  # mixed widths
        step(data.critic_only, [critics[0], narrow[1]])
    with pytest.raises(ValueError, match="^extra"):
        rmtl._core.train_chunk(
            model=model._core,
            rows=rows,
            sparse=data.sparse,
            dense=data.dense,
            labels=data.labels,
            batch_size=8,
            lr=1e-3,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            extra=data.critic_only,
        )


def test_run_settings_take_a_context(monkeypatch):
    from rmtl.lab import cli
    from rmtl.lab import settings as job

    assert job.RunConfig(context="both").resolved().context == "both"
    with pytest.raises(ValueError, match="^context"):
        job.RunConfig(context="actor").resolved()
    seen = []

    def stop(config, on_result=None):
        seen.append(config)
        raise SystemExit

    monkeypatch.setattr(cli, "run", stop)
    with pytest.raises(SystemExit):
        cli.main(["run", "--context", "critic", "--no-progress"])
    assert seen[0].context == "critic"
