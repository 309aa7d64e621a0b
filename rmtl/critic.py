"""Critics: one network per task that scores the task's action in its session context.

A critic (the authors' reference module ``CriticNeg``) has its own embedding and
``numerical_layer`` (the backbones' front end), an ``action_layer = Linear(1, embed_dim)``
whose output is one more field, a bottom MLP and a tower MLP ending in ``Linear(.., 1)``;
its value is ``Q = -ReLU(out) <= 0`` because every reward is at most 0. Parameters live in
one flat buffer each for values, gradients and Adam moments, exactly like a backbone, and
:meth:`Critic.state_dict` uses the reference module's keys and shapes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from . import _core
from ._arrays import as_codes, as_dense, as_float
from .models import Backbone, BackboneConfig, Net, _check_config

__all__ = ["CriticConfig", "Critic"]


@dataclasses.dataclass(frozen=True)
class CriticConfig:
    """Everything needed to rebuild a critic (defaults: the values of the authors' code).

    Parameters
    ----------
    field_dims : tuple of int
        Cardinality of every categorical field.
    num_dense : int
        Width of the dense state.
    embed_dim : int
        Embedding width.
    bottom_dims, tower_dims : tuple of int
        Hidden widths.
    dropout : float
        Dropout rate.
    seed : int
        Initialisation and dropout seed.
    output_bias : float or None
        Initial bias of the final layer (None: PyTorch's default).
    """

    field_dims: tuple[int, ...]
    num_dense: int
    embed_dim: int = 128
    bottom_dims: tuple[int, ...] = (512, 256)
    tower_dims: tuple[int, ...] = (128, 64)
    dropout: float = 0.2
    seed: int = 0
    output_bias: Optional[float] = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain dict.

        Returns
        -------
        dict
            JSON-ready; ``CriticConfig(**d)`` rebuilds the config.
        """
        return dataclasses.asdict(self)


class Critic(Net):
    """Q network of one task: ``critic(sparse, dense, action) -> (n,)`` values ``<= 0``.

    ``critic.save(path)`` or ``rmtl.save(critic, path)`` writes it; ``Critic.load(path)`` or
    ``rmtl.load(path)`` reads it back. Critics pickle and copy like backbones
    (:class:`rmtl.models.Net`).

    Parameters
    ----------
    field_dims : sequence of int
        Cardinality of every categorical field (as for a backbone).
    num_dense : int
        Width of the critics' dense state (``SessionData.critic_num_dense``).
    embed_dim : int
        Must equal the actor's to initialise the embedding from it (:meth:`copy_embedding`).
    bottom_dims, tower_dims : sequences of int
        Hidden widths; the tower ends in ``Linear(tower_dims[-1], 1)``.
    dropout : float
        After every hidden ReLU, active in training mode only.
    seed : int
        Drives initialisation (PyTorch's defaults) and dropout masks.
    output_bias : float or None
        Initial bias of the tower's final ``Linear(.., 1)``; ``None`` keeps PyTorch's default.
        Since ``Q = -ReLU(out)`` has no gradient where ``out <= 0``, and at PyTorch's default
        initialisation ``out`` barely varies between rows, about half of all critics would
        start with ``out <= 0`` on every row and never learn (their Q stays 0 and stage 3
        degenerates to unweighted fine-tuning). The default 1.0 starts every critic in the
        active region; rmtl's choice, not the reference's.

    Raises
    ------
    ValueError
        When ``field_dims`` is empty or has an entry below 1, ``num_dense`` is negative,
        ``embed_dim`` is below 1, ``bottom_dims`` is empty, ``bottom_dims`` or ``tower_dims``
        has more than ``rmtl._core.max_layers`` widths or one below 1, or ``dropout`` is not
        in [0, 1).
    """

    _config_key = "critic_config"
    _what = "critic"

    def __init__(
        self,
        field_dims: Sequence[int],
        num_dense: int,
        embed_dim: int = 128,
        bottom_dims: Sequence[int] = (512, 256),
        tower_dims: Sequence[int] = (128, 64),
        dropout: float = 0.2,
        seed: int = 0,
        output_bias: Optional[float] = 1.0,
    ) -> None:
        cfg = CriticConfig(
            tuple(int(d) for d in field_dims),
            int(num_dense),
            int(embed_dim),
            tuple(int(d) for d in bottom_dims),
            tuple(int(d) for d in tower_dims),
            float(dropout),
            int(seed),
            None if output_bias is None else float(output_bias),
        )
        _check_config(_backbone_view(cfg))
        self.config = cfg
        self._bind(
            _core.Critic(
                field_dims=np.asarray(cfg.field_dims, np.int32),
                num_dense=cfg.num_dense,
                embed_dim=cfg.embed_dim,
                bottom_dims=np.asarray(cfg.bottom_dims, np.int32),
                tower_dims=np.asarray(cfg.tower_dims, np.int32),
                dropout=cfg.dropout,
                seed=cfg.seed & (2**64 - 1),
            )
        )
        if cfg.output_bias is not None:  # the tower's final bias: the table's last tensor
            next(reversed(self._views["param"].values()))[...] = cfg.output_bias

    # ------------------------------------------------------------------ compute
    def _inputs(
        self, sparse: Any, dense: Any, action: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        codes = as_codes(sparse, len(self.config.field_dims))
        n = codes.shape[0]
        return codes, as_dense(dense, n, self.config.num_dense), as_float(action, (n,), "action")

    def __call__(self, sparse: Any, dense: Any, action: Any) -> np.ndarray:
        """Q values of one action per row, in the current mode, in one forward pass.

        Parameters
        ----------
        sparse : int array (n, F)
            Categorical codes.
        dense : float array (n, D)
            Dense state.
        action : float array (n,)
            One action per row.

        Returns
        -------
        ndarray (n,) float32
            Q values (at most 0).
        """
        codes, dense, action = self._inputs(sparse, dense, action)
        out = np.empty(codes.shape[0], np.float32)
        self._core.predict(
            sparse=codes, dense=dense, action=action, out=out, batch_size=max(1, codes.shape[0])
        )
        return out

    forward = __call__

    def predict(self, sparse: Any, dense: Any, action: Any, batch_size: int = 16384) -> np.ndarray:
        """Evaluation-mode Q values, in batches (Ctrl-C stops between them); the critic's
        mode is restored afterwards.

        Parameters
        ----------
        sparse : int array (n, F)
            Categorical codes.
        dense : float array (n, D)
            Dense state.
        action : float array (n,)
            One action per row.
        batch_size : int
            Rows per forward pass.

        Returns
        -------
        ndarray (n,) float32
            Q values (at most 0).
        """
        codes, dense, action = self._inputs(sparse, dense, action)
        out = np.empty(codes.shape[0], np.float32)
        step, mode = max(1, int(batch_size)) * 8, self.training
        self.eval()
        try:
            for s in range(0, codes.shape[0], step):
                self._core.predict(
                    sparse=codes[s : s + step],
                    dense=dense[s : s + step],
                    action=action[s : s + step],
                    out=out[s : s + step],
                    batch_size=int(batch_size),
                )
        finally:
            self.train(mode)
        return out

    def backward(self, sparse: Any, dense: Any, action: Any, grad_q: Any = None) -> np.ndarray:
        """Zero the gradients, run forward (current mode) and backpropagate
        ``sum_i grad_q[i] * Q_i``; parameter gradients land in :meth:`named_grads`.

        Parameters
        ----------
        sparse : int array (n, F)
            Categorical codes.
        dense : float array (n, D)
            Dense state.
        action : float array (n,)
            One action per row.
        grad_q : float array (n,), optional
            The upstream gradient (default: ones).

        Returns
        -------
        ndarray (n,) float32
            The gradient with respect to the action.
        """
        codes, dense, action = self._inputs(sparse, dense, action)
        n = codes.shape[0]
        g = np.ones(n, np.float32) if grad_q is None else as_float(grad_q, (n,), "grad_q")
        return self._core.backward(sparse=codes, dense=dense, action=action, grad_q=g)

    # ------------------------------------------------------------------ parameters
    def copy_embedding(self, backbone: Backbone, task: int = 0) -> None:
        """Initialise this critic's embedding table from a backbone's (as in the authors'
        code, critics start from the actor's embedding).

        Parameters
        ----------
        backbone : Backbone
            The actor, with the same ``field_dims`` and ``embed_dim``.
        task : int
            With per-task embeddings (SingleTask), whose table to copy.

        Raises
        ------
        ValueError
            When ``task`` is not a task index of a backbone with per-task embeddings; when
            ``backbone`` has no embedding table (``embedding.embedding.weight``, or one per
            task), or the table's shape differs from this critic's (other ``field_dims`` or
            ``embed_dim``).
        """
        theirs = dict(backbone.named_parameters())
        per_task = [k for k in theirs if re.fullmatch(r"embedding\.\d+\.embedding\.weight", k)]
        is_index = isinstance(task, (int, np.integer)) and not isinstance(task, bool)
        if per_task and not (is_index and 0 <= task < len(per_task)):
            raise ValueError(
                f"task: expected a task index in [0, {len(per_task)}) (the backbone has one "
                f"embedding table per task), got {task!r}"
            )
        key = next(
            (
                k
                for k in (f"embedding.{task}.embedding.weight", "embedding.embedding.weight")
                if k in theirs
            ),
            None,
        )
        mine = self._views["param"]["embedding.embedding.weight"]
        if key is None or theirs[key].shape != mine.shape:
            got = "no embedding table" if key is None else f"shape {theirs[key].shape}"
            raise ValueError(
                f"backbone: needs an embedding table of shape {mine.shape} (same field_dims and "
                f"embed_dim={self.config.embed_dim}), got {got}; "
                "build the critic with the backbone's embed_dim"
            )
        mine[...] = theirs[key]

    def _rebuild(self) -> Critic:
        return Critic(**self.config.to_dict())

    @classmethod
    def _build(cls, **config: Any) -> Critic:
        return Critic(**config)

    def _init_from_config(self, config: Mapping[str, Any]) -> None:
        Critic.__init__(self, **config)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Critic(fields={len(c.field_dims)}, dense={c.num_dense}, embed={c.embed_dim}, "
            f"bottom={c.bottom_dims}, tower={c.tower_dims}, dropout={c.dropout}, "
            f"params={self.num_parameters})"
        )


def _backbone_view(cfg: CriticConfig) -> Any:
    """The critic's config seen as a one-task backbone config, to reuse its checks."""
    return BackboneConfig(
        "critic",
        cfg.field_dims,
        cfg.num_dense,
        1,
        cfg.embed_dim,
        cfg.bottom_dims,
        cfg.tower_dims,
        cfg.dropout,
        cfg.seed,
    )
