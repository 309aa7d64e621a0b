"""Session context as optional state fields: where a row stands in its session.

RMTL's critics and backbones see only a row's own features (item fields, dense columns). For
the testbed of the critic effect (``benchmarks/study_critic_effect.py``) each row can also
carry its session context, computed in C from the session's earlier rows only:

- ``ctx_position``: ``log1p(position in the session)`` (0 for the first row);
- ``ctx_seconds``: ``log1p(seconds since the session's first row)``;
- ``ctx_<task>_so_far``: ``log1p(positive labels of that task in the EARLIER rows of the
  session)``, e.g. clicks and purchases so far; a row's own labels never reach its features.

:func:`with_context` puts them where ``mode`` says: into the critics' state (``"critic"``),
the backbone's dense input (``"backbone"``: a backbone's dense Linear reads them, the critics
do not), or both (``"both"``); ``None`` leaves the data alone. The features of a row depend
only on its own session, so splitting before or after gives the same values.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import _core
from .data import SessionData

__all__ = ["CONTEXT_MODES", "session_context", "context_names", "with_context"]

CONTEXT_MODES: tuple[Optional[str], ...] = (None, "critic", "backbone", "both")


def context_names(data: SessionData) -> tuple[str, ...]:
    """Names of the context columns of ``data``, in order.

    Parameters
    ----------
    data : SessionData
        The data set (only its ``task_names`` are read).

    Returns
    -------
    tuple of str
        ``ctx_position``, ``ctx_seconds``, then ``ctx_<task>_so_far`` for every task.
    """
    return ("ctx_position", "ctx_seconds") + tuple(f"ctx_{name}_so_far" for name in data.task_names)


def session_context(data: SessionData) -> np.ndarray:
    """The session context features of every row (see the module docstring), computed in
    one C pass over the sessions.

    Parameters
    ----------
    data : SessionData

    Returns
    -------
    ndarray (n, 2 + T) float32
        Columns named by ``context_names(data)``.

    Raises
    ------
    TypeError
        When ``data`` is not a :class:`rmtl.SessionData`.
    """
    if not isinstance(data, SessionData):
        raise TypeError(f"data: expected rmtl.SessionData, got {type(data).__name__}")
    return _core.session_context(offsets=data.offsets, time=data.time, labels=data.labels)


def with_context(data: SessionData, mode: Optional[str]) -> SessionData:
    """``data`` with its session context as state fields of the critics, the backbone or both.

    ``"backbone"`` appends the context to ``dense`` and marks those columns
    ``backbone_only``; ``"critic"`` stores it as ``critic_only`` (the backbone's input is
    unchanged); ``"both"`` appends it to ``dense`` (everyone reads it). Build the backbone
    for the returned data (``num_dense=data.num_dense``); the critics' state width is
    :attr:`rmtl.SessionData.critic_num_dense`.

    Parameters
    ----------
    data : SessionData
        Data without ``backbone_only`` or ``critic_only`` features yet.
    mode : "backbone", "critic", "both" or None
        Who reads the context; None returns ``data`` itself.

    Returns
    -------
    SessionData

    Raises
    ------
    TypeError
        When ``data`` is not a :class:`rmtl.SessionData`.
    ValueError
        When ``mode`` is not one of :data:`CONTEXT_MODES`, or (``mode`` not None) when
        ``data`` already has ``backbone_only`` columns or ``critic_only`` features.
    """
    if not isinstance(data, SessionData):
        raise TypeError(f"data: expected rmtl.SessionData, got {type(data).__name__}")
    if mode not in CONTEXT_MODES:
        raise ValueError(f"mode: expected one of {list(CONTEXT_MODES)}, got {mode!r}")
    if mode is None:
        return data
    if data.backbone_only or data.critic_only is not None:
        raise ValueError(
            "data: already holds features for only one side (backbone_only or critic_only); "
            "add the context to the data without them"
        )
    ctx = session_context(data)
    dense, backbone_only, critic_only = data.dense, 0, None
    if mode == "critic":
        critic_only = ctx
    else:
        dense = np.concatenate([data.dense, ctx], axis=1)
        backbone_only = ctx.shape[1] if mode == "backbone" else 0
    return SessionData(
        data.session,
        data.time,
        data.sparse,
        dense,
        data.labels,
        data.field_dims,
        user=data.user,
        item=data.item,
        task_names=data.task_names,
        truth=data.truth,
        vocab=data.vocab,
        backbone_only=backbone_only,
        critic_only=critic_only,
    )
