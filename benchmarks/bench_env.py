"""The session MDP: steps per second of SessionEnv and VecSessionEnv, and the time to fill the
replay buffer from every training session of a ~1M-impression synthetic RetailRocket, against
a plain Python/NumPy environment stepped one transition per call, as the authors' gym code
does (their env.py ``Visitor.step`` / ``MTEnv`` and the warm-up loop of train/run.py storing
copies of the state features in a NumPy ring buffer).

    python benchmarks/bench_env.py [--users 70000] [--baseline-steps 60000] [--num-envs 1024]

The Python baseline replays the first ``--baseline-steps`` transitions of the same sessions
and its cost per transition is extrapolated to all of them (``--baseline-steps 0``: replay
everything, about 10 s); the output says which. There is no PyTorch equivalent of the
environment, so the baseline is the authors' NumPy formulation.
"""

import argparse
import time

import numpy as np

import rmtl

CLIP = 1e-4


class PyEnv:
    """The same MDP in plain Python/NumPy, one transition per call: sessions are dicts of a
    (len, F + D) state matrix and (len, T) labels, built before timing starts."""

    def __init__(self, data: rmtl.SessionData) -> None:
        states = np.concatenate([data.sparse.astype(np.float32), data.dense], 1)
        o = data.offsets
        self.sessions = [
            {"states": states[a:b], "labels": data.labels[a:b]} for a, b in zip(o[:-1], o[1:])
        ]
        self.next_session = 0

    def reset(self) -> np.ndarray:
        self.cur, self.t = self.sessions[self.next_session], 0
        self.next_session = (self.next_session + 1) % len(self.sessions)
        return self.cur["states"][0]

    def step(self, action: np.ndarray):
        t, label = self.t, self.cur["labels"][self.t]
        reward = label * np.log(np.clip(action, CLIP, 1)) + (1 - label) * np.log(
            np.clip(1 - action, CLIP, 1)
        )
        done = t + 1 >= len(self.cur["labels"])
        nstate = self.cur["states"][t if done else t + 1]
        self.t += 1
        return nstate, reward, done, label


class PyBuffer:
    """A NumPy ring buffer of state and next-state feature copies, as the authors store them."""

    def __init__(self, state_dim: int, T: int, size: int) -> None:
        self.state = np.zeros((size, state_dim), np.float32)
        self.nstate = np.zeros((size, state_dim), np.float32)
        self.action = np.zeros((size, T), np.float32)
        self.reward = np.zeros((size, T), np.float32)
        self.done = np.zeros(size, np.float32)
        self.idx, self.size, self.max_size = 0, 0, size

    def store(self, state, action, nstate, reward, done) -> None:
        i = self.idx
        self.state[i], self.nstate[i], self.action[i], self.reward[i], self.done[i] = (
            state,
            nstate,
            action,
            reward,
            done,
        )
        self.idx, self.size = (i + 1) % self.max_size, min(self.size + 1, self.max_size)


def py_fill(env: PyEnv, buf: PyBuffer, steps: int, T: int, rng: np.random.Generator) -> int:
    """Replay whole sessions until at least ``steps`` transitions are stored; returns the count."""
    n = 0
    while n < steps:
        state = env.reset()
        while True:
            action = rng.random(T, dtype=np.float32)
            nstate, reward, done, _ = env.step(action)
            buf.store(state, action, nstate, reward, done)
            state, n = nstate, n + 1
            if done:
                break
    return n


def steps_per_second(step, reset, n: int) -> float:
    reset()
    t0 = time.perf_counter()
    for _ in range(n):
        if step():
            reset()
    return n / (time.perf_counter() - t0)


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--users",
        type=int,
        default=70_000,
        help="synthetic users (70,000: about 1.02M impressions)",
    )
    p.add_argument(
        "--baseline-steps",
        type=int,
        default=60_000,
        help="transitions the Python baseline replays before extrapolating (0: all)",
    )
    p.add_argument("--num-envs", type=int, default=1024)
    p.add_argument("--env-steps", type=int, default=100_000, help="single-environment steps timed")
    args = p.parse_args()

    data = rmtl.datasets.synthetic("retailrocket", n_users=args.users, seed=0)
    train = data.split()[0]
    T, n = train.num_tasks, len(train)
    print(
        f"data: synthetic retailrocket, {len(data):,} impressions; training split {n:,} rows in "
        f"{train.num_sessions:,} sessions; {T} tasks; threads: {rmtl.get_num_threads()}"
    )

    # single-environment stepping, one transition per Python call on both sides
    rng = np.random.default_rng(0)
    action = np.full(T, 0.5, np.float32)
    py_env = PyEnv(train)
    py_sps = steps_per_second(lambda: py_env.step(action)[2], py_env.reset, args.env_steps)
    env = rmtl.SessionEnv(train, seed=0)
    env_sps = steps_per_second(lambda: env.step(action)[2], env.reset, args.env_steps)
    N = args.num_envs
    vec = rmtl.VecSessionEnv(train, N, seed=0)
    vec.reset()
    actions = np.full((N, T), 0.5, np.float32)
    calls = max(1, args.env_steps // N * 4)
    vec_sps = calls * N / best_of(lambda: [vec.step(actions) for _ in range(calls)])
    print(f"python env step (authors' style):  {py_sps:12,.0f} steps/s")
    print(f"rmtl.SessionEnv.step:              {env_sps:12,.0f} steps/s   {env_sps / py_sps:7.1f}x")
    print(f"rmtl.VecSessionEnv({N}).step:     {vec_sps:12,.0f} steps/s   {vec_sps / py_sps:7.1f}x")

    # filling the replay buffer from every training session with uniform actions
    full = args.baseline_steps <= 0 or args.baseline_steps >= n
    target = n if full else args.baseline_steps
    py_env, py_buf = PyEnv(train), PyBuffer(train.num_fields + train.num_dense, T, n)
    t0 = time.perf_counter()
    done_steps = py_fill(py_env, py_buf, target, T, rng)
    py_time = (time.perf_counter() - t0) * (1.0 if full else n / done_steps)
    how = "measured on all" if full else f"extrapolated from {done_steps:,} of the"
    buf = rmtl.ReplayBuffer(n, T, seed=0)
    c_time = best_of(lambda: rmtl.collect(train, buf, policy="uniform", seed=0))
    assert len(buf) == n
    print(
        f"python buffer fill: {py_time:8.3f} s for {n:,} transitions ({how} transitions; "
        f"{py_time / n * 1e6:.2f} us each)"
    )
    print(
        f"rmtl.collect fill:  {c_time:8.3f} s for {n:,} transitions (best of 3; "
        f"{c_time / n * 1e9:.0f} ns each)   {py_time / c_time:7.1f}x (target >= 100x)"
    )
    sample_sps = 200 * 2048 / best_of(lambda: [buf.sample(2048) for _ in range(200)])
    print(f"rmtl.ReplayBuffer.sample(2048): {sample_sps:12,.0f} transitions/s")


if __name__ == "__main__":
    main()
