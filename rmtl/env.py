"""The session MDP of the paper (each session an episode) over :class:`rmtl.SessionData`,
stepped in C.

An episode is one session, played in time order. The state ``s_t`` is row ``t`` of the
session; an observation is the dict ``{"sparse": int32 (F,), "dense": float32 (D,)}`` of that
row's categorical codes and numerical features. The action ``a_t`` in ``[0, 1]^T`` is a
predicted probability per task. The reward per task comes from the row's labels ``y``:

- ``reward="bce"`` (paper, default): ``r_k = y_k log(clip(a_k)) + (1 - y_k) log(clip(1 - a_k))``
  with ``clip`` to ``[1e-4, 1]``, so ``r_k`` lies in ``[log(1e-4), 0]``;
- ``reward="abs"`` (authors' code): ``r_k = -|a_k - y_k|``;
- ``reward="bce_wrapped"`` (authors' code): the BCE reward at ``0.5 + 0.5 a_k`` instead of
  ``a_k``, as their environment computes it (for actions in [-1, 1]).

Transitions follow the log: the next state is row ``t + 1``; at the last row ``done = 1`` and
the next state is the last state itself.

Session context (:func:`rmtl.with_context`) given to the backbone is part of ``dense`` and so
of every observation; context for the critics only is not: RMTL's stage 2 reads the critics'
state rows directly (:meth:`rmtl.SessionData.critic_dense`).

Spaces: with Gymnasium 1.1 or later installed (``pip install gymnasium``) the environments
subclass ``gymnasium.Env`` / ``gymnasium.vector.VectorEnv`` and declare ``gymnasium.spaces``
(a ``Dict`` of ``MultiDiscrete(field_dims)`` and a ``Box`` bounded by the data's dense range;
actions ``Box(0, 1, (T,))``). Without it the same API works and the spaces are
:class:`BoxSpace` stand-ins (a plain dict of them for observations); rmtl itself never needs
Gymnasium.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _core
from ._arrays import _detach
from .data import SessionData

try:  # optional: without it only the spaces' classes and the base classes change
    import gymnasium as _gym

    _SAME_STEP: Any = _gym.vector.AutoresetMode.SAME_STEP
except (ImportError, AttributeError):  # not installed, or older than 1.1: used as absent
    _gym, _SAME_STEP = None, "same-step"

__all__ = ["SessionEnv", "VecSessionEnv", "BoxSpace", "REWARDS"]

REWARDS = _core.enums["reward"]
_ORDERS = _core.enums["order"]
_SEED_MASK = 2**64 - 1


class BoxSpace:
    """A box of values between ``low`` and ``high`` (inclusive) with a fixed shape and dtype:
    the stand-in for ``gymnasium.spaces.Box`` / ``MultiDiscrete`` when Gymnasium is not
    installed. Integer boxes hold categorical codes ``0 .. high``.

    Parameters
    ----------
    low, high : array-like
        The bounds, element by element (inclusive); ``low`` sets the box's shape.
    dtype : dtype-like
        The values' dtype (an integer dtype for codes, a float dtype otherwise).
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)
        self.low = np.asarray(low, self.dtype)
        self.high = np.asarray(high, self.dtype)
        self.shape = self.low.shape
        self._rng = np.random.default_rng()

    def seed(self, seed: Optional[int] = None) -> None:
        """Reseed :meth:`sample`.

        Parameters
        ----------
        seed : int, optional
            NumPy's seed (None: fresh entropy).
        """
        self._rng = np.random.default_rng(seed)

    def sample(self) -> np.ndarray:
        """A uniform draw from the box.

        Returns
        -------
        ndarray
            Of the box's shape and dtype.
        """
        if self.dtype.kind in "iu":
            return self._rng.integers(self.low, self.high, endpoint=True).astype(self.dtype)
        return self._rng.uniform(self.low, self.high).astype(self.dtype)

    def contains(self, x: Any) -> bool:
        """Whether ``x`` has this shape and lies inside the bounds.

        Parameters
        ----------
        x : array_like

        Returns
        -------
        bool
        """
        a = np.asarray(x)
        return a.shape == self.shape and bool(np.all((a >= self.low) & (a <= self.high)))

    __contains__ = contains

    def __repr__(self) -> str:
        return f"BoxSpace(shape={self.shape}, dtype={self.dtype})"


def _spaces(data: SessionData, lead: tuple[int, ...] = ()) -> tuple[Any, Any]:
    """(observation space, action space) of one environment (lead ``()``) or of ``lead[0]``
    environments stepped together."""
    nvec = np.broadcast_to(np.asarray(data.field_dims, np.int64), lead + (data.num_fields,))
    low = np.broadcast_to(data.dense.min(0), lead + (data.num_dense,))
    high = np.broadcast_to(data.dense.max(0), lead + (data.num_dense,))
    act = lead + (data.num_tasks,)
    if _gym is None:
        obs = {
            "sparse": BoxSpace(np.zeros_like(nvec), nvec - 1, np.int32),
            "dense": BoxSpace(low, high, np.float32),
        }
        return obs, BoxSpace(np.zeros(act), np.ones(act), np.float32)
    s = _gym.spaces
    obs = s.Dict(
        {
            "sparse": s.MultiDiscrete(np.array(nvec), dtype=np.int32),
            "dense": s.Box(np.array(low), np.array(high), dtype=np.float32),
        }
    )
    return obs, s.Box(0.0, 1.0, act, np.float32)


class _NoGym:
    """The part of ``gymnasium.Env`` / ``VectorEnv`` the environments rely on, when
    Gymnasium is not installed."""

    metadata: dict[str, Any] = {}
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


def _choice(value: str, allowed: dict[str, int], name: str) -> int:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {sorted(allowed)}, got {value!r}")
    return allowed[value]


def _as_action(action: Any, shape: tuple[int, ...]) -> np.ndarray:
    """float32 C-contiguous actions of this shape; NaN and range are checked by the core."""
    try:
        a = np.asarray(_detach(action), dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError(
            f"action: expected numbers in [0, 1] of shape {shape}, got {type(action).__name__}"
        ) from None
    if a.shape != shape:
        raise ValueError(
            f"action: expected shape {shape}, one value in [0, 1] per task, got {a.shape}"
        )
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _new_core(
    data: SessionData, n: int, reward: str, order: str, autoreset: bool, seed: int
) -> Any:
    return _core.Env(
        offsets=data.offsets,
        sparse=data.sparse,
        dense=data.dense,
        labels=data.labels,
        num_envs=int(n),
        reward=_choice(reward, REWARDS, "reward"),
        order=_choice(order, _ORDERS, "order"),
        autoreset=bool(autoreset),
        seed=int(seed) & _SEED_MASK,
    )


class SessionEnv(_EnvBase):
    """One session at a time as a Gymnasium environment (see the module docstring for the MDP).

    Parameters
    ----------
    data : SessionData
        The sessions to play.
    reward : "bce", "abs" or "bce_wrapped"
        Reward per task (see the module docstring): clipped negative BCE (paper) or
        ``-|a - y|`` (authors' code).
    seed : int
        Keys the session draws of ``order="random"``; ``reset(seed=...)`` restarts them.
    order : "random" or "sequential"
        Episodes draw sessions uniformly with replacement, or play sessions 0, 1, 2, ... in
        stored order (cycling).

    Raises
    ------
    TypeError
        When ``data`` is not an :class:`rmtl.SessionData`.
    ValueError
        When ``data`` holds no sessions, or ``reward`` or ``order`` is not one of its choices.

    See Also
    --------
    VecSessionEnv : many sessions stepped in one call.
    rmtl.collect : every training session replayed into a replay buffer at once.

    Notes
    -----
    :meth:`reset` and :meth:`step` follow Gymnasium's API; the reward is one value per task
    (Gymnasium's checker warns that it expects a scalar; RMTL needs one reward per task).
    Stepping a finished episode raises RuntimeError until :meth:`reset`.

    Examples
    --------
    >>> import numpy as np, rmtl
    >>> env = rmtl.SessionEnv(rmtl.datasets.synthetic(n_users=20), order="sequential")
    >>> obs, info = env.reset()
    >>> obs, reward, terminated, truncated, info = env.step(np.full(2, 0.5))
    >>> reward.shape
    (2,)
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self, data: SessionData, reward: str = "bce", seed: int = 0, order: str = "random"
    ) -> None:
        self.data = _check_data(data)
        self.reward, self.order = reward, order
        self._core = _new_core(data, 1, reward, order, False, seed)
        self.observation_space, self.action_space = _spaces(data)

    def reset(
        self, *, seed: Optional[int] = None, options: Optional[dict] = None
    ) -> tuple[dict, dict]:
        """Start an episode: the next session drawn, or ``options["session"]``.

        Parameters
        ----------
        seed : int, optional
            Restart the session draws from this seed.
        options : dict, optional
            ``{"session": i}`` plays session ``i`` (not counted as a draw).

        Returns
        -------
        obs : dict
            ``{"sparse": int32 (F,), "dense": float32 (D,)}`` of the session's first row.
        info : dict
            ``session`` and ``row`` (the row index in ``data``).

        Raises
        ------
        ValueError
            When ``options`` has a key other than ``"session"``, or ``options["session"]`` is
            not one integer in ``[0, data.num_sessions)``.
        """
        super().reset(seed=seed)
        session = _session_option(options, "session", self.data.num_sessions)
        sessions = None if session is None else np.array([session], np.int64)
        sparse, dense, sess, row = self._core.reset(seed, sessions)
        return {"sparse": sparse[0], "dense": dense[0]}, {
            "session": int(sess[0]),
            "row": int(row[0]),
        }

    def step(self, action: Any) -> tuple[dict, np.ndarray, bool, bool, dict]:
        """Act on the current row.

        Parameters
        ----------
        action : array (T,)
            One predicted probability in [0, 1] per task.

        Returns
        -------
        obs : dict
            The next row's observation; at the session's last row, that row again.
        reward : ndarray (T,) float32
            One reward per task.
        terminated : bool
            True at the session's last row.
        truncated : bool
            Always False.
        info : dict
            ``labels`` (T,) of the row acted on, ``session``, ``row`` and ``next_row``.

        Raises
        ------
        RuntimeError
            Before the first :meth:`reset`, or after the episode has ended (reset again).
        TypeError
            When ``action`` cannot be read as numbers.
        ValueError
            When ``action`` does not have the shape (T,), or holds NaN, infinity or a value
            outside [0, 1].
        """
        a = _as_action(action, (self.data.num_tasks,))
        sparse, dense, reward, done, labels, state, nxt, sess = self._core.step(a.reshape(1, -1))
        info = {
            "labels": labels[0],
            "session": int(sess[0]),
            "row": int(state[0]),
            "next_row": int(nxt[0]),
        }
        return {"sparse": sparse[0], "dense": dense[0]}, reward[0], bool(done[0]), False, info

    def __repr__(self) -> str:
        return f"SessionEnv({self.data!r}, reward={self.reward!r}, order={self.order!r})"


class VecSessionEnv(_VecBase):
    """``num_envs`` sessions stepped together in one C call, with automatic reset.

    Same MDP as :class:`SessionEnv`; episodes are drawn in environment order.

    Parameters
    ----------
    data : SessionData
        The sessions to play.
    num_envs : int
        Environments ``N`` stepped together.
    reward, seed, order :
        As for :class:`SessionEnv`.

    Raises
    ------
    TypeError
        When ``data`` is not an :class:`rmtl.SessionData`.
    ValueError
        When ``data`` holds no sessions, ``num_envs`` is below 1, or ``reward`` or ``order``
        is not one of its choices.

    Notes
    -----
    Reset is same-step (Gymnasium's ``AutoresetMode.SAME_STEP``): an environment whose
    session ends in this step returns the first row of its next session as observation; the
    transition itself is in the step's info.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": _SAME_STEP}

    def __init__(
        self,
        data: SessionData,
        num_envs: int,
        reward: str = "bce",
        seed: int = 0,
        order: str = "random",
    ) -> None:
        self.data = _check_data(data)
        if int(num_envs) < 1:
            raise ValueError(f"num_envs: expected >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.reward, self.order = reward, order
        self._core = _new_core(data, self.num_envs, reward, order, True, seed)
        self.single_observation_space, self.single_action_space = _spaces(data)
        self.observation_space, self.action_space = _spaces(data, (self.num_envs,))
        self._started = False

    def reset(
        self, *, seed: Optional[int] = None, options: Optional[dict] = None
    ) -> tuple[dict, dict]:
        """Start an episode in every environment.

        Parameters
        ----------
        seed : int, optional
            Restart the session draws from this seed.
        options : dict, optional
            ``{"sessions": (N,) ints}`` picks every environment's session.

        Returns
        -------
        obs : dict
            ``{"sparse": (N, F), "dense": (N, D)}``.
        info : dict
            ``session`` (N,) and ``row`` (N,).

        Raises
        ------
        ValueError
            When ``options`` has a key other than ``"sessions"``, or ``options["sessions"]`` is
            not N integers, each in ``[0, data.num_sessions)``.
        """
        super().reset(seed=seed)
        sessions = _session_option(options, "sessions", self.data.num_sessions, self.num_envs)
        sparse, dense, sess, row = self._core.reset(seed, sessions)
        self._started = True
        return {"sparse": sparse, "dense": dense}, {"session": sess, "row": row}

    def step(self, actions: Any) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        """One step of every environment.

        Parameters
        ----------
        actions : array (N, T)
            One predicted probability in [0, 1] per environment and task.

        Returns
        -------
        obs : dict
            The next observations (``sparse`` (N, F), ``dense`` (N, D)); the first row of
            the next session where an episode ended.
        reward : ndarray (N, T) float32
        terminated : ndarray (N,) bool
        truncated : ndarray (N,) bool
            Always False.
        info : dict
            The transitions: ``row`` (rows acted on), ``next_row`` (next-state rows, the last
            row itself where terminated), ``labels`` (N, T) and ``session`` (N,).

        Raises
        ------
        RuntimeError
            Before the first :meth:`reset`.
        TypeError
            When ``actions`` cannot be read as numbers.
        ValueError
            When ``actions`` does not have the shape (N, T), or holds NaN, infinity or a
            value outside [0, 1].
        """
        if not self._started:
            raise RuntimeError("step: call reset() before the first step")
        a = _as_action(actions, (self.num_envs, self.data.num_tasks))
        sparse, dense, reward, done, labels, state, nxt, sess = self._core.step(a)
        info = {"labels": labels, "session": sess, "row": state, "next_row": nxt}
        return {"sparse": sparse, "dense": dense}, reward, done, np.zeros(self.num_envs, bool), info

    def __repr__(self) -> str:
        return f"VecSessionEnv({self.data!r}, num_envs={self.num_envs}, reward={self.reward!r})"


def _session_option(
    options: Optional[dict], key: str, n_sessions: int, n_envs: Optional[int] = None
) -> Optional[np.ndarray]:
    """options[key] checked: one session index (n_envs None) or (n_envs,) of them; None if
    absent."""
    options = {} if options is None else options
    unknown = sorted(set(options) - {key})
    if unknown:
        raise ValueError(f"options: unknown keys {unknown}; expected only {key!r}")
    if options.get(key) is None:
        return None
    v = np.asarray(options[key])
    want = () if n_envs is None else (n_envs,)
    if v.dtype.kind not in "iu" or v.shape != want:
        raise ValueError(
            f"options[{key!r}]: expected "
            f"{'an integer' if n_envs is None else f'{n_envs} integers'} "
            f"in [0, {n_sessions}), got {options[key]!r}"
        )
    if ((v < 0) | (v >= n_sessions)).any():
        raise ValueError(
            f"options[{key!r}]: expected session indices in [0, {n_sessions}), got {options[key]!r}"
        )
    return v.astype(np.int64)
