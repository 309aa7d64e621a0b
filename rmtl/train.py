"""Trainer: supervised training of a backbone, chunks of Adam steps in C per Python call."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Optional, Union

import numpy as np

from . import _core, _frames, _progress, balancers
from .balancers import Balancer
from .config import CHOICES, RMTLConfig, check
from .data import SessionData, row_order
from .metrics import bce_rows, evaluate

__all__ = ["Trainer", "History", "NonFiniteLossError", "chunks", "EARLY_STOPPING"]

_log = logging.getLogger(__name__)

_REF = RMTLConfig()
_BETAS, _EPS = (0.9, 0.999), 1e-8  # Adam's (PyTorch's defaults)
_CHUNK_SECONDS = 0.25  # about how long one C call trains
EARLY_STOPPING = CHOICES["early_stopping"]


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite; the model holds the best weights so far.

    Its message names the epoch and suggests a lower ``lr`` or a look at the data for extreme
    values.

    See Also
    --------
    Trainer.fit : restores the best weights so far, then raises it.

    Notes
    -----
    :meth:`Trainer.fit` (and so every training stage of :class:`rmtl.RMTL`) restores the best
    weights so far, or before any epoch completed the weights ``fit`` started from, and puts
    the model in evaluation mode before it raises this error. :meth:`Trainer.train_epoch`
    called directly raises it without restoring anything.
    """


def chunks(steps: int, seconds: float = 0.25) -> Iterator[tuple[int, int]]:
    """Split ``steps`` steps into C calls of about ``seconds`` each.

    Parameters
    ----------
    steps : int
        The number of steps to split (0 yields nothing).
    seconds : float
        About how long each call should take.

    Yields
    ------
    first : int
        The index of the call's first step (0 for the first call).
    count : int
        How many steps the call runs: 1 for the first call, then sized by the time the
        caller spent on the last (from this yield until it asked for the next) per step,
        from 1 to 256 steps, never past ``steps``.

    Notes
    -----
    Sizing the calls by time lets Ctrl-C and progress bars land between calls without a
    Python round trip per step; :meth:`Trainer.train_epoch` splits its batches this way.

    Examples
    --------
    >>> sum(count for _, count in chunks(1000))
    1000
    """
    done, per_call = 0, 1
    while done < steps:
        n = min(per_call, steps - done)
        t0 = time.perf_counter()
        yield done, n
        per_step = (time.perf_counter() - t0) / n
        per_call = max(1, min(256, int(seconds / max(per_step, 1e-6))))
        done += n


@dataclasses.dataclass
class History:
    """Per-epoch records of one :meth:`Trainer.fit` call.

    :meth:`Trainer.fit` fills it in; the arguments are its fields, so :meth:`from_dict` and
    ``History(**fields)`` rebuild one.

    Parameters
    ----------
    epochs : list of dict
        One record per epoch that ran, in order: ``epoch`` (1-based), ``train_loss`` (the mean
        training loss), ``seconds``; with a weighting ``mean_weight_<task>``; with validation
        data ``valid_auc_<task>``, ``valid_logloss_<task>`` and their means over tasks
        ``valid_auc`` (over the tasks whose AUC is defined) and ``valid_logloss``.
    best_epoch : int or None
        The 1-based epoch whose weights the model kept; None when ``fit`` had no validation
        data (the last epoch's weights are kept) or no epoch completed.
    best_score : float
        That epoch's early-stopping score, higher is better: ``valid_auc`` or minus
        ``valid_logloss``; ``-inf`` without validation data.
    stopped_early : bool
        True when early stopping ended training before the epoch limit.
    interrupted : bool
        True when Ctrl-C ended training.
    steps_per_epoch : int
        Optimizer steps per epoch.
    early_stopping : str or None
        The score that chose ``best_epoch`` (``"logloss"`` or ``"auc"``); None when early
        stopping was off (``patience=None``) or there was no validation data.
    logloss_change : dict of str to (float, float)
        Per task, the mean and standard error of the per-row change of validation BCE from
        the weights ``fit`` started with to the kept ones (positive: worse); empty without
        validation data.
    """

    epochs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_epoch: Optional[int] = None
    best_score: float = float("-inf")
    stopped_early: bool = False
    interrupted: bool = False
    steps_per_epoch: int = 0
    early_stopping: Optional[str] = None
    logloss_change: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Adam steps that produced the kept weights: ``best_epoch`` (the number of epochs
        recorded when training ran without validation) times ``steps_per_epoch``."""
        kept = self.best_epoch if self.best_epoch is not None else len(self.epochs)
        return kept * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in checkpoints and :attr:`rmtl.RMTL.history`.

        Returns
        -------
        dict
            ``epochs``, ``best_epoch``, ``best_score``, ``steps_per_epoch``,
            ``early_stopping`` and ``logloss_change`` (each pair as a list); the epoch
            records are the same objects, not copies. ``stopped_early`` and ``interrupted``
            are not kept.
        """
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "steps_per_epoch": self.steps_per_epoch,
            "early_stopping": self.early_stopping,
            "logloss_change": {k: list(v) for k, v in self.logloss_change.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """The inverse of :meth:`to_dict`.

        Parameters
        ----------
        d : dict
            What :meth:`to_dict` returned (or its JSON read back). ``epochs``, ``best_epoch``
            and ``best_score`` are required; ``steps_per_epoch`` (default 0),
            ``early_stopping`` (None) and ``logloss_change`` (empty) may be missing, as in
            files of older rmtl versions.

        Returns
        -------
        History
            ``stopped_early`` and ``interrupted`` are False (:meth:`to_dict` does not keep
            them).

        Raises
        ------
        KeyError
            When a required key is missing.
        """
        return cls(
            epochs=d["epochs"],
            best_epoch=d["best_epoch"],
            best_score=d["best_score"],
            steps_per_epoch=d.get("steps_per_epoch", 0),
            early_stopping=d.get("early_stopping"),
            logloss_change={
                k: (float(v[0]), float(v[1])) for k, v in d.get("logloss_change", {}).items()
            },
        )

    def column(self, key: str) -> list[Any]:
        """One field over epochs, e.g. ``history.column("valid_auc")``.

        Parameters
        ----------
        key : str
            A key of the epoch records (see :attr:`epochs`).

        Returns
        -------
        list
            Its value in every epoch's record, in order; None where a record lacks it.
        """
        return [e.get(key) for e in self.epochs]

    def to_frame(self) -> Any:
        """The epoch records as a pandas DataFrame (pandas: the ``data`` extra).

        Returns
        -------
        pandas.DataFrame
            One row per epoch in order, one column per record key (``epoch``,
            ``train_loss``, ``valid_auc``, ...; missing values NaN).

        Raises
        ------
        ImportError
            Without pandas, naming the extra that installs it.
        """
        return _frames.pandas().DataFrame.from_records(self.epochs)


class Trainer:
    """Adam on the mean per-task BCE, with early stopping on mean validation AUC or logloss.

    Every argument is checked up front (e.g. a non-finite ``lr`` raises ValueError naming
    it).

    Parameters
    ----------
    model : rmtl.models.Backbone
        The backbone to train (:func:`rmtl.models.create`), in place.
    lr : float
        Adam's learning rate (> 0; the reference's 1e-3).
    weight_decay : float
        L2 penalty added to the gradient, as ``torch.optim.Adam`` (>= 0; the reference's
        1e-6).
    batch_size : int
        Rows per Adam step (>= 1; the reference's 2048). The last batch of an epoch may be
        short.
    seed : int
        Drives the batch order (with ``shuffle``), the ``"permuted"`` weighting's
        permutations and a ``balancer`` given by name; dropout masks come from the model's
        own seed.
    betas : (float, float)
        Adam's moment decay rates, each in [0, 1) (PyTorch's defaults).
    eps : float
        Adam's epsilon (> 0).
    progress : bool
        Show tqdm bars (on stderr) and log each epoch's record at INFO instead of DEBUG.
    chunk_seconds : float
        About how long each C call (:meth:`rmtl.models.Backbone.train_chunk`) trains (> 0).
    critics : sequence of rmtl.Critic, optional
        One critic per task, for the weightings that read Q values.
    weighting : str, optional
        The loss weighting: None (the plain mean BCE), ``"rmtl"``, ``"constant"``,
        ``"label"``, ``"neg_q"``, ``"static"`` or ``"permuted"``; see
        :meth:`~rmtl.models.Backbone.train_chunk` for each.
    lam : float
        The weighting's lambda (>= 0), as in ``1 - lam Q_k``.
    task_weights : sequence of float, optional
        The ``"static"`` weighting's weight per task (required by it, refused by the others).
    shuffle : bool
        True: every epoch reads the rows in a fresh order drawn from ``seed`` and the epoch;
        False: the rows in stored order, every epoch (time order for
        :meth:`rmtl.SessionData.split` parts).
    callback : callable, optional
        Called with every epoch's record (a dict, as in :attr:`History.epochs`) as soon as it
        is complete (e.g. to report to Ray Tune).
    balancer : str or rmtl.balancers.Balancer, optional
        Balances the task losses at every step with a method of the multi-task literature
        (:mod:`rmtl.balancers`): a name of :func:`rmtl.balancers.names` (its defaults;
        ``seed``, ``lr`` and ``weight_decay`` are this trainer's) or an object of
        :func:`rmtl.balancers.create`.

    Raises
    ------
    TypeError
        When ``model`` is no rmtl backbone, ``betas`` no pair, ``balancer`` neither a name nor
        a Balancer, or a number has the wrong type.
    ValueError
        When a value is out of range, ``weighting`` unknown, or the balancer refuses the
        model (see :meth:`rmtl.balancers.Balancer.prepare`).

    See Also
    --------
    rmtl.RMTL : runs its stages with this trainer.
    rmtl.models.Backbone.train_chunk : the call the trainer makes, to write your own loop.

    Notes
    -----
    The defaults follow the reference: ``lr=1e-3``, ``weight_decay=1e-6``,
    ``batch_size=2048``. Each C call (:meth:`rmtl.models.Backbone.train_chunk`) runs as many
    batches as fit in about ``chunk_seconds``, with the GIL released; Ctrl-C between chunks
    stops training, restores the best weights so far and returns the history.

    Each epoch's record is logged as a ``key=value`` line to the ``rmtl.train`` logger, at
    INFO with ``progress`` and at DEBUG without; nothing is printed, so the lines show only
    once logging is configured (e.g. ``logging.basicConfig(level=logging.INFO)``).

    With ``weighting`` (and ``critics``, ``lam``; ``task_weights`` for ``"static"``), the loss
    is RMTL's stage-3 critic-weighted BCE or one of its controls (see
    :meth:`~rmtl.models.Backbone.train_chunk`), and every epoch record gains
    ``mean_weight_<task>``, the mean loss weight per task.

    With ``balancer``, its direction goes to the model's shared parameters
    (:meth:`~rmtl.models.Backbone.shared_parameters`), each task-specific parameter gets
    its task's gradient, and every epoch's end advances its epoch history (DWA, GradNorm,
    STCH). A step reads ``batch_size`` rows per batch the balancer samples (3 batches for
    ``modo`` and ``sdmgrad``). A model whose tasks share nothing (SingleTask) is refused.
    """

    def __init__(
        self,
        model: Any,
        lr: float = _REF.lr,
        weight_decay: float = _REF.weight_decay,
        batch_size: int = _REF.batch_size,
        seed: int = 0,
        betas: tuple[float, float] = _BETAS,
        eps: float = _EPS,
        progress: bool = True,
        chunk_seconds: float = _CHUNK_SECONDS,
        critics: Optional[Sequence[Any]] = None,
        weighting: Optional[str] = None,
        lam: float = 0.0,
        task_weights: Optional[Sequence[float]] = None,
        shuffle: bool = True,
        callback: Optional[Callable[[dict[str, Any]], None]] = None,
        balancer: Union[str, Balancer, None] = None,
    ) -> None:
        if not hasattr(model, "_core") or not hasattr(model, "config"):
            raise TypeError(
                f"model: expected an rmtl backbone (rmtl.models.*), got {type(model).__name__}"
            )
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        if weighting is not None and weighting not in _core.enums["weighting"]:
            raise ValueError(
                f"weighting: expected None or one of {sorted(_core.enums['weighting'])}, "
                f"got {weighting!r}"
            )
        self._assign(
            model,
            lr=check("lr", lr),
            weight_decay=check("weight_decay", weight_decay),
            batch_size=check("batch_size", batch_size),
            seed=check("seed", seed),
            betas=(check("beta1", betas[0]), check("beta2", betas[1])),
            eps=check("eps", eps),
            progress=progress,
            chunk_seconds=check("chunk_seconds", chunk_seconds),
            critics=critics,
            weighting=weighting,
            lam=check("lam", lam),
            task_weights=task_weights,
            shuffle=shuffle,
            callback=callback,
            balancer=balancer,
        )

    @classmethod
    def _from_config(
        cls,
        model: Any,
        config: RMTLConfig,
        seed: int,
        progress: bool,
        callback: Optional[Callable[[dict[str, Any]], None]],
        critics: Optional[Sequence[Any]] = None,
        weighting: Optional[str] = None,
        lam: float = 0.0,
        task_weights: Optional[Sequence[float]] = None,
        balancer: Optional[Balancer] = None,
    ) -> Trainer:
        """RMTL's stages' Trainer: ``lr``, ``weight_decay``, ``batch_size`` and the batch order
        of ``config``, the other arguments as for :class:`Trainer`; nothing is checked again
        (``config``'s construction checked its values, and the agent the others)."""
        trainer = cls.__new__(cls)
        trainer._assign(
            model,
            lr=config.lr,
            weight_decay=config.weight_decay,
            batch_size=config.batch_size,
            seed=seed,
            betas=_BETAS,
            eps=_EPS,
            progress=progress,
            chunk_seconds=_CHUNK_SECONDS,
            critics=critics,
            weighting=weighting,
            lam=lam,
            task_weights=task_weights,
            shuffle=config.batch_order == "shuffled",
            callback=callback,
            balancer=balancer,
        )
        return trainer

    def _assign(
        self,
        model: Any,
        *,
        lr: float,
        weight_decay: float,
        batch_size: int,
        seed: int,
        betas: tuple[float, float],
        eps: float,
        progress: bool,
        chunk_seconds: float,
        critics: Optional[Sequence[Any]],
        weighting: Optional[str],
        lam: float,
        task_weights: Optional[Sequence[float]],
        shuffle: bool,
        callback: Optional[Callable[[dict[str, Any]], None]],
        balancer: Union[str, Balancer, None] = None,
    ) -> None:
        self.model = model
        self.lr, self.weight_decay, self.batch_size, self.seed = lr, weight_decay, batch_size, seed
        self.betas, self.eps = betas, eps
        self.progress, self.chunk_seconds = bool(progress), chunk_seconds
        self.shuffle, self.callback = bool(shuffle), callback
        self.critics, self.weighting, self.lam = critics, weighting, lam
        self.task_weights = None if task_weights is None else np.asarray(task_weights, np.float32)
        self._epochs_done = 0
        self._weight_sums: Optional[np.ndarray] = None
        if isinstance(balancer, str):
            balancer = balancers.create(
                balancer,
                model.config.num_tasks,
                seed=seed,
                lr=lr,
                weight_decay=weight_decay,
            )
        elif balancer is not None and not isinstance(balancer, Balancer):
            raise TypeError(
                "balancer: expected None, a name of rmtl.balancers.names() or an object of "
                f"rmtl.balancers.create, got {type(balancer).__name__}"
            )
        self.balancer: Optional[Balancer] = balancer
        if balancer is not None:
            balancer.prepare(model)  # refuses a model or space it cannot balance, now

    def _check_data(self, data: SessionData, name: str) -> None:
        c = self.model.config
        if not isinstance(data, SessionData):
            raise TypeError(f"{name}: expected rmtl.SessionData, got {type(data).__name__}")
        if (
            data.field_dims != tuple(c.field_dims)
            or data.num_dense != c.num_dense
            or data.num_tasks != c.num_tasks
        ):
            raise ValueError(
                f"{name}: data has field_dims {data.field_dims}, {data.num_dense} dense, "
                f"{data.num_tasks} tasks; "
                f"the model expects {tuple(c.field_dims)}, {c.num_dense}, {c.num_tasks}"
            )
        wrong = [
            k
            for k, critic in enumerate(self.critics or ())
            if critic.config.num_dense != data.critic_num_dense
        ]
        if wrong:
            raise ValueError(
                f"{name}: its critics' state has {data.critic_num_dense} dense features "
                f"(SessionData.critic_num_dense), critic {wrong[0]} reads "
                f"{self.critics[wrong[0]].config.num_dense}; train the critics on data with the "
                "same context (rmtl.with_context)"
            )

    def __repr__(self) -> str:
        weighting = (
            "" if self.weighting is None else f", weighting={self.weighting!r}, lam={self.lam}"
        )
        return (
            f"Trainer(model={type(self.model).__name__}, lr={self.lr}, "
            f"batch_size={self.batch_size}, seed={self.seed}, "
            f"weight_decay={self.weight_decay}, shuffle={self.shuffle}{weighting})"
        )

    def _weighting_args(self) -> dict[str, Any]:
        """The static weighting's task weights, the permuted one's seed (its permutations of
        each batch's weights are drawn from the Trainer's seed and the step)."""
        if self.weighting == "static":
            return {"task_weights": self.task_weights}
        return {"seed": self.seed} if self.weighting == "permuted" else {}

    def train_epoch(self, data: SessionData, bar: Any = None) -> float:
        """One pass over ``data`` in training mode: Adam steps over its rows in batches.

        The rows come in a fresh order drawn from the trainer's seed and the number of
        epochs this trainer has run (with ``shuffle``), or in stored order; the balancer, if
        any, ends its epoch afterwards. Nothing is checked or restored: :meth:`fit` checks
        the data and keeps the best weights.

        Parameters
        ----------
        data : rmtl.SessionData
            The training data, of the model's fields and tasks.
        bar : tqdm bar, optional
            Advanced by the number of steps after every C call.

        Returns
        -------
        float
            The mean training loss over the epoch's rows (the batch losses weighted by batch
            size).

        Raises
        ------
        NonFiniteLossError
            When a loss or gradient becomes NaN or infinite (the weights are left as they
            are).
        """
        order = row_order(len(data), self.shuffle, self.seed, self._epochs_done)
        B = self.batch_size * (1 if self.balancer is None else self.balancer.samples)
        total, sums = 0.0, np.zeros(data.num_tasks)
        self.model.train()
        for first, n in chunks(-(-len(order) // B), self.chunk_seconds):
            try:
                loss, wsum = self._chunk(order[first * B : (first + n) * B], data)
            except FloatingPointError as e:
                raise NonFiniteLossError(
                    f"{e} (epoch {self._epochs_done + 1}); lower lr, or check the data for "
                    "extreme values"
                ) from None
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"training loss became {loss} in epoch {self._epochs_done + 1}; "
                    "lower lr, or check the data for extreme values"
                )
            total += loss
            if wsum is not None:
                sums += wsum
            if bar is not None:
                bar.update(n)
        self._weight_sums = sums / len(order) if self.weighting is not None else None
        self._epochs_done += 1
        if self.balancer is not None:
            self.balancer.end_epoch()
        return total / len(order)

    def _chunk(self, rows: np.ndarray, data: SessionData) -> tuple[float, Optional[list[float]]]:
        """One C call of Adam steps over ``rows`` with this trainer's settings."""
        return self.model.train_chunk(
            rows,
            data.sparse,
            data.dense,
            data.labels,
            batch_size=self.batch_size,
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
            weight_decay=self.weight_decay,
            critics=self.critics,
            weighting=self.weighting,
            lam=self.lam,
            extra=data.critic_only,
            balancer=self.balancer,
            **self._weighting_args(),
        )

    def fit(
        self,
        train: SessionData,
        valid: Optional[SessionData] = None,
        epochs: int = 10,
        patience: Optional[int] = 2,
        min_steps: int = 0,
        early_stopping: str = _REF.early_stopping,
    ) -> History:
        """Train for up to ``epochs`` epochs; with ``valid``, stop after ``patience`` epochs
        without a better validation score and restore the weights of the best epoch.

        Parameters
        ----------
        train : rmtl.SessionData
            The training data, of the model's fields and tasks (and, with critics, of their
            dense state's width).
        valid : rmtl.SessionData, optional
            Validation data, scored after every epoch; without it every epoch runs and the
            last weights are kept.
        epochs : int
            The most epochs to run (>= 1; more when ``min_steps`` needs them).
        patience : int or None
            Epochs without a better validation score before training stops (>= 1). None
            turns early stopping off: exactly ``epochs`` epochs run and the last weights are
            kept (a fixed budget, as a matched control needs).
        min_steps : int
            Train for at least this many optimizer steps (>= 0): whole epochs, so the epoch
            limit grows to ``ceil(min_steps / steps per epoch)`` when that is more, and early
            stopping waits until they are done.
        early_stopping : {"logloss", "auc"}
            The validation score: ``"logloss"`` (the mean over tasks of the validation
            logloss, lower is better; the default) or ``"auc"`` (the mean validation AUC,
            the authors' criterion).

        Returns
        -------
        History
            One record per epoch that ran, the kept epoch and, with ``valid``,
            :attr:`History.logloss_change`.

        Raises
        ------
        NonFiniteLossError
            When a loss becomes NaN or infinite, after restoring the best weights so far (or,
            before any, the weights ``fit`` started from).
        TypeError, ValueError
            When a setting is out of range or the data do not fit the model or its critics.

        Notes
        -----
        A mean of AUCs lets a task with few positives decide the epoch: its AUC creeps up on
        noise while the other tasks' AUC and every logloss get worse (benchmarks/RESULTS.md,
        "Early stopping"); the logloss of a rare task is small, so it cannot, hence the
        ``"logloss"`` default.

        ``min_steps`` is meant for training from scratch on small data, where an epoch is a
        few steps; the returned history's epochs show what ran.

        With ``valid``, :attr:`History.logloss_change` gives per task the mean and standard
        error of the per-row change of validation BCE from the weights ``fit`` started with to
        the kept ones (positive: worse), which :func:`rmtl.lab.convergence.check` reads.

        A loss that becomes NaN or infinite stops training at once: the best weights so far
        (or, before any, the weights ``fit`` started from) are restored and
        :class:`NonFiniteLossError` is raised. Ctrl-C stops training between C calls: the
        best weights so far are restored, a warning says so, and the history (with
        ``interrupted``) is returned. The model is left in evaluation mode.
        """
        epochs, min_steps = check("epochs", epochs), check("min_steps", min_steps)
        patience = None if patience is None else check("patience", patience)
        if early_stopping not in EARLY_STOPPING:
            raise ValueError(
                f"early_stopping: expected one of {list(EARLY_STOPPING)}, got {early_stopping!r}"
            )
        return self._fit(train, valid, epochs, patience, min_steps, early_stopping)

    def _fit(
        self,
        train: SessionData,
        valid: Optional[SessionData],
        epochs: int,
        patience: Optional[int],
        min_steps: int,
        early_stopping: str,
    ) -> History:
        """:meth:`fit` with checked settings (RMTL's stages pass their config's); the data are
        checked here."""
        self._check_data(train, "train")
        if valid is not None:
            self._check_data(valid, "valid")
        samples = 1 if self.balancer is None else self.balancer.samples
        steps = -(-len(train) // (self.batch_size * samples))
        hist = History(
            steps_per_epoch=steps,
            early_stopping=None if patience is None or valid is None else early_stopping,
        )
        best, bad = None, 0
        start = self.model.state_dict()
        start_prob = None if valid is None else self.model.predict(valid.sparse, valid.dense)
        epochs = max(epochs, -(-min_steps // steps))
        try:
            for epoch in range(epochs):
                t0 = time.perf_counter()
                with _progress.bar(
                    self.progress, total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False
                ) as bar:
                    loss = self.train_epoch(train, bar)
                rec: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "train_loss": loss,
                    "seconds": time.perf_counter() - t0,
                }
                if self._weight_sums is not None:
                    rec.update(
                        {
                            f"mean_weight_{t}": float(w)
                            for t, w in zip(train.task_names, self._weight_sums)
                        }
                    )
                if valid is not None:
                    rec.update(_valid_record(self.model, valid))
                    score = rec["valid_auc"] if early_stopping == "auc" else -rec["valid_logloss"]
                    if patience is None or score > hist.best_score:
                        hist.best_score, hist.best_epoch, bad = score, epoch + 1, 0
                        best = self.model.state_dict()
                    else:
                        bad += 1
                hist.epochs.append(rec)
                _progress.log_record(self.progress, rec, _log)
                if self.callback is not None:
                    self.callback(rec)
                if (
                    patience is not None
                    and valid is not None
                    and bad >= patience
                    and (epoch + 1) * steps >= min_steps
                ):
                    hist.stopped_early = True
                    break
        except NonFiniteLossError:
            self.model.load_state_dict(start if best is None else best)
            self.model.eval()
            raise
        except KeyboardInterrupt:
            hist.interrupted = True
            warnings.warn(  # at the caller of fit (or of the RMTL stage)
                "training interrupted; the model holds the best weights so far", stacklevel=3
            )
        if best is not None:
            self.model.load_state_dict(best)
        self.model.eval()
        if start_prob is not None:
            hist.logloss_change = _logloss_change(
                valid, start_prob, self.model.predict(valid.sparse, valid.dense)
            )
        return hist


def _valid_record(model: Any, valid: SessionData) -> dict[str, float]:
    """Per-task validation AUC and logloss, and their means over tasks (``valid_auc`` over the
    tasks whose AUC is defined)."""
    res = evaluate(model, valid, warn=False)  # every epoch: a one-class task is left out
    aucs = [r["auc"] for r in res.values()]
    rec = {f"valid_auc_{k}": r["auc"] for k, r in res.items()}
    rec.update({f"valid_logloss_{k}": r["logloss"] for k, r in res.items()})
    rec["valid_auc"] = float(np.nanmean(aucs)) if not np.isnan(aucs).all() else float("nan")
    rec["valid_logloss"] = float(np.mean([r["logloss"] for r in res.values()]))
    return rec


def _logloss_change(
    valid: SessionData, before: np.ndarray, after: np.ndarray
) -> dict[str, tuple[float, float]]:
    """Per task, mean and standard error over rows of BCE(after) - BCE(before) (PyTorch's
    clamp of each log at -100)."""
    d = bce_rows(valid.labels, after) - bce_rows(valid.labels, before)
    n = len(d)
    se = d.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.full(d.shape[1], np.nan)
    return {t: (float(d[:, k].mean()), float(se[k])) for k, t in enumerate(valid.task_names)}
