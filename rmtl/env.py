"""The session MDP of SPEC section 3 over :class:`rmtl.SessionData`, stepped in C.

An episode is one session, played in time order. The state ``s_t`` is row ``t`` of the
session; an observation is the dict ``{"sparse": int32 (F,), "dense": float32 (D,)}`` of that
row's categorical codes and numerical features. The action ``a_t`` in ``[0, 1]^T`` is a
predicted probability per task. The reward per task comes from the row's labels ``y``:

- ``reward="bce"`` (paper, default): ``r_k = y_k log(clip(a_k)) + (1 - y_k) log(clip(1 - a_k))``
  with ``clip`` to ``[1e-4, 1]``, so ``r_k`` lies in ``[log(1e-4), 0]``;
- ``reward="abs"`` (authors' code): ``r_k = -|a_k - y_k|``.

Transitions follow the log: the next state is row ``t + 1``; at the last row ``done = 1`` and
the next state is the last state itself.

Spaces: with Gymnasium 1.1 or later installed (``pip install gymnasium``) the environments
subclass ``gymnasium.Env`` / ``gymnasium.vector.VectorEnv`` and declare ``gymnasium.spaces``
(a ``Dict`` of ``MultiDiscrete(field_dims)`` and a ``Box`` bounded by the data's dense range;
actions ``Box(0, 1, (T,))``). Without it the same API works and the spaces are
:class:`BoxSpace` stand-ins (a plain dict of them for observations); rmtl itself never needs
Gymnasium.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import numpy as np

from . import _core, _progress
from ._arrays import _detach, as_float
from .data import SessionData

try:  # optional: without it only the spaces' classes and the base classes change
    import gymnasium as _gym

    _SAME_STEP: Any = _gym.vector.AutoresetMode.SAME_STEP
except (ImportError, AttributeError):  # not installed, or older than 1.1: used as absent
    _gym, _SAME_STEP = None, "same-step"

__all__ = ["SessionEnv", "VecSessionEnv", "ReplayBuffer", "collect", "BoxSpace", "REWARDS"]

REWARDS = _core.enums["reward"]
_ORDERS = _core.enums["order"]
_POLICIES = _core.enums["policy"]
_SEED_MASK = 2**64 - 1
_CHUNK = 1 << 22  # transitions per collection call: ~0.1 s of C work, then Ctrl-C can land
_FORMAT = 1


class BoxSpace:
    """A box of values between ``low`` and ``high`` (inclusive) with a fixed shape and dtype:
    the stand-in for ``gymnasium.spaces.Box`` / ``MultiDiscrete`` when Gymnasium is not
    installed. Integer boxes hold categorical codes ``0 .. high``."""

    def __init__(self, low: np.ndarray, high: np.ndarray, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)
        self.low = np.asarray(low, self.dtype)
        self.high = np.asarray(high, self.dtype)
        self.shape = self.low.shape
        self._rng = np.random.default_rng()

    def seed(self, seed: Optional[int] = None) -> None:
        """Reseed :meth:`sample`."""
        self._rng = np.random.default_rng(seed)

    def sample(self) -> np.ndarray:
        """A uniform draw from the box."""
        if self.dtype.kind in "iu":
            return self._rng.integers(self.low, self.high, endpoint=True).astype(self.dtype)
        return self._rng.uniform(self.low, self.high).astype(self.dtype)

    def contains(self, x: Any) -> bool:
        """Whether ``x`` has this shape and lies inside the bounds."""
        a = np.asarray(x)
        return a.shape == self.shape and bool(np.all((a >= self.low) & (a <= self.high)))

    __contains__ = contains

    def __repr__(self) -> str:
        return f"BoxSpace(shape={self.shape}, dtype={self.dtype})"


def _spaces(data: SessionData, lead: Tuple[int, ...] = ()) -> Tuple[Any, Any]:
    """(observation space, action space) of one environment (lead ``()``) or of ``lead[0]``
    environments stepped together."""
    nvec = np.broadcast_to(np.asarray(data.field_dims, np.int64), lead + (data.num_fields,))
    low = np.broadcast_to(data.dense.min(0), lead + (data.num_dense,))
    high = np.broadcast_to(data.dense.max(0), lead + (data.num_dense,))
    act = lead + (data.num_tasks,)
    if _gym is None:
        obs = {"sparse": BoxSpace(np.zeros_like(nvec), nvec - 1, np.int32),
               "dense": BoxSpace(low, high, np.float32)}
        return obs, BoxSpace(np.zeros(act), np.ones(act), np.float32)
    s = _gym.spaces
    obs = s.Dict({"sparse": s.MultiDiscrete(np.array(nvec), dtype=np.int32),
                  "dense": s.Box(np.array(low), np.array(high), dtype=np.float32)})
    return obs, s.Box(0.0, 1.0, act, np.float32)


class _NoGym:
    """The part of ``gymnasium.Env`` / ``VectorEnv`` the environments rely on, when
    Gymnasium is not installed."""

    metadata: Dict[str, Any] = {}
    render_mode = None
    spec = None

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> None:
        return None

    def close(self) -> None:
        return None

    @property
    def unwrapped(self) -> Any:
        return self


_EnvBase = _gym.Env if _gym is not None else _NoGym
_VecBase = _gym.vector.VectorEnv if _gym is not None else _NoGym


def _check_data(data: Any) -> SessionData:
    if not isinstance(data, SessionData):
        raise TypeError(f"data: expected rmtl.SessionData, got {type(data).__name__}")
    if data.num_sessions < 1 or len(data) < 1:
        raise ValueError("data: holds no sessions; expected at least one session with one row")
    return data


def _choice(value: str, allowed: Dict[str, int], name: str) -> int:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {sorted(allowed)}, got {value!r}")
    return allowed[value]


def _as_action(action: Any, shape: Tuple[int, ...]) -> np.ndarray:
    """float32 C-contiguous actions of this shape; NaN and range are checked by the core."""
    try:
        a = np.asarray(_detach(action), dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"action: expected numbers in [0, 1] of shape {shape}, "
                        f"got {type(action).__name__}") from None
    if a.shape != shape:
        raise ValueError(f"action: expected shape {shape}, one value in [0, 1] per task, got {a.shape}")
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _new_core(data: SessionData, n: int, reward: str, order: str, autoreset: bool, seed: int) -> Any:
    return _core.Env(offsets=data.offsets, sparse=data.sparse, dense=data.dense, labels=data.labels,
                     num_envs=int(n), reward=_choice(reward, REWARDS, "reward"),
                     order=_choice(order, _ORDERS, "order"), autoreset=bool(autoreset),
                     seed=int(seed) & _SEED_MASK)


class SessionEnv(_EnvBase):
    """One session at a time as a Gymnasium environment (see the module docstring for the MDP).

    Parameters
    ----------
    data : SessionData
        The sessions to play.
    reward : "bce" or "abs"
        Reward per task (SPEC section 3): clipped negative BCE (paper) or ``-|a - y|`` (code).
    seed : int
        Keys the session draws of ``order="random"``; ``reset(seed=...)`` restarts them.
    order : "random" or "sequential"
        Episodes draw sessions uniformly with replacement, or play sessions 0, 1, 2, ... in
        stored order (cycling).

    ``reset(seed=None, options=None) -> (obs, info)``: ``options={"session": i}`` plays session
    ``i`` (not counted as a draw); info holds ``session`` and ``row`` (the row index in
    ``data``). ``step(action) -> (obs, reward, terminated, truncated, info)``: ``action`` (T,)
    in [0, 1]; ``reward`` float32 (T,), one per task (Gymnasium's checker warns that it expects
    a scalar; RMTL needs one reward per task); ``terminated`` at the session's last row, whose
    observation is then that row again; ``truncated`` is always False; info holds ``labels``
    (T,) of the row acted on, ``session``, ``row`` and ``next_row``. Stepping a finished episode
    raises RuntimeError until ``reset()``.
    """

    metadata: Dict[str, Any] = {"render_modes": []}

    def __init__(self, data: SessionData, reward: str = "bce", seed: int = 0, order: str = "random") -> None:
        self.data = _check_data(data)
        self.reward, self.order = reward, order
        self._core = _new_core(data, 1, reward, order, False, seed)
        self.observation_space, self.action_space = _spaces(data)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> Tuple[dict, dict]:
        """Start an episode: the next session drawn, or ``options["session"]``."""
        super().reset(seed=seed)
        session = _session_option(options, "session", self.data.num_sessions)
        sessions = None if session is None else np.array([session], np.int64)
        sparse, dense, sess, row = self._core.reset(seed, sessions)
        return {"sparse": sparse[0], "dense": dense[0]}, {"session": int(sess[0]), "row": int(row[0])}

    def step(self, action: Any) -> Tuple[dict, np.ndarray, bool, bool, dict]:
        """Act on the current row; see the class docstring for what comes back."""
        a = _as_action(action, (self.data.num_tasks,))
        sparse, dense, reward, done, labels, state, nxt, sess = self._core.step(a.reshape(1, -1))
        info = {"labels": labels[0], "session": int(sess[0]), "row": int(state[0]), "next_row": int(nxt[0])}
        return {"sparse": sparse[0], "dense": dense[0]}, reward[0], bool(done[0]), False, info

    def __repr__(self) -> str:
        return f"SessionEnv({self.data!r}, reward={self.reward!r}, order={self.order!r})"


class VecSessionEnv(_VecBase):
    """``num_envs`` sessions stepped together in one C call, with automatic reset.

    Same MDP and parameters as :class:`SessionEnv`; episodes are drawn in environment order.
    ``reset(seed=None, options=None) -> (obs, info)`` with ``obs = {"sparse": (N, F),
    "dense": (N, D)}``; ``options={"sessions": (N,) ints}`` picks every environment's session.
    ``step(actions (N, T)) -> (obs, reward (N, T), terminated (N,), truncated (N,), info)``.
    Reset is same-step (Gymnasium's ``AutoresetMode.SAME_STEP``): an environment whose
    session ends in this step returns the first row of its next session as observation; the
    transition itself is in info: ``row`` (rows acted on), ``next_row`` (next-state rows, the
    last row itself where terminated), ``labels`` (N, T) and ``session`` (N,).
    """

    metadata: Dict[str, Any] = {"render_modes": [], "autoreset_mode": _SAME_STEP}

    def __init__(self, data: SessionData, num_envs: int, reward: str = "bce", seed: int = 0,
                 order: str = "random") -> None:
        self.data = _check_data(data)
        if int(num_envs) < 1:
            raise ValueError(f"num_envs: expected >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.reward, self.order = reward, order
        self._core = _new_core(data, self.num_envs, reward, order, True, seed)
        self.single_observation_space, self.single_action_space = _spaces(data)
        self.observation_space, self.action_space = _spaces(data, (self.num_envs,))
        self._started = False

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> Tuple[dict, dict]:
        """Start an episode in every environment."""
        super().reset(seed=seed)
        sessions = _session_option(options, "sessions", self.data.num_sessions, self.num_envs)
        sparse, dense, sess, row = self._core.reset(seed, sessions)
        self._started = True
        return {"sparse": sparse, "dense": dense}, {"session": sess, "row": row}

    def step(self, actions: Any) -> Tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        """One step of every environment; see the class docstring."""
        if not self._started:
            raise RuntimeError("step: call reset() before the first step")
        a = _as_action(actions, (self.num_envs, self.data.num_tasks))
        sparse, dense, reward, done, labels, state, nxt, sess = self._core.step(a)
        info = {"labels": labels, "session": sess, "row": state, "next_row": nxt}
        return {"sparse": sparse, "dense": dense}, reward, done, np.zeros(self.num_envs, bool), info

    def __repr__(self) -> str:
        return f"VecSessionEnv({self.data!r}, num_envs={self.num_envs}, reward={self.reward!r})"


def _session_option(options: Optional[dict], key: str, n_sessions: int,
                    n_envs: Optional[int] = None) -> Optional[np.ndarray]:
    """options[key] checked: one session index (n_envs None) or (n_envs,) of them; None if absent."""
    options = {} if options is None else options
    unknown = sorted(set(options) - {key})
    if unknown:
        raise ValueError(f"options: unknown keys {unknown}; expected only {key!r}")
    if options.get(key) is None:
        return None
    v = np.asarray(options[key])
    want = () if n_envs is None else (n_envs,)
    if v.dtype.kind not in "iu" or v.shape != want:
        raise ValueError(f"options[{key!r}]: expected {'an integer' if n_envs is None else f'{n_envs} integers'} "
                         f"in [0, {n_sessions}), got {options[key]!r}")
    if ((v < 0) | (v >= n_sessions)).any():
        raise ValueError(f"options[{key!r}]: expected session indices in [0, {n_sessions}), got {options[key]!r}")
    return v.astype(np.int64)


class ReplayBuffer:
    """A ring buffer of transitions stored as row indices into one SessionData (no feature
    copies): ``state``, ``next_state`` (int64 rows), ``action`` and ``reward`` (float32, T per
    transition) and ``done`` (float32 0/1). Past ``capacity`` the oldest are overwritten.

    :meth:`sample` draws a batch of distinct transitions; the i-th call after construction
    (or the i-th overall for a loaded buffer) depends only on ``seed``, i and the stored
    sequence, so the same seed gives the same batches.
    """

    def __init__(self, capacity: int, num_tasks: int, seed: int = 0) -> None:
        self._core = _core.Replay(int(capacity), int(num_tasks), int(seed) & _SEED_MASK)
        self._seed = int(seed)

    def __len__(self) -> int:
        return self._core.size

    @property
    def capacity(self) -> int:
        """Transitions kept at most."""
        return self._core.capacity

    @property
    def num_tasks(self) -> int:
        """Values per action and reward."""
        return self._core.num_tasks

    @property
    def seed(self) -> int:
        """Seed of the sampling sequence."""
        return self._seed

    def add(self, state: Any, next_state: Any, action: Any, reward: Any, done: Any) -> None:
        """Append transitions (oldest first): rows ``state`` and ``next_state`` (n,), actions
        in [0, 1] and rewards (n, T), done flags (n,) of 0/1."""
        state = _as_rows(state, "state")
        n, T = len(state), self.num_tasks
        self._core.push(state=state, next_state=_as_rows(next_state, "next_state", n),
                        action=as_float(action, (n, T), "action"), reward=as_float(reward, (n, T), "reward"),
                        done=as_float(done, (n,), "done"))

    def sample(self, batch_size: int) -> Dict[str, np.ndarray]:
        """``batch_size`` distinct transitions as a dict of fresh C-contiguous arrays:
        ``state``, ``next_state`` int64 (B,), ``action``, ``reward`` float32 (B, T),
        ``done`` float32 (B,)."""
        return dict(zip(_KEYS, self._core.sample(int(batch_size))))

    def transitions(self) -> Dict[str, np.ndarray]:
        """Every stored transition, oldest first, as the dict :meth:`sample` returns."""
        return dict(zip(_KEYS, self._core.export()))

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write the transitions, capacity, seed and sampling position to one .npz file."""
        meta = {"format": _FORMAT, "capacity": self.capacity, "num_tasks": self.num_tasks,
                "seed": self._seed, "draws": self._core.draws}
        np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **self.transitions())

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "ReplayBuffer":
        """Read a buffer written by :meth:`save`; its sampling continues where it stopped."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"path: no such file: {path}")
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"path: {path} is not an rmtl ReplayBuffer file (.npz written by ReplayBuffer.save)")
        with z:
            if "meta" not in z.files or any(k not in z.files for k in _KEYS):
                raise ValueError(f"path: {path} is not an rmtl ReplayBuffer file (no transitions or meta)")
            meta = json.loads(bytes(z["meta"]).decode())
            if meta.get("format") != _FORMAT:
                raise ValueError(f"path: {path} has buffer format {meta.get('format')}, expected {_FORMAT}")
            buf = cls(meta["capacity"], meta["num_tasks"], meta["seed"])
            buf.add(*(z[k] for k in _KEYS))
        buf._core.draws = meta["draws"]
        return buf

    def __repr__(self) -> str:
        return f"ReplayBuffer({len(self)}/{self.capacity} transitions, num_tasks={self.num_tasks}, seed={self._seed})"


_KEYS = ("state", "next_state", "action", "reward", "done")


def _as_rows(x: Any, name: str, n: int = -1) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu" or a.ndim != 1 or (n >= 0 and len(a) != n):
        raise ValueError(f"{name}: expected {'n' if n < 0 else n} integer row indices, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)


Policy = Union[str, Callable[[np.ndarray, np.ndarray], Any]]


def collect(data: SessionData, buffer: ReplayBuffer, policy: Policy = "uniform", noise: float = 0.1,
            model: Any = None, reward: str = "bce", seed: int = 0, episodes: Optional[int] = None,
            batch_size: int = 16384, progress: bool = False) -> int:
    """Replay sessions of ``data`` into ``buffer``; returns the number of transitions added.

    Parameters
    ----------
    data, buffer :
        The sessions and a buffer with ``data.num_tasks`` tasks; the buffer's rows index
        ``data``.
    policy : "uniform", "actor" or callable
        The behaviour action of every transition. ``"uniform"`` (authors' code): uniform in
        [0, 1)^T. ``"actor"``: ``model``'s evaluation-mode predictions (rmtl backbone, all rows
        batched through the C model) plus Gaussian noise of std ``noise``, clipped to [0, 1].
        A callable gets ``(sparse (m, F) int32, dense (m, D) float32)`` of a batch of up to
        ``batch_size`` states and returns actions (m, T) in [0, 1] (slower, for research).
    noise : float
        Std of the actor's exploration noise (``policy="actor"`` only).
    reward : "bce" or "abs"
        As in :class:`SessionEnv`.
    seed : int
        Keys the random actions and the episode draws; the same seed gives the same
        transitions.
    episodes : int or None
        None: every session once, in stored order. An int k: the first k episodes a
        ``SessionEnv(data, seed=seed)`` plays (sessions drawn with replacement).
    progress : bool
        A tqdm bar over transitions.

    The uniform and actor policies run as one C pass over the rows (in chunks of about 4M
    transitions, so Ctrl-C can stop between them).
    """
    _check_data(data)
    if not isinstance(buffer, ReplayBuffer):
        raise TypeError(f"buffer: expected rmtl.ReplayBuffer, got {type(buffer).__name__}")
    if buffer.num_tasks != data.num_tasks:
        raise ValueError(f"buffer: holds {buffer.num_tasks} tasks, data has {data.num_tasks}")
    rkind = _choice(reward, REWARDS, "reward")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise: expected a finite standard deviation >= 0, got {noise}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if policy != "actor" and model is not None:
        raise ValueError("model: only used with policy='actor'; leave it None")
    if not callable(policy) and policy not in ("uniform", "actor"):
        raise ValueError(f"policy: expected 'uniform', 'actor' or a callable, got {policy!r}")
    seed = int(seed) & _SEED_MASK
    if episodes is None:
        sessions = np.arange(data.num_sessions, dtype=np.int64)
    elif int(episodes) < 1:
        raise ValueError(f"episodes: expected >= 1 or None (every session), got {episodes}")
    else:
        sessions = _core.draw_sessions(n_sessions=data.num_sessions, count=int(episodes),
                                       order=_ORDERS["random"], seed=seed)
    kind, base, chunk = _POLICIES["uniform"], None, _CHUNK
    if callable(policy):
        kind, chunk = _POLICIES["given"], int(batch_size)
    elif policy == "actor":
        kind, base = _POLICIES["rows"], _actor_predictions(model, data, int(batch_size))
    lengths = np.diff(data.offsets)[sessions]
    with _progress.bar(progress, total=int(lengths.sum()), desc="collect", unit="step") as bar:
        for a, b, first in _chunks(lengths, chunk):
            if kind == _POLICIES["given"]:
                base = _policy_actions(policy, data, _episode_rows(data, sessions[a:b]))
            bar.update(buffer._core.collect(offsets=data.offsets, labels=data.labels, sessions=sessions[a:b],
                                            first=first, reward=rkind, policy=kind, action=base,
                                            noise=float(noise), seed=seed))
    return int(lengths.sum())


def _chunks(lengths: np.ndarray, size: int) -> Iterator[Tuple[int, int, int]]:
    """Episode ranges [a, b) of at most ``size`` transitions (or one episode), with the number
    of transitions before a."""
    cum = np.concatenate(([0], np.cumsum(lengths)))
    a = 0
    while a < len(lengths):
        b = max(a + 1, int(np.searchsorted(cum, cum[a] + size, side="right")) - 1)
        yield a, b, int(cum[a])
        a = b


def _episode_rows(data: SessionData, sessions: np.ndarray) -> np.ndarray:
    """The state rows of these episodes, in play order."""
    lengths = np.diff(data.offsets)[sessions]
    starts = np.repeat(data.offsets[sessions] - np.cumsum(lengths) + lengths, lengths)
    return starts + np.arange(int(lengths.sum()), dtype=np.int64)


def _policy_actions(policy: Callable, data: SessionData, rows: np.ndarray) -> np.ndarray:
    out = as_float(policy(data.sparse[rows], data.dense[rows]), (len(rows), data.num_tasks), "policy output")
    if ((out < 0) | (out > 1)).any():
        raise ValueError("policy output: expected actions in [0, 1]; clip the policy's actions")
    return out


def _actor_predictions(model: Any, data: SessionData, batch_size: int) -> np.ndarray:
    from .models import Backbone

    if not isinstance(model, Backbone):
        raise TypeError(f"model: policy='actor' needs an rmtl backbone, got {type(model).__name__}")
    c = model.config
    if tuple(c.field_dims) != data.field_dims or c.num_dense != data.num_dense or c.num_tasks != data.num_tasks:
        raise ValueError(f"model: expects field_dims {tuple(c.field_dims)}, {c.num_dense} dense, {c.num_tasks} "
                         f"tasks; data has {data.field_dims}, {data.num_dense}, {data.num_tasks}")
    return model.predict(data.sparse, data.dense, batch_size=batch_size)  # evaluation mode
