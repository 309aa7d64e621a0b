"""ReplayBuffer and collect: stored transitions, sampling, persistence, the behaviour policies."""

import numpy as np
import pytest
from conftest import random_session_data
from test_env import bce_reward, hand_data

import rmtl
import rmtl.replay
from rmtl.env import SessionEnv
from rmtl.replay import ReplayBuffer, collect


def filled(capacity=1000, seed=0, n=50, T=2):
    """A buffer holding n transitions whose state rows are 100 + 0..n-1."""
    buf = ReplayBuffer(capacity, T, seed=seed)
    rows = np.arange(100, 100 + n)
    act = np.linspace(0, 1, n * T, dtype=np.float32).reshape(n, T)
    buf.add(rows, rows + 1, act, -act, (rows % 5 == 0).astype(np.float32))
    return buf


def test_collect_stores_the_transitions_of_every_session():
    data = hand_data()
    for reward in ("bce", "abs"):
        buf = ReplayBuffer(100, 2)
        assert collect(data, buf, reward=reward, seed=3) == 6
        t = buf.transitions()
        np.testing.assert_array_equal(t["state"], [0, 1, 2, 3, 4, 5])
        np.testing.assert_array_equal(t["next_state"], [1, 2, 2, 3, 5, 5])
        np.testing.assert_array_equal(t["done"], [0, 0, 1, 1, 0, 1])
        a, y = t["action"], data.labels
        assert ((a >= 0) & (a < 1)).all() and len(np.unique(a)) == a.size  # uniform draws
        want = bce_reward(a, y) if reward == "bce" else -np.abs(a - y)
        np.testing.assert_allclose(t["reward"], want, rtol=1e-6, atol=1e-7)


def test_callable_policy_and_its_clipped_rewards():
    data = hand_data()
    seen = []

    def policy(sparse, dense):
        seen.append(len(sparse))
        return np.column_stack([(sparse[:, 0] == 1).astype(np.float32), np.full(len(sparse), 0.25)])

    buf = ReplayBuffer(100, 2)
    collect(data, buf, policy=policy, batch_size=2)
    t = buf.transitions()
    np.testing.assert_array_equal(t["action"][:, 0], [1, 0, 0, 0, 1, 0])
    # row 0: y=(1,0), a=(1, .25) -> (0, log .75); row 1: y=(0,0), a=(0, .25) -> (0, log .75);
    # row 2: y=(1,1), a=(0, .25) -> (log 1e-4, log .25)
    np.testing.assert_allclose(
        t["reward"][:3],
        [[0, np.log(0.75)], [0, np.log(0.75)], [np.log(1e-4), np.log(0.25)]],
        rtol=1e-6,
        atol=1e-7,
    )
    assert max(seen) <= 3 and sum(seen) == 6  # whole episodes, about batch_size states per call
    with pytest.raises(ValueError, match="policy output"):
        collect(data, buf, policy=lambda s, d: np.full((len(s), 2), 1.5))
    with pytest.raises(ValueError, match="policy output"):
        collect(data, buf, policy=lambda s, d: np.zeros((len(s), 3)))


def test_actor_policy_adds_clipped_noise_to_the_model():
    data = random_session_data(n_sessions=300, seed=0)
    model = rmtl.models.SharedBottom(
        data.field_dims,
        data.num_dense,
        data.num_tasks,
        embed_dim=8,
        bottom_dims=(16,),
        tower_dims=(8,),
        seed=1,
    )
    pred = model.predict(data.sparse, data.dense)
    exact = ReplayBuffer(len(data), data.num_tasks)
    collect(data, exact, policy="actor", model=model, noise=0.0)
    np.testing.assert_array_equal(exact.transitions()["action"], pred)
    noisy = ReplayBuffer(len(data), data.num_tasks)
    collect(data, noisy, policy="actor", model=model, noise=0.02, seed=5)
    mid = (pred > 0.1) & (pred < 0.9)  # clipping needs a 4-sigma draw here
    z = (noisy.transitions()["action"] - pred)[mid] / 0.02
    assert z.size > 500 and abs(z.mean()) < 0.1 and 0.9 < z.std() < 1.1  # N(0, 1) draws
    wide = ReplayBuffer(len(data), data.num_tasks)
    collect(data, wide, policy="actor", model=model, noise=2.0, seed=5)
    a = wide.transitions()["action"]
    assert a.min() == 0.0 and a.max() == 1.0 and ((a == 0) | (a == 1)).mean() > 0.5  # clipped
    with pytest.raises(TypeError, match="model"):
        collect(data, noisy, policy="actor")
    with pytest.raises(ValueError, match="model: only used"):
        collect(data, noisy, model=model)


def test_same_seed_same_collection_and_episodes_as_the_env():
    data = random_session_data(n_sessions=100, seed=3)
    runs = []
    for seed in (7, 7, 8):
        buf = ReplayBuffer(10_000, data.num_tasks)
        collect(data, buf, episodes=25, seed=seed)
        runs.append(buf.transitions())
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key])
    assert not np.array_equal(runs[0]["action"], runs[2]["action"])
    env = SessionEnv(data, seed=7)
    rows = []
    for _ in range(25):
        env.reset()
        done = False
        while not done:
            _, _, done, _, info = env.step(np.full(data.num_tasks, 0.5))
            rows.append(info["row"])
    np.testing.assert_array_equal(runs[0]["state"], rows)


def test_chunked_collection_equals_one_pass(monkeypatch):
    data = random_session_data(n_sessions=100, seed=4)
    whole = ReplayBuffer(len(data), data.num_tasks)
    collect(data, whole, seed=2)
    monkeypatch.setattr(rmtl.replay, "_CHUNK", 7)
    chunked = ReplayBuffer(len(data), data.num_tasks)
    collect(data, chunked, seed=2)
    for key, value in whole.transitions().items():
        np.testing.assert_array_equal(chunked.transitions()[key], value)


def test_overfilled_buffer_keeps_the_newest():
    data = random_session_data(n_sessions=100, seed=5)
    big = ReplayBuffer(len(data), data.num_tasks)
    collect(data, big, seed=1)
    small = ReplayBuffer(100, data.num_tasks)
    collect(data, small, seed=1)
    assert len(small) == 100
    for key, value in big.transitions().items():
        np.testing.assert_array_equal(small.transitions()[key], value[-100:])
    buf = filled(capacity=7, n=5)
    buf.add(*(v for v in filled(n=12).transitions().values()))  # wraps around, twice over
    assert len(buf) == 7
    np.testing.assert_array_equal(buf.transitions()["state"], np.arange(105, 112))


def test_samples_are_distinct_seeded_and_uniform():
    buf = filled(n=50, seed=11)
    batches = [buf.sample(20) for _ in range(5)]
    for b in batches:
        assert len(np.unique(b["state"])) == 20
        for key, dtype in [
            ("state", np.int64),
            ("next_state", np.int64),
            ("action", np.float32),
            ("reward", np.float32),
            ("done", np.float32),
        ]:
            assert b[key].dtype == dtype and b[key].flags.c_contiguous and len(b[key]) == 20
        i = b["state"] - 100  # every field comes from the same stored transition
        np.testing.assert_array_equal(b["next_state"], b["state"] + 1)
        np.testing.assert_array_equal(b["reward"], -b["action"])
        np.testing.assert_array_equal(b["done"], (b["state"] % 5 == 0))
        assert i.min() >= 0 and i.max() < 50
    assert not np.array_equal(batches[0]["state"], batches[1]["state"])  # the counter advances
    again = filled(n=50, seed=11)
    for b in batches:
        np.testing.assert_array_equal(again.sample(20)["state"], b["state"])
    assert not np.array_equal(filled(n=50, seed=12).sample(20)["state"], batches[0]["state"])
    assert sorted(buf.sample(50)["state"]) == list(range(100, 150))  # the whole buffer
    counts = np.bincount(
        np.concatenate([buf.sample(10)["state"] - 100 for _ in range(500)]), minlength=50
    )
    assert counts.min() > 60 and counts.max() < 140  # 100 expected each


def test_save_load_continues_the_same_samples(tmp_path):
    buf = filled(capacity=30, n=45, seed=4)  # wrapped ring
    buf.sample(8)
    buf.save(tmp_path / "replay.npz")
    back = ReplayBuffer.load(tmp_path / "replay.npz")
    assert (len(back), back.capacity, back.num_tasks, back.seed) == (30, 30, 2, 4)
    for key, value in buf.transitions().items():
        np.testing.assert_array_equal(back.transitions()[key], value)
    for _ in range(3):
        np.testing.assert_array_equal(back.sample(8)["state"], buf.sample(8)["state"])
    np.save(tmp_path / "other.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an rmtl ReplayBuffer"):
        ReplayBuffer.load(tmp_path / "other.npy")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not an rmtl ReplayBuffer"):
        ReplayBuffer.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        ReplayBuffer.load(tmp_path / "missing.npz")


def test_clear_errors():
    empty = ReplayBuffer(10, 2)
    with pytest.raises(ValueError, match=r"batch_size: expected 1 to len\(buffer\) = 0"):
        empty.sample(4)
    with pytest.raises(ValueError, match="without replacement"):
        filled(n=5).sample(6)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0, 2)
    with pytest.raises(ValueError, match="num_tasks"):
        ReplayBuffer(10, 0)
    with pytest.raises(ValueError, match="action"):
        empty.add([0], [1], [[0.5, 2.0]], [[0.0, 0.0]], [0])
    with pytest.raises(ValueError, match="done"):
        empty.add([0], [1], [[0.5, 0.5]], [[0.0, 0.0]], [0.5])
    data = hand_data()
    with pytest.raises(ValueError, match="buffer: holds 3 tasks"):
        collect(data, ReplayBuffer(10, 3))
    with pytest.raises(ValueError, match="policy"):
        collect(data, empty, policy="greedy")
    with pytest.raises(ValueError, match="episodes"):
        collect(data, empty, episodes=0)
    with pytest.raises(ValueError, match="noise"):
        collect(data, empty, noise=float("nan"))
    with pytest.raises(TypeError, match="data"):
        collect(None, empty)
    assert len(empty) == 0
