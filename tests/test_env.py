"""The session MDP: SessionEnv and VecSessionEnv against hand-built sessions."""

import warnings

import numpy as np
import pytest
from conftest import optional, random_session_data

import rmtl
from rmtl.env import SessionEnv, VecSessionEnv

CLIP = np.log(np.float32(1e-4))


def hand_data():
    """Three sessions of lengths 3, 1 and 2 (rows 0-2, 3, 4-5), two fields, one dense, two tasks."""
    session = np.array([7, 7, 7, 3, 9, 9])
    time = np.array([1, 2, 2, 5, 1, 8])
    sparse = np.array([[1, 0], [2, 4], [3, 1], [0, 2], [1, 1], [2, 3]])
    dense = np.array([[0.5], [-1.0], [2.0], [0.0], [3.5], [-2.5]], np.float32)
    labels = np.array([[1, 0], [0, 0], [1, 1], [0, 0], [1, 0], [1, 1]], np.float32)
    return rmtl.SessionData(session, time, sparse, dense, labels, (4, 5))


def bce_reward(a, y):
    a = np.asarray(a, np.float64)
    clip = lambda p: np.clip(p, 1e-4, 1.0)  # noqa: E731
    return y * np.log(clip(a)) + (1 - y) * np.log(clip(1 - a))


def test_bce_reward_values_by_hand():
    data = hand_data()
    env = SessionEnv(data, reward="bce")
    env.reset(options={"session": 0})
    # row 0, labels (1, 0): a = (0.5, 0.2) -> (log 0.5, log 0.8)
    _, r, *_ = env.step([0.5, 0.2])
    np.testing.assert_allclose(r, [np.log(0.5), np.log(0.8)], rtol=1e-6)
    # row 1, labels (0, 0): a = (1, 0) -> (log clip(0) = log 1e-4, log 1 = 0): reward clipping
    _, r, *_ = env.step([1.0, 0.0])
    np.testing.assert_allclose(r, [CLIP, 0.0], rtol=1e-6, atol=1e-7)
    # row 2, labels (1, 1): a = (0, 1) -> (log 1e-4, 0)
    _, r, *_ = env.step([0.0, 1.0])
    np.testing.assert_allclose(r, [CLIP, 0.0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reward", ["bce", "abs", "bce_wrapped"])
def test_transitions_of_hand_built_sessions(reward):
    data = hand_data()
    env = SessionEnv(data, reward=reward, order="sequential")
    actions = np.array(
        [[0.5, 0.2], [1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.9, 0.1], [0.25, 0.75]], np.float32
    )
    expect = {  # session -> (rows, next rows, terminated)
        0: ([0, 1, 2], [1, 2, 2], [False, False, True]),
        1: ([3], [3], [True]),
        2: ([4, 5], [5, 5], [False, True]),
    }
    for s in range(3):
        obs, info = env.reset()
        assert info == {"session": s, "row": data.offsets[s]}
        rows, nexts, dones = expect[s]
        np.testing.assert_array_equal(obs["sparse"], data.sparse[rows[0]])
        for r, nxt, done in zip(rows, nexts, dones):
            obs, rew, term, trunc, info = env.step(actions[r])
            y = data.labels[r]
            want = {
                "bce": bce_reward(actions[r], y),
                "abs": -np.abs(actions[r] - y),
                "bce_wrapped": bce_reward(0.5 + 0.5 * actions[r].astype(np.float64), y),
            }[reward]
            np.testing.assert_allclose(rew, want, rtol=1e-6, atol=1e-7)
            assert rew.dtype == np.float32 and rew.shape == (2,)
            assert (term, trunc) == (done, False)
            assert info["row"] == r and info["next_row"] == nxt and info["session"] == s
            np.testing.assert_array_equal(info["labels"], y)
            # the observation is the next state: the last row itself at the end
            np.testing.assert_array_equal(obs["sparse"], data.sparse[nxt])
            np.testing.assert_array_equal(obs["dense"], data.dense[nxt])
            assert obs["sparse"].dtype == np.int32 and obs["dense"].dtype == np.float32


def test_same_seed_same_episodes():
    data = random_session_data(n_sessions=200, seed=1)

    def episodes(env, n, seed=None):
        first = env.reset(seed=seed)[1]["session"]
        return [first] + [env.reset()[1]["session"] for _ in range(n - 1)]

    a = episodes(SessionEnv(data, seed=3), 30)
    assert a == episodes(SessionEnv(data, seed=3), 30)
    assert a != episodes(SessionEnv(data, seed=4), 30)
    # reset(seed=...) restarts the draws as a fresh environment with that seed
    assert episodes(SessionEnv(data, seed=9), 30, seed=3) == a
    assert len(set(a)) > 20  # drawn at random, not in order
    assert episodes(SessionEnv(data, order="sequential"), 5) == [0, 1, 2, 3, 4]


def test_vec_env_matches_single_env_rollouts():
    data = random_session_data(n_sessions=100, seed=2)
    N, T, steps = 3, data.num_tasks, 40
    vec = VecSessionEnv(data, N, seed=5)
    obs, info = vec.reset()
    assert obs["sparse"].shape == (N, data.num_fields) and obs["dense"].shape == (N, data.num_dense)
    # episode e of the vector env is episode e of a single env with the same seed, assigned
    # in environment order
    single = SessionEnv(data, seed=5)
    order = [single.reset()[1]["session"] for _ in range(200)]
    assert list(info["session"]) == order[:N]
    rng = np.random.default_rng(0)
    current, started = list(info["session"]), N
    for _ in range(steps):
        a = rng.random((N, T), dtype=np.float32)
        obs, rew, term, trunc, info = vec.step(a)
        assert rew.shape == (N, T) and term.dtype == bool and not trunc.any()
        np.testing.assert_array_equal(info["session"], current)
        np.testing.assert_allclose(
            rew, bce_reward(a, data.labels[info["row"]]), rtol=1e-5, atol=1e-6
        )
        last = info["row"] + 1 == data.offsets[info["session"] + 1]
        np.testing.assert_array_equal(term, last)
        np.testing.assert_array_equal(
            info["next_row"], np.where(last, info["row"], info["row"] + 1)
        )
        for i in np.flatnonzero(term):  # same-step reset: the next session's first row
            current[i] = order[started]
            started += 1
            np.testing.assert_array_equal(obs["sparse"][i], data.sparse[data.offsets[current[i]]])
        for i in np.flatnonzero(~term):
            np.testing.assert_array_equal(obs["sparse"][i], data.sparse[info["row"][i] + 1])
    assert started > N


def test_vec_env_options_pick_sessions():
    data = hand_data()
    vec = VecSessionEnv(data, 2, reward="abs")
    obs, info = vec.reset(options={"sessions": [2, 1]})
    np.testing.assert_array_equal(info["row"], [4, 3])
    _, rew, term, _, info = vec.step(np.array([[1.0, 0.0], [0.5, 0.5]], np.float32))
    np.testing.assert_allclose(rew, [[0.0, 0.0], [-0.5, -0.5]])
    np.testing.assert_array_equal(term, [False, True])
    with pytest.raises(ValueError, match="sessions"):
        vec.reset(options={"sessions": [0, 3]})


def test_bad_actions_are_rejected():
    env = SessionEnv(hand_data())
    env.reset(options={"session": 0})
    for bad, match in [
        ([0.5], r"action: expected shape \(2,\)"),
        (np.ones((1, 2)), r"action: expected shape"),
        ([0.5, np.nan], "action: contains NaN"),
        ([0.5, 1.5], r"action: expected values in \[0, 1\]"),
        ([-0.1, 0.5], r"action: expected values in \[0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            env.step(bad)
    with pytest.raises(TypeError, match="action"):
        env.step("half")
    vec = VecSessionEnv(hand_data(), 2)
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(np.zeros((2, 2), np.float32))
    vec.reset()
    with pytest.raises(ValueError, match=r"action: expected shape \(2, 2\)"):
        vec.step(np.zeros(2, np.float32))


def test_stepping_after_termination_raises():
    env = SessionEnv(hand_data())
    with pytest.raises(RuntimeError, match="reset"):
        env.step([0.5, 0.5])  # never reset
    env.reset(options={"session": 1})  # one row
    *_, term, _, _ = env.step([0.5, 0.5])
    assert term
    with pytest.raises(RuntimeError, match="call reset"):
        env.step([0.5, 0.5])
    env.reset()
    env.step([0.5, 0.5])


def test_bad_data_and_options():
    with pytest.raises(ValueError, match="empty"):
        rmtl.SessionData([], [], np.zeros((0, 2), np.int64), None, np.zeros((0, 2)), (4, 5))
    with pytest.raises(TypeError, match="data: expected rmtl.SessionData"):
        SessionEnv({"sparse": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="reward"):
        SessionEnv(hand_data(), reward="mse")
    with pytest.raises(ValueError, match="order"):
        SessionEnv(hand_data(), order="shuffled")
    with pytest.raises(ValueError, match="num_envs"):
        VecSessionEnv(hand_data(), 0)
    env = SessionEnv(hand_data())
    with pytest.raises(ValueError, match=r"options\['session'\]"):
        env.reset(options={"session": 3})
    with pytest.raises(ValueError, match="unknown keys"):
        env.reset(options={"sesion": 1})


def test_gymnasium_env_checker_passes():
    gym = optional("gymnasium")
    from gymnasium.utils.env_checker import check_env

    for data in (hand_data(), random_session_data(num_dense=0, num_tasks=3)):
        env = SessionEnv(data)
        assert isinstance(env.observation_space, gym.spaces.Dict)
        assert env.action_space == gym.spaces.Box(0.0, 1.0, (data.num_tasks,), np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env, skip_render_check=True)
        # the only complaint allowed: one reward per task instead of a scalar (RMTL's MDP)
        other = [
            str(w.message)
            for w in caught
            if "reward returned by `step()` must be a float" not in str(w.message)
        ]
        assert other == []
        assert isinstance(VecSessionEnv(data, 2), gym.vector.VectorEnv)


def test_spaces_without_gymnasium(monkeypatch):
    import rmtl.env

    data = hand_data()
    monkeypatch.setattr(rmtl.env, "_gym", None)
    obs_space, act_space = rmtl.env._spaces(data)
    assert isinstance(act_space, rmtl.env.BoxSpace) and act_space.shape == (2,)
    obs, _ = SessionEnv(data).reset(options={"session": 2})
    assert obs_space["sparse"].contains(obs["sparse"]) and obs_space["dense"].contains(obs["dense"])
    assert not obs_space["sparse"].contains(np.array([4, 0]))  # code 4 is outside field_dims[0] = 4
    act_space.seed(0)
    a = act_space.sample()
    assert a.dtype == np.float32 and act_space.contains(a) and not act_space.contains(a + 2)
    batched = rmtl.env._spaces(data, (3,))[0]["sparse"]
    assert batched.shape == (3, 2) and batched.contains(np.tile([3, 4], (3, 1)))
    assert batched.sample().dtype == np.int32
