"""RMTL: pretrain a backbone, learn one critic per task on the session MDP, fine-tune with
critic-weighted BCE; transfer critics to other backbones; checkpoint and resume every stage."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

import numpy as np

from . import _core
from ._checkpoint import Checkpoint
from ._io import remove_stale_temporaries
from ._stages import CriticStage
from .config import AUTHORS as AUTHORS  # also importable from here, as it always was
from .config import CRITIC_FREE, WEIGHTINGS, RMTLConfig, check
from .critic import Critic
from .data import SessionData
from .models import Backbone, check_compat, create
from .prior import set_output_prior
from .train import History, Trainer

__all__ = ["RMTL", "RMTLConfig", "WEIGHTINGS"]

_REF = RMTLConfig()


class RMTL:
    """The RMTL method (Liu et al., WWW 2023) around any rmtl backbone.

    ``fit(train, valid)`` runs the three stages; each can also run alone:

    1. :meth:`pretrain`: Adam on the mean per-task BCE with early stopping on validation AUC
       (:class:`rmtl.Trainer`).
    2. :meth:`fit_critics`: replay the training sessions into a :class:`rmtl.ReplayBuffer`
       with the behaviour policy, then train one critic per task on TD targets (C loop).
    3. :meth:`finetune`: restart from the pretrained weights and train on
       ``(1/T) sum_k mean_i w_ik BCE(y_ik, p_ik)`` with ``w = 1 - lam Q_k(s, p_k)`` (critics
       in eval mode, not differentiated), early stopping as in stage 1.

    ``finetune(train, valid, backbone=other)`` weights another (pretrained) backbone's
    fine-tuning with these critics (transfer). With ``checkpoint_dir`` every finished stage
    (and every finished stage-2 epoch) is committed there as one file, atomically, and a new
    agent on the same directory resumes: finished stages are loaded, stage 2 continues from
    its last finished epoch. The directory records the configuration and fingerprints of
    the data; using it with other settings or other data raises ValueError. Ctrl-C in any
    stage restores that stage's best weights (stage 2: its last finished epoch) and raises
    KeyboardInterrupt, never continuing into the next stage or saving the unfinished one.

    Each parameter below gives its default and where it comes from: *code* = the authors'
    public code, *paper* = the WWW 2023 paper, *rmtl* = this package's choice. The keywords
    become ``config``, an :class:`rmtl.RMTLConfig` (whose construction checks every
    value); :meth:`from_config` builds an agent from a ready one.

    Parameters
    ----------
    backbone : Backbone
        The multi-task model (trained in place by :meth:`pretrain`).
    gamma : float
        Discount, 0.9 (code; the paper states 0.95).
    tau : float
        Soft-update rate of the target networks, 0.2 (code), every ``soft_update_freq=2``
        critic steps (code).
    lam : float
        lambda of ``w = 1 - lam Q``: 0.7 (paper; the code's examples use 0.5 and 1).
    critic_lr : float
        Critics' Adam learning rate, 1e-3 (code).
    behaviour : "uniform" or "actor"
        Stage-2 behaviour policy: uniform actions in [0, 1]^T (code), or the pretrained
        actor's predictions plus Gaussian noise of std ``behaviour_noise=0.1`` (rmtl).
    target : "td3" or "ddpg"
        TD target. "td3" (code): ``y = r + gamma (1 - done) min(Q'(s', a'), Q(s', a'))`` with
        ``a' = mu'(s') + clip(N(0, target_noise=0.4), -3e-3, 3e-3)`` (code; drawn per row and
        task, the code draws one per batch). "ddpg" (paper): ``y = r + gamma (1 - done)
        Q'(s', mu'(s'))``. Targets are evaluated without dropout (rmtl; the code leaves the
        target critics in training mode).
    ips : bool
        Inverse propensity weights per batch, ``w = y (B+1)/(n_k+1) + (B+1)/(B-n_k)``
        (code, off in its main script).
    weighting : "rmtl", "constant", "label", "neg_q", "continued", "static" or "permuted"
        Stage-3 loss weights: ``1 - lam Q`` (paper), ablations ``0.5``, ``1 - lam y Q`` and
        ``-Q`` (paper, section 4.4; code comments), and the controls (rmtl) of the critic
        effect: ``continued`` (every weight one: stage 3 as more supervised training with the
        same batch order and seed), ``static`` (one fixed weight per task, ``task_weights`` of
        :meth:`finetune`: RMTL's task ratio without per-row information) and ``permuted``
        (RMTL's weights shuffled across each batch's rows: their distribution without their
        rows). :func:`rmtl.experiment` trains the controls exactly as many epochs as RMTL kept.
    seed : int
        Batch order, critic initialisation, replay sampling and target noise.
    reward : "bce", "abs" or "bce_wrapped"
        Per-task reward ``y log a + (1-y) log(1-a)`` clipped to [1e-4, 1] (paper, code),
        ``-|a - y|`` (code), or the BCE at the wrapped action ``0.5 + 0.5 a`` (code: its
        environment maps actions from [-1, 1], while its actor's are in [0, 1]).
    critic_bottom_dims, critic_tower_dims, critic_dropout :
        (512, 256), (128, 64), 0.2 (code). ``critic_output_bias=1.0`` (rmtl; see
        :class:`rmtl.Critic`: with PyTorch's default about half of all critics never learn).
        The critics' ``embed_dim`` is the backbone's; their embedding starts as its copy (code).
    critic_epochs : int
        Stage-2 passes; each takes ``len(buffer) // critic_batch_size`` steps over a fresh
        permutation of the stored transitions (rmtl: reproducible and exactly resumable; the
        code draws random minibatches) (code: 96 passes).
    critic_batch_size, buffer_capacity :
        2048 (code) and 500,000 transitions (code).
    actor_update : bool
        Apply the paper's actor loss ``-mean_i sum_k Q_k(s_i, mu_k(s_i))`` to the actor
        (paper). Off by default: the code computes it but never steps the actor. The actor
        only moves the target actions; stage 3 restarts from the pretrained weights.
        ``actor_lr=1e-3``, ``actor_update_freq=1`` (code), after ``init_training_step=1000``
        steps (code).
    lr, weight_decay, batch_size, epochs, patience :
        Stages 1 and 3: Adam 1e-3, weight decay 1e-6, batch 2048, early stopping with patience
        2 (code); at most ``epochs=100`` (rmtl; the code allows 1000).
    early_stopping : "logloss" or "auc"
        The validation score early stopping follows in stages 1 and 3: the mean over tasks of
        the logloss (rmtl, default) or of the AUC (code). A mean of AUCs lets a rare task
        decide: its AUC drifts up on a few dozen validation positives while the other tasks'
        AUC and every logloss get worse (see :meth:`rmtl.Trainer.fit`).
    finetune_epochs : int or None
        Stage 3's most epochs (None: ``epochs``), with early stopping.
    min_steps : int
        Stage 1 trains for at least this many Adam steps, adding epochs when needed (rmtl, 0 =
        off as in the code; see :meth:`rmtl.Trainer.fit`). With few rows an epoch is a few
        steps, and a model from scratch can stop early before it left its initial plateau.
        Stage 3 starts from a trained model and never gets a floor.
    init_output_bias : None or "prior"
        ``"prior"`` (rmtl, a deviation from the authors; None in their setting) starts every
        task's output layer bias at the logit of its training label rate before stage 1
        (ESMM's CVR tower at the logit of purchases per click), so the model starts
        calibrated instead of at p = 0.5 (:func:`rmtl.prior.set_output_prior`).
    batch_order : "shuffled" or "time"
        Stages 1 and 3 visit the training rows in a fresh seeded order every epoch (rmtl),
        or in time order every epoch (code: its data loaders do not shuffle).
    stage3_critic_mode : "eval" or "train"
        The critics' mode when stage 3 computes ``Q``: without dropout (paper) or with it
        (code: it never switches them to evaluation mode).
    compat : None or "authors"
        ``"authors"`` sets every switch above to the code's behaviour, unless given
        explicitly: ``batch_order="time"``, ``stage3_critic_mode="train"``,
        ``reward="bce_wrapped"``, ``critic_output_bias=None`` (PyTorch's default); and the
        backbone (and any transfer target of :meth:`finetune`) must be the authors' module:
        every backbone but ``"ple_paper"`` (ValueError; the authors' PLE is ``"ple"``).
    checkpoint_dir : path or None
        Where every stage saves and resumes.
    progress : bool
        tqdm progress bars; per-epoch lines go to the ``rmtl`` loggers at INFO (at DEBUG
        without progress), shown once logging is configured, e.g.
        ``logging.basicConfig(level=logging.INFO)``.
    on_epoch : callable or None
        ``on_epoch(stage, record)`` after every epoch of stages 1 and 3 (``stage``:
        ``pretrain`` or ``finetuned-<weighting>``; ``record``: the :class:`rmtl.History`
        entry with the validation metrics), e.g. to report to Ray Tune (:mod:`rmtl.lab.tune`).
    **kwargs
        The other fields of :class:`rmtl.RMTLConfig` (``critic_epochs``, ``lr``, ...).

    Attributes
    ----------
    config : RMTLConfig
        The checked settings.
    backbone : Backbone
        The current model: the pretrained one after stage 1, the fine-tuned one after 3.
    pretrained : Backbone
        The stage-1 model (stage 3 fine-tunes a copy).
    critics : list of Critic
        One critic per task after stage 2.
    history : dict
        Per-stage training histories (:class:`rmtl.History`) and the stage-2 summary.

    See Also
    --------
    RMTLConfig : the settings, checked once.
    rmtl.experiment : every backbone with and without RMTL over several seeds.

    Notes
    -----
    The method is that of the paper, "Multi-Task Recommendations with Reinforcement
    Learning" (Liu et al., WWW 2023, https://dl.acm.org/doi/10.1145/3543507.3583467); the
    defaults follow the authors' code (https://github.com/Applied-Machine-Learning-Lab/RMTL).
    Not reproduced from the code: its TD3-BC agent standardises the categorical codes of
    every state batch before the embedding lookup, which scrambles the features (a bug);
    ``actor_reg`` (0 in its main script).

    Examples
    --------
    >>> import rmtl
    >>> train, valid, test = rmtl.datasets.synthetic(n_users=300).split()
    >>> model = rmtl.models.create("esmm", train.field_dims, train.num_dense, train.num_tasks,
    ...                            embed_dim=8, bottom_dims=(16,), tower_dims=(8,))
    >>> agent = rmtl.RMTL(model, critic_epochs=1, epochs=2, progress=False).fit(train, valid)
    >>> sorted(rmtl.evaluate(agent.backbone, test))
    ['click', 'pay']
    """

    def __init__(
        self,
        backbone: Backbone,
        gamma: float = _REF.gamma,
        tau: float = _REF.tau,
        lam: float = _REF.lam,
        critic_lr: float = _REF.critic_lr,
        behaviour: str = _REF.behaviour,
        target: str = _REF.target,
        ips: bool = _REF.ips,
        weighting: str = _REF.weighting,
        seed: int = _REF.seed,
        *,
        compat: Optional[str] = None,
        checkpoint_dir: Optional[str | os.PathLike[str]] = None,
        progress: bool = True,
        on_epoch: Optional[Callable[[str, dict[str, Any]], None]] = None,
        **kwargs: Any,
    ) -> None:
        config = RMTLConfig.from_kwargs(
            {
                "gamma": gamma,
                "tau": tau,
                "lam": lam,
                "critic_lr": critic_lr,
                "behaviour": behaviour,
                "target": target,
                "ips": ips,
                "weighting": weighting,
                "seed": seed,
                **kwargs,
            },
            compat,
        )
        self._setup(backbone, config, compat, checkpoint_dir, progress, on_epoch)

    @classmethod
    def from_config(
        cls,
        backbone: Backbone,
        config: RMTLConfig,
        *,
        compat: Optional[str] = None,
        checkpoint_dir: Optional[str | os.PathLike[str]] = None,
        progress: bool = True,
        on_epoch: Optional[Callable[[str, dict[str, Any]], None]] = None,
    ) -> RMTL:
        """An agent with a ready :class:`rmtl.RMTLConfig` (its construction checked every
        value, so nothing is checked again).

        Parameters
        ----------
        backbone : Backbone
            The multi-task model, as for :class:`RMTL`.
        config : RMTLConfig
            The settings.
        compat : None or "authors"
            Only restricts the backbones: the authors' switches must already be in
            ``config`` (``RMTLConfig.from_kwargs(kwargs, compat="authors")`` puts them there).
        checkpoint_dir, progress, on_epoch :
            As for :class:`RMTL`.

        Returns
        -------
        RMTL
            The agent, no stage run yet.

        Raises
        ------
        TypeError
            When ``config`` is not an :class:`rmtl.RMTLConfig` or ``backbone`` is not an rmtl
            backbone.
        ValueError
            When ``compat`` is neither None nor ``"authors"``, when ``compat="authors"`` and
            the backbone is not the authors' module (:func:`rmtl.models.check_compat`), or
            when ``checkpoint_dir`` holds a run with another configuration.
        """
        if not isinstance(config, RMTLConfig):
            raise TypeError(f"config: expected an rmtl.RMTLConfig, got {type(config).__name__}")
        agent = cls.__new__(cls)
        agent._setup(backbone, config, compat, checkpoint_dir, progress, on_epoch)
        return agent

    def _setup(
        self,
        backbone: Backbone,
        config: RMTLConfig,
        compat: Optional[str],
        checkpoint_dir: Optional[str | os.PathLike[str]],
        progress: bool,
        on_epoch: Optional[Callable[[str, dict[str, Any]], None]],
    ) -> None:
        check_compat(_backbone(backbone).config.name, compat)
        self.config, self.compat = config, compat
        self.backbone = backbone
        self.pretrained: Backbone = backbone
        self.critics: list[Critic] = []
        self.history: dict[str, Any] = {}
        self._stage2: Optional[CriticStage] = None
        self.progress, self.on_epoch = bool(progress), on_epoch
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        self._checkpoint = (
            None
            if checkpoint_dir is None
            else Checkpoint(
                checkpoint_dir,
                {"config": config.to_dict(), "backbone": backbone.config.to_dict()},
            )
        )

    # ------------------------------------------------------------------ stages
    def fit(self, train: SessionData, valid: SessionData) -> RMTL:
        """Run (or resume) all three stages; the fine-tuned model ends up in ``self.backbone``.

        With a checkpoint directory, the temporary files kills left there are removed once
        the stages have finished.

        Parameters
        ----------
        train : SessionData
            Training sessions (stages 1 to 3).
        valid : SessionData
            Validation sessions for early stopping (stages 1 and 3).

        Returns
        -------
        RMTL
            This agent, so that ``rmtl.RMTL(model).fit(train, valid)`` chains.
        """
        started = time.time()
        self.pretrain(train, valid)
        self.fit_critics(train)
        self.finetune(train, valid)
        if self.checkpoint_dir is not None:
            remove_stale_temporaries(self.checkpoint_dir, started, recursive=False)
        return self

    def pretrain(self, train: SessionData, valid: SessionData) -> History:
        """Stage 1: supervised training of the backbone (in place) with early stopping.

        Ctrl-C restores the best weights so far and raises KeyboardInterrupt; nothing is
        saved, so a resumed run (a new agent and backbone on the checkpoint directory)
        repeats the whole stage.

        Parameters
        ----------
        train : SessionData
            Training sessions.
        valid : SessionData
            Validation sessions for early stopping.

        Returns
        -------
        History
            One record per epoch with the training loss and the validation metrics.

        Raises
        ------
        ValueError
            With ``checkpoint_dir``: when ``train`` or ``valid`` differ from the data the
            directory recorded, or its stage file ``pretrained.npz`` holds a backbone with
            another configuration than this agent's backbone.
        """
        name = "pretrained.npz"
        self._check_data(train=train, valid=valid)
        if self._done(name):
            loaded, hist = self._checkpoint.load_net(name, create)
            _copy_into(self.backbone, loaded, self._checkpoint.path(name))
            self.pretrained = self.backbone
            return self._keep("pretrain", hist)
        c = self.config
        if c.init_output_bias == "prior":
            set_output_prior(self.backbone, train.labels)
        trainer = Trainer._from_config(
            self.backbone,
            c,
            c.seed,
            self.progress,
            self._epoch_callback("pretrain"),
            balancer=c.make_balancer(train.num_tasks, c.seed),
        )
        hist = trainer._fit(train, valid, c.epochs, c.patience, c.min_steps, c.early_stopping)
        self.pretrained = self.backbone
        return self._finish("pretrain", name, self.pretrained, hist)

    def fit_critics(
        self, train: SessionData, epochs: Optional[int] = None
    ) -> list[dict[str, float]]:
        """Stage 2: fill the replay buffer from ``train`` and train one critic per task.

        With a checkpoint directory every finished epoch is committed (one file, atomically)
        and the next call resumes from the last one. Ctrl-C (or a non-finite TD loss)
        restores the state of the last finished epoch and raises KeyboardInterrupt (or
        :class:`rmtl.NonFiniteLossError`).

        Parameters
        ----------
        train : SessionData
            The sessions replayed with the behaviour policy.
        epochs : int, optional
            Passes over the replay buffer (default: the config's ``critic_epochs``).

        Returns
        -------
        list of dict
            One record per epoch: the mean TD loss per task, and the mean actor loss when
            the actor is updated.
        """
        epochs = self.config.critic_epochs if epochs is None else check("epochs", epochs)
        self._check_data(train=train)
        if self._stage2 is None:
            self._stage2 = CriticStage(
                self.config, self.pretrained, train, self._checkpoint, self.progress
            )
        self.critics = self._stage2.critics
        try:
            return self._stage2.fit(epochs)
        finally:
            self.history["critics"] = self._stage2.summary()

    def finetune(
        self,
        train: SessionData,
        valid: SessionData,
        backbone: Optional[Backbone] = None,
        weighting: Optional[str] = None,
        lam: Optional[float] = None,
        *,
        epochs: Optional[int] = None,
        task_weights: Optional[Sequence[float]] = None,
        balancer: Optional[str] = None,
    ) -> History:
        """Stage 3: critic-weighted fine-tuning.

        Parameters
        ----------
        train : SessionData
            Training sessions.
        valid : SessionData
            Validation sessions for early stopping.
        backbone : Backbone, optional
            Without it, a copy of the pretrained model is fine-tuned and becomes
            ``self.backbone``. With it (transfer: a pretrained model of any kind for the same
            data), that model is fine-tuned in place with these critics and
            ``self.backbone`` is left alone.
        weighting : str, optional
            Overrides the agent's weighting for this call (ablations and controls; a
            checkpoint per setting).
        lam : float, optional
            Overrides the agent's ``lam`` for this call.
        epochs : int, optional
            Train exactly this many epochs and keep the last weights (a fixed budget).
        task_weights : sequence of float, optional
            One weight per task, for ``weighting="static"`` (and only then).
        balancer : str, optional
            A name of :func:`rmtl.balancers.names` (with its defaults) that overrides the
            config's ``balancer`` for this call: the task losses, critic-weighted or not, are
            then balanced at every step (``weighting="continued"`` with a balancer is the
            balancer's stage-3 control).

        Returns
        -------
        History
            One record per epoch with the training loss and the validation metrics.

        Raises
        ------
        RuntimeError
            When the weighting uses critics (any but ``constant``, ``continued`` and
            ``static``) and the agent has none yet (run :meth:`fit_critics` first).
        TypeError
            When ``backbone`` is given but is not an rmtl backbone, or ``lam`` or ``epochs``
            is not a number (an integer for ``epochs``).
        ValueError
            When ``weighting`` is not one of :data:`WEIGHTINGS`; ``lam`` is negative or not
            finite; ``epochs`` is below 1; ``balancer`` is no balancer's name;
            ``task_weights`` is None with ``weighting="static"`` or given with another
            weighting; ``compat="authors"`` and the backbone is not the authors' module; or,
            with ``checkpoint_dir``, ``train`` or ``valid`` differ from the data the
            directory recorded, or the stage file of this setting holds a backbone with
            another configuration than the one fine-tuned.

        Notes
        -----
        The budget: by default at most ``finetune_epochs`` epochs (``epochs`` when None) with
        early stopping on ``early_stopping`` and ``patience``; ``min_steps`` does not apply
        (the model is already trained). With ``epochs``, exactly that many epochs run and the
        last weights are kept: a fixed budget, as the matched controls of
        :func:`rmtl.experiment` use to train as many steps as RMTL kept.
        Either way Adam starts afresh (its moments from pretraining are dropped), as in the
        authors' code. Ctrl-C restores the best weights so far and raises KeyboardInterrupt
        without saving the stage.
        """
        # the overrides are checked here, the agent's own values were when its config was built
        weighting = self.config.weighting if weighting is None else _weighting(weighting)
        lam = self.config.lam if lam is None else check("lam", lam)
        fixed = None if epochs is None else check("epochs", epochs)
        c = self.config
        if balancer is not None and balancer != c.balancer:
            c = c.replace(balancer=balancer, balancer_args={})
        if weighting not in CRITIC_FREE and not self.critics:
            raise RuntimeError(
                "finetune: the agent has no critics yet; run fit_critics(train) first "
                "(or fit(train, valid))"
            )
        if (weighting == "static") != (task_weights is not None):
            raise ValueError(
                f"task_weights: expected one weight per task with weighting='static' and None "
                f"otherwise; got {task_weights!r} with weighting={weighting!r}"
            )
        own = backbone is None
        model = self.pretrained.clone() if own else backbone
        if not isinstance(model, Backbone):
            raise TypeError(f"backbone: expected an rmtl backbone, got {type(model).__name__}")
        check_compat(model.config.name, self.compat)
        self._check_data(train=train, valid=valid)
        setting = weighting if lam == self.config.lam else f"{weighting}-lam{lam:g}"
        if task_weights is not None:
            setting += "-w" + "_".join(f"{float(w):.6g}" for w in task_weights)
        if fixed is not None:
            setting += f"-epochs{fixed}"
        if c.balancer is not None and c.balancer != self.config.balancer:
            setting += f"-{c.balancer}"
        name = (
            f"finetuned-{setting}.npz"
            if own
            else f"transfer-{model.config.name}-seed{model.config.seed}-{setting}.npz"
        )
        key = name[:-4]
        if self._done(name):
            loaded, hist = self._checkpoint.load_net(name, create)
            _copy_into(model, loaded, self._checkpoint.path(name))
            if own:
                self.backbone = model
            return self._keep(key, hist)
        # a fresh Adam, as the authors' stage 3 builds a new optimizer around the reloaded model
        zeros = np.zeros(model.num_parameters, np.float32)
        model.load_optimizer_state(
            {
                "adam_m": zeros,
                "adam_v": zeros,
                "steps": 0,
                "counter": model.optimizer_state()["counter"],
            }
        )
        critics = None if weighting in CRITIC_FREE else self.critics
        for critic in (
            critics or ()
        ):  # the mode Q is computed in: eval (rmtl) or with dropout (authors)
            critic.train(c.stage3_critic_mode == "train")
        trainer = Trainer._from_config(
            model,
            c,
            c.seed + 1,
            self.progress,
            self._epoch_callback(key),
            critics=critics,
            weighting=None if weighting == "continued" else weighting,
            lam=lam,
            task_weights=task_weights,
            balancer=c.make_balancer(train.num_tasks, c.seed + 1),
        )
        most = c.epochs if c.finetune_epochs is None else c.finetune_epochs
        hist = trainer._fit(
            train,
            valid,
            most if fixed is None else fixed,
            None if fixed is not None else c.patience,
            0,
            c.early_stopping,
        )
        for critic in self.critics:
            critic.eval()
        if own:
            self.backbone = model
        return self._finish(key, name, model, hist)

    # ------------------------------------------------------------------ weights
    def loss_weights(
        self,
        data: SessionData,
        prob: Optional[np.ndarray] = None,
        weighting: Optional[str] = None,
        task_weights: Optional[Sequence[float]] = None,
    ) -> np.ndarray:
        """The stage-3 loss weights of ``data``, for inspection, computed by the same C
        function training uses.

        Parameters
        ----------
        data : SessionData
            The rows to weight.
        prob : array (n, T), optional
            The predictions the critics score (default: the pretrained model's).
        weighting : str, optional
            Default: the agent's. ``continued``: every weight one; ``static`` needs
            ``task_weights``; ``permuted``: RMTL's weights, which training shuffles across
            each batch's rows.
        task_weights : sequence of float, optional
            One weight per task for ``static``.

        Returns
        -------
        ndarray (n, T) float32
            The weight of every row and task.

        Raises
        ------
        RuntimeError
            When the weighting uses critics (any but ``constant``, ``continued`` and
            ``static``) and the agent has none yet (run :meth:`fit_critics` first).
        ValueError
            When ``weighting`` is not one of :data:`WEIGHTINGS`; the weighting uses critics
            and ``prob`` is given without the shape ``(len(data), data.num_tasks)``; or
            ``task_weights`` is None with ``static``, given with another weighting, not one
            weight per task, or holds a negative or non-finite weight.
        """
        weighting = self.config.weighting if weighting is None else _weighting(weighting)
        if weighting == "continued":
            return np.ones((len(data), data.num_tasks), np.float32)
        q = None
        if weighting not in CRITIC_FREE:
            q = self.q_values(
                data, self.pretrained.predict(data.sparse, data.dense) if prob is None else prob
            )
        return _core.loss_weights(
            q,
            data.labels,
            _core.enums["weighting"][weighting],
            lam=self.config.lam,
            task_weights=None if task_weights is None else np.asarray(task_weights, np.float32),
        )

    def q_values(self, data: SessionData, action: np.ndarray) -> np.ndarray:
        """The critics' values ``Q_k(s, a_k)`` of every row of ``data`` (eval mode).

        Parameters
        ----------
        data : SessionData
            The states (rows).
        action : array (n, T)
            One action (a predicted probability) per row and task.

        Returns
        -------
        ndarray (n, T) float32
            ``Q_k`` of every row and task (at most 0).

        Raises
        ------
        RuntimeError
            When the agent has no critics yet (run :meth:`fit_critics` first).
        ValueError
            When ``action`` does not have the shape ``(len(data), data.num_tasks)``.
        """
        if not self.critics:
            raise RuntimeError(
                "q_values: the agent has no critics yet; run fit_critics(train) first"
            )
        action = np.asarray(action, np.float32)
        if action.shape != (len(data), data.num_tasks):
            raise ValueError(
                f"action: expected shape ({len(data)}, {data.num_tasks}), got {action.shape}"
            )
        state = data.critic_dense()
        return np.stack(
            [
                c.predict(data.sparse, state, np.ascontiguousarray(action[:, k]))
                for k, c in enumerate(self.critics)
            ],
            1,
        )

    def _epoch_callback(self, stage: str) -> Optional[Callable[[dict[str, Any]], None]]:
        return None if self.on_epoch is None else functools.partial(self.on_epoch, stage)

    # ------------------------------------------------------------------ checkpoints
    def _check_data(self, **parts: SessionData) -> None:
        if self._checkpoint is not None:
            self._checkpoint.check_data(**parts)

    def _done(self, name: str) -> bool:
        return self._checkpoint is not None and self._checkpoint.has(name)

    def _keep(self, key: str, hist: dict[str, Any]) -> History:
        self.history[key] = hist
        return History.from_dict(hist)

    def _finish(self, key: str, name: str, model: Backbone, hist: History) -> History:
        """Record a stage that ran to its end and commit it; an interrupted one raises."""
        if hist.interrupted:
            raise KeyboardInterrupt(
                f"RMTL stage {key!r} interrupted; the model holds its best weights so far"
            )
        self.history[key] = hist.to_dict()
        if self._checkpoint is not None:
            self._checkpoint.save_net(name, model, self.history[key])
        return hist

    def __repr__(self) -> str:
        return (
            f"RMTL(backbone={type(self.backbone).__name__}, critics={len(self.critics)}, "
            f"weighting={self.config.weighting!r}, lam={self.config.lam}, "
            f"target={self.config.target!r})"
        )


def _weighting(weighting: Any) -> str:
    """``weighting`` if it is one of :data:`WEIGHTINGS`, else ValueError."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: expected one of {sorted(WEIGHTINGS)}, got {weighting!r}")
    return weighting


def _backbone(backbone: Any) -> Backbone:
    """``backbone`` if it is an rmtl backbone, else TypeError."""
    if not isinstance(backbone, Backbone):
        raise TypeError(
            f"backbone: expected an rmtl backbone (rmtl.models.*), got {type(backbone).__name__}"
        )
    return backbone


def _copy_into(model: Backbone, loaded: Backbone, path: str) -> None:
    """Weights and optimizer state of a reloaded checkpoint into ``model`` (evaluation mode)."""
    if loaded.config != model.config:
        raise ValueError(
            f"checkpoint: {path} holds a {loaded.config.name} with another configuration than "
            "the backbone given; use a new checkpoint_dir"
        )
    model.load_state_dict(loaded.state_dict())
    model.load_optimizer_state(loaded.optimizer_state())
    model.eval()
