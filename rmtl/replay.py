"""The replay buffer of stage 2 and :func:`collect`, which fills it by replaying sessions of
:class:`rmtl.SessionData` with a behaviour policy through the session MDP of
:mod:`rmtl.env` (stepped in C)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Optional, Union

import numpy as np

from . import _core, _progress
from ._arrays import as_float, as_labels
from ._io import CorruptFileError, open_npz, save_npz
from .data import SessionData
from .env import _ORDERS, _SEED_MASK, REWARDS, _check_data, _choice
from .models import Backbone

__all__ = ["ReplayBuffer", "collect"]

_POLICIES = _core.enums["policy"]
_CHUNK = 1 << 22  # transitions per collection call: ~0.1 s of C work, then Ctrl-C can land
_FORMAT = 1


class ReplayBuffer:
    """A ring buffer of transitions stored as row indices into one SessionData (no feature
    copies): ``state``, ``next_state`` (int64 rows), ``action`` and ``reward`` (float32, T per
    transition) and ``done`` (float32 0/1). Past ``capacity`` the oldest are overwritten.

    :meth:`sample` draws a batch of distinct transitions; the i-th call after construction
    (or the i-th overall for a loaded buffer) depends only on ``seed``, i and the stored
    sequence, so the same seed gives the same batches.

    Parameters
    ----------
    capacity : int
        Transitions kept at most.
    num_tasks : int
        Values per action and reward (the data's tasks).
    seed : int
        Seed of the sampling sequence.

    See Also
    --------
    rmtl.collect : fills a buffer by replaying sessions.
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
        """Append transitions, oldest first.

        Parameters
        ----------
        state, next_state : int array (n,)
            Row indices of the states and next states.
        action : float array (n, T)
            Actions in [0, 1].
        reward : float array (n, T)
            Rewards.
        done : array (n,)
            0/1 flags: 1 where the session ended.

        Raises
        ------
        TypeError
            When ``action``, ``reward`` or ``done`` does not hold real numbers.
        ValueError
            When ``state`` is not a 1-D integer array or ``next_state`` not one of the same
            length; ``action``, ``reward`` or ``done`` is not of shape (n, T), (n, T) or (n,),
            or holds NaN or infinity; ``action`` holds a value outside [0, 1]; a row index is
            negative; or ``done`` holds a value other than 0 or 1.
        """
        state = _as_rows(state, "state")
        n, T = len(state), self.num_tasks
        self._core.push(
            state=state,
            next_state=_as_rows(next_state, "next_state", n),
            action=as_float(action, (n, T), "action"),
            reward=as_float(reward, (n, T), "reward"),
            done=as_float(done, (n,), "done"),
        )

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """Draw distinct transitions.

        Parameters
        ----------
        batch_size : int
            Transitions ``B`` drawn.

        Returns
        -------
        dict of ndarray
            Fresh C-contiguous arrays: ``state``, ``next_state`` int64 (B,), ``action``,
            ``reward`` float32 (B, T), ``done`` float32 (B,).
        """
        return dict(zip(_KEYS, self._core.sample(int(batch_size))))

    def transitions(self) -> dict[str, np.ndarray]:
        """Every stored transition, oldest first.

        Returns
        -------
        dict of ndarray
            As :meth:`sample` returns.
        """
        return dict(zip(_KEYS, self._core.export()))

    def save(
        self, path: Union[str, os.PathLike[str]], documents: Optional[Mapping[str, Any]] = None
    ) -> None:
        """Write the transitions, capacity, seed and sampling position to one .npz file,
        atomically.

        Parameters
        ----------
        path : str or os.PathLike
            The file, exactly (no ``.npz`` is appended).
        documents : mapping, optional
            Further JSON documents stored in the file (checkpoints record the data
            fingerprints there); :meth:`load` ignores them.
        """
        meta = {
            "format": _FORMAT,
            "capacity": self.capacity,
            "num_tasks": self.num_tasks,
            "seed": self._seed,
            "draws": self._core.draws,
        }
        save_npz(path, self.transitions(), {**(documents or {}), "meta": meta})

    @classmethod
    def load(cls, path: Union[str, os.PathLike[str]]) -> ReplayBuffer:
        """Read a buffer written by :meth:`save`; its sampling continues where it stopped.

        Parameters
        ----------
        path : str or os.PathLike
            The file.

        Returns
        -------
        ReplayBuffer

        Raises
        ------
        FileNotFoundError
            When ``path`` does not exist.
        CorruptFileError
            (:class:`rmtl.CorruptFileError`, a ValueError) naming the file when it is damaged
            or not a ReplayBuffer file of this format.
        """
        with open_npz(path, "ReplayBuffer") as z:
            meta = z.json("meta")
            if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                raise CorruptFileError(path, f"not an rmtl ReplayBuffer file of format {_FORMAT}")
            buf = cls(meta["capacity"], meta["num_tasks"], meta["seed"])
            buf.add(*(z[k] for k in _KEYS))
        buf._core.draws = meta["draws"]
        return buf

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer({len(self)}/{self.capacity} transitions, "
            f"num_tasks={self.num_tasks}, seed={self._seed})"
        )


_KEYS = ("state", "next_state", "action", "reward", "done")


def _as_rows(x: Any, name: str, n: int = -1) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu" or a.ndim != 1 or (n >= 0 and len(a) != n):
        raise ValueError(
            f"{name}: expected {'n' if n < 0 else n} integer row indices, got {a.dtype} {a.shape}"
        )
    return np.ascontiguousarray(a, dtype=np.int64)


Policy = Union[str, Callable[[np.ndarray, np.ndarray], Any]]


def collect(
    data: SessionData,
    buffer: ReplayBuffer,
    policy: Policy = "uniform",
    noise: float = 0.1,
    model: Any = None,
    reward: str = "bce",
    seed: int = 0,
    episodes: Optional[int] = None,
    batch_size: int = 16384,
    progress: bool = False,
) -> int:
    """Replay sessions of ``data`` into ``buffer`` with a behaviour policy.

    Parameters
    ----------
    data : SessionData
        The sessions.
    buffer : ReplayBuffer
        A buffer with ``data.num_tasks`` tasks; its rows index ``data``.
    policy : "uniform", "actor" or callable
        The behaviour action of every transition. ``"uniform"`` (authors' code): uniform in
        [0, 1)^T. ``"actor"``: ``model``'s evaluation-mode predictions (rmtl backbone, all rows
        batched through the C model) plus Gaussian noise of std ``noise``, clipped to [0, 1].
        A callable gets ``(sparse (m, F) int32, dense (m, D) float32)`` of a batch of up to
        ``batch_size`` states and returns actions (m, T) in [0, 1] (slower, for research).
    noise : float
        Std of the actor's exploration noise (``policy="actor"`` only).
    model : Backbone, optional
        The actor of ``policy="actor"`` (and only then).
    reward : "bce", "abs" or "bce_wrapped"
        As in :class:`SessionEnv`.
    seed : int
        Keys the random actions and the episode draws; the same seed gives the same
        transitions.
    episodes : int or None
        None: every session once, in stored order. An int k: the first k episodes a
        ``SessionEnv(data, seed=seed)`` plays (sessions drawn with replacement).
    batch_size : int
        States per call of a callable policy (and per actor prediction batch).
    progress : bool
        A tqdm bar over transitions.

    Returns
    -------
    int
        The number of transitions added.

    Raises
    ------
    TypeError
        When ``data`` is not an :class:`rmtl.SessionData`, ``buffer`` is not an
        :class:`rmtl.ReplayBuffer`, ``policy="actor"`` and ``model`` is not an rmtl
        backbone, or a callable policy returns actions that are not numbers.
    ValueError
        When ``data`` holds no sessions; ``buffer`` holds another number of tasks than
        ``data``; ``reward`` is not one of :data:`rmtl.env.REWARDS`; ``noise`` is negative
        or not finite; ``batch_size`` or ``episodes`` is below 1; ``model`` is given with
        another policy than ``"actor"``; ``policy`` is neither ``"uniform"``, ``"actor"``
        nor a callable; with ``policy="actor"``, ``model`` was built for other fields,
        dense features or tasks than ``data``; a callable policy returns actions of another
        shape than (m, T), NaN or infinite, or outside [0, 1]; or ``data.labels`` are no
        longer 0/1 of shape (n, T) (changed after the SessionData checked them).

    Notes
    -----
    The uniform and actor policies run as one C pass over the rows (in chunks of about 4M
    transitions, so Ctrl-C can stop between them).

    Examples
    --------
    >>> import rmtl
    >>> data = rmtl.datasets.synthetic(n_users=20)
    >>> buffer = rmtl.ReplayBuffer(capacity=len(data), num_tasks=data.num_tasks)
    >>> rmtl.collect(data, buffer) == len(data)
    True
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
    # checked again here (the arrays of a SessionData can be changed after it checked them) and
    # copied, so nothing can change them between chunks
    labels = np.array(as_labels(data.labels, len(data), data.num_tasks), copy=True)
    seed = int(seed) & _SEED_MASK
    if episodes is None:
        sessions = np.arange(data.num_sessions, dtype=np.int64)
    elif int(episodes) < 1:
        raise ValueError(f"episodes: expected >= 1 or None (every session), got {episodes}")
    else:
        sessions = _core.draw_sessions(
            n_sessions=data.num_sessions, count=int(episodes), order=_ORDERS["random"], seed=seed
        )
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
            bar.update(
                buffer._core.collect(
                    offsets=data.offsets,
                    labels=labels,
                    sessions=sessions[a:b],
                    first=first,
                    reward=rkind,
                    policy=kind,
                    action=base,
                    noise=float(noise),
                    seed=seed,
                )
            )
    return int(lengths.sum())


def _chunks(lengths: np.ndarray, size: int) -> Iterator[tuple[int, int, int]]:
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
    out = as_float(
        policy(data.sparse[rows], data.dense[rows]), (len(rows), data.num_tasks), "policy output"
    )
    if ((out < 0) | (out > 1)).any():
        raise ValueError("policy output: expected actions in [0, 1]; clip the policy's actions")
    return out


def _actor_predictions(model: Any, data: SessionData, batch_size: int) -> np.ndarray:
    if not isinstance(model, Backbone):
        raise TypeError(f"model: policy='actor' needs an rmtl backbone, got {type(model).__name__}")
    c = model.config
    if (
        tuple(c.field_dims) != data.field_dims
        or c.num_dense != data.num_dense
        or c.num_tasks != data.num_tasks
    ):
        raise ValueError(
            f"model: expects field_dims {tuple(c.field_dims)}, {c.num_dense} dense, {c.num_tasks} "
            f"tasks; data has {data.field_dims}, {data.num_dense}, {data.num_tasks}"
        )
    return model.predict(data.sparse, data.dense, batch_size=batch_size)  # evaluation mode
