"""RMTL: pretrain a backbone, learn one critic per task on the session MDP, fine-tune with
critic-weighted BCE; transfer critics to other backbones; checkpoint and resume every stage."""
from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core, _progress
from .critic import Critic
from .data import SessionData, row_order
from .models import Backbone, load, save
from .train import History, Trainer

__all__ = ["RMTL", "RMTLConfig"]

WEIGHTINGS = {"rmtl": 0, "constant": 1, "label": 2, "neg_q": 3}
_NOISE_STREAM = 0x5444  # keys the TD3 target-action noise apart from other uses of the seed


@dataclasses.dataclass(frozen=True)
class RMTLConfig:
    """Every knob of the three stages; see :class:`RMTL` for meanings and sources."""

    gamma: float = 0.9
    tau: float = 0.2
    lam: float = 0.7
    critic_lr: float = 1e-3
    behaviour: str = "uniform"
    behaviour_noise: float = 0.1
    target: str = "td3"
    ips: bool = False
    weighting: str = "rmtl"
    seed: int = 0
    reward: str = "bce"
    critic_bottom_dims: Tuple[int, ...] = (512, 256)
    critic_tower_dims: Tuple[int, ...] = (128, 64)
    critic_dropout: float = 0.2
    critic_output_bias: Optional[float] = 1.0
    critic_epochs: int = 96
    critic_batch_size: int = 2048
    buffer_capacity: int = 500_000
    soft_update_freq: int = 2
    target_noise: float = 0.4
    target_noise_clip: float = 3e-3
    actor_update: bool = False
    actor_lr: float = 1e-3
    actor_update_freq: int = 1
    init_training_step: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-6
    batch_size: int = 2048
    epochs: int = 100
    patience: int = 2

    def to_dict(self) -> Dict[str, Any]:
        """Every field as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


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
    fine-tuning with these critics (transfer). With ``checkpoint_dir`` every stage saves its
    result there and a new agent on the same directory resumes: finished stages are loaded,
    stage 2 continues from its last finished epoch.

    Each parameter below gives its default and where it comes from: *code* = the authors'
    public code, *paper* = the WWW 2023 paper, *rmtl* = this package's choice.

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
    weighting : "rmtl", "constant", "label" or "neg_q"
        Stage-3 loss weights: ``1 - lam Q`` (paper), ablations ``0.5``, ``1 - lam y Q`` and
        ``-Q`` (paper, section 4.4; code comments).
    seed : int
        Batch order, critic initialisation, replay sampling and target noise.
    reward : "bce" or "abs"
        Per-task reward ``y log a + (1-y) log(1-a)`` clipped to [1e-4, 1] (paper, code) or
        ``-|a - y|`` (code).
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
        Stages 1 and 3: Adam 1e-3, weight decay 1e-6, batch 2048, early stopping on mean
        validation AUC with patience 2 (code); at most ``epochs=100`` (rmtl; the code allows
        1000).
    checkpoint_dir : path or None
        Where every stage saves and resumes.
    progress : bool
        tqdm progress bars and per-epoch lines.

    Not reproduced from the code: its TD3-BC agent standardises the categorical codes of
    every state batch before the embedding lookup, which scrambles the features (a bug);
    ``actor_reg`` (0 in its main script).
    """

    def __init__(self, backbone: Backbone, gamma: float = 0.9, tau: float = 0.2, lam: float = 0.7,
                 critic_lr: float = 1e-3, behaviour: str = "uniform", target: str = "td3", ips: bool = False,
                 weighting: str = "rmtl", seed: int = 0, *, checkpoint_dir: Optional["str | os.PathLike[str]"] = None,
                 progress: bool = True, **kwargs: Any) -> None:
        if not isinstance(backbone, Backbone):
            raise TypeError(f"backbone: expected an rmtl backbone (rmtl.models.*), got {type(backbone).__name__}")
        unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(RMTLConfig)})
        if unknown:
            raise TypeError(f"unexpected keyword arguments {unknown}; see help(rmtl.RMTL) for the options")
        self.config = _check(RMTLConfig(gamma=gamma, tau=tau, lam=lam, critic_lr=critic_lr, behaviour=behaviour,
                                        target=target, ips=ips, weighting=weighting, seed=seed, **kwargs))
        self.backbone = backbone
        self.pretrained: Backbone = backbone
        self.critics: List[Critic] = []
        self.history: Dict[str, Any] = {}
        self._stage2: Optional[_Stage2] = None
        self.progress = bool(progress)
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        if self.checkpoint_dir is not None:
            self._open_checkpoints()

    # ------------------------------------------------------------------ stages
    def fit(self, train: SessionData, valid: SessionData) -> "RMTL":
        """Run (or resume) all three stages; the fine-tuned model ends up in ``self.backbone``."""
        self.pretrain(train, valid)
        self.fit_critics(train)
        self.finetune(train, valid)
        return self

    def pretrain(self, train: SessionData, valid: SessionData) -> History:
        """Stage 1: supervised training of the backbone (in place) with early stopping."""
        if self._done("pretrained.npz"):
            self.pretrained = self.backbone = _reload(self._path("pretrained.npz"), self.backbone, into=self.backbone)
            return self._history("pretrain")
        c = self.config
        hist = Trainer(self.backbone, lr=c.lr, weight_decay=c.weight_decay, batch_size=c.batch_size,
                       seed=c.seed, progress=self.progress).fit(train, valid, c.epochs, c.patience)
        self.pretrained = self.backbone
        if not hist.interrupted:
            self._record("pretrain", hist)
            self._save_model(self.pretrained, "pretrained.npz")
        return hist

    def fit_critics(self, train: SessionData, epochs: Optional[int] = None) -> List[Dict[str, float]]:
        """Stage 2: fill the replay buffer from ``train`` and train one critic per task.

        Returns one record per epoch (mean TD loss per task, mean actor loss when the actor
        is updated). Ctrl-C stops after the current chunk; the critics keep what they learned,
        and with a checkpoint directory the next call resumes from the last finished epoch.
        """
        c = self.config
        epochs = c.critic_epochs if epochs is None else int(epochs)
        if epochs < 1:
            raise ValueError(f"epochs: expected >= 1, got {epochs}")
        if self._stage2 is None:
            self._stage2 = _Stage2(self, train)
        state = self._stage2
        if state.complete and state.epochs_done >= epochs:
            return state.records
        buffer = state.open_buffer()
        B = min(c.critic_batch_size, len(buffer))
        steps_per_epoch = len(buffer) // B
        per_chunk, interrupted = 1, False
        try:
            for epoch in range(state.epochs_done, epochs):
                order = state.epoch_order(epoch)
                sums, actor_sum, actor_steps = np.zeros(train.num_tasks), 0.0, 0
                with _progress.bar(self.progress, total=steps_per_epoch, desc=f"critics {epoch + 1}/{epochs}",
                                  leave=False) as bar:
                    done = 0
                    while done < steps_per_epoch:
                        n = min(per_chunk, steps_per_epoch - done)
                        t0 = time.perf_counter()
                        losses, a_sum, a_steps = state.run(order[done * B:(done + n) * B], B)
                        per_step = (time.perf_counter() - t0) / n
                        per_chunk = max(1, min(256, int(0.25 / max(per_step, 1e-6))))
                        sums += losses
                        actor_sum, actor_steps, done = actor_sum + a_sum, actor_steps + a_steps, done + n
                        bar.update(n)
                rec = {"epoch": epoch + 1, "steps": state.step}
                rec.update({f"td_loss_{name}": float(s / steps_per_epoch) for name, s in zip(train.task_names, sums)})
                if actor_steps:
                    rec["actor_loss"] = actor_sum / actor_steps
                state.finish_epoch(rec)
                _progress.log_record(self.progress, rec)
        except KeyboardInterrupt:
            interrupted = True
            warnings.warn("critic training interrupted; the critics hold what they learned so far", stacklevel=2)
        for critic in self.critics:
            critic.eval()
        if not interrupted:
            state.finish()
        return state.records

    def finetune(self, train: SessionData, valid: SessionData, backbone: Optional[Backbone] = None,
                 weighting: Optional[str] = None, lam: Optional[float] = None) -> History:
        """Stage 3: critic-weighted fine-tuning with early stopping.

        Without ``backbone``, a copy of the pretrained model is fine-tuned and becomes
        ``self.backbone``. With ``backbone`` (transfer: a pretrained model of any kind for
        the same data), that model is fine-tuned in place with these critics and
        ``self.backbone`` is left alone. ``weighting`` and ``lam`` override the agent's for
        this call (ablations; a checkpoint per setting).
        Either way Adam starts afresh (its moments from pretraining are dropped), as in the
        authors' code.
        """
        weighting = self.config.weighting if weighting is None else weighting
        lam = self.config.lam if lam is None else float(lam)
        if not lam >= 0:
            raise ValueError(f"lam: expected >= 0, got {lam}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {sorted(WEIGHTINGS)}, got {weighting!r}")
        if weighting != "constant" and not self.critics:
            raise RuntimeError("finetune: the agent has no critics yet; run fit_critics(train) first "
                               "(or fit(train, valid))")
        own = backbone is None
        model = self.pretrained.clone() if own else backbone
        if not isinstance(model, Backbone):
            raise TypeError(f"backbone: expected an rmtl backbone, got {type(model).__name__}")
        setting = weighting if lam == self.config.lam else f"{weighting}-lam{lam:g}"
        name = (f"finetuned-{setting}.npz" if own
                else f"transfer-{model.config.name}-seed{model.config.seed}-{setting}.npz")
        key = name[:-4]
        if self._done(name):
            model = _reload(self._path(name), model, into=None if own else model)
            if own:
                self.backbone = model
            return self._history(key)
        c = self.config
        # a fresh Adam, as the authors' stage 3 builds a new optimizer around the reloaded model
        zeros = np.zeros(model.num_parameters, np.float32)
        model.load_optimizer_state({"adam_m": zeros, "adam_v": zeros, "steps": 0,
                                    "counter": model.optimizer_state()["counter"]})
        weighted = _WeightedBackbone(model, self.critics if weighting != "constant" else None,
                                     WEIGHTINGS[weighting], lam)
        hist = Trainer(weighted, lr=c.lr, weight_decay=c.weight_decay, batch_size=c.batch_size,
                       seed=c.seed + 1, progress=self.progress).fit(train, valid, c.epochs, c.patience)
        for rec, w in zip(hist.epochs, weighted.mean_weights):
            rec.update({f"mean_weight_{t}": v for t, v in zip(train.task_names, w)})
        if own:
            self.backbone = model
        if not hist.interrupted:
            self._record(key, hist)
            self._save_model(model, name)
        return hist

    # ------------------------------------------------------------------ weights
    def loss_weights(self, data: SessionData, prob: Optional[np.ndarray] = None,
                     weighting: Optional[str] = None) -> np.ndarray:
        """The stage-3 weights (n, T) of ``data`` at predictions ``prob`` (default: the
        pretrained model's), for inspection; training computes the same in C."""
        weighting = self.config.weighting if weighting is None else weighting
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {sorted(WEIGHTINGS)}, got {weighting!r}")
        if prob is None:
            prob = self.pretrained.predict(data.sparse, data.dense)
        if weighting == "constant":
            return np.full((len(data), data.num_tasks), 0.5, np.float32)
        q = self.q_values(data, prob)
        lam = np.float32(self.config.lam)
        return {"rmtl": 1 - lam * q, "label": 1 - lam * data.labels * q, "neg_q": -q}[weighting]

    def q_values(self, data: SessionData, action: np.ndarray) -> np.ndarray:
        """Q_k(s, a_k) (n, T) of every row of ``data`` at actions ``action`` (n, T), eval mode."""
        if not self.critics:
            raise RuntimeError("q_values: the agent has no critics yet; run fit_critics(train) first")
        action = np.asarray(action, np.float32)
        if action.shape != (len(data), data.num_tasks):
            raise ValueError(f"action: expected shape ({len(data)}, {data.num_tasks}), got {action.shape}")
        return np.stack([c.predict(data.sparse, data.dense, np.ascontiguousarray(action[:, k]))
                         for k, c in enumerate(self.critics)], 1)

    # ------------------------------------------------------------------ checkpoints
    def _path(self, name: str) -> str:
        return os.path.join(self.checkpoint_dir or "", name)

    def _done(self, name: str) -> bool:
        return self.checkpoint_dir is not None and os.path.exists(self._path(name))

    def _open_checkpoints(self) -> None:
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        path = self._path("agent.json")
        mine = {"config": self.config.to_dict(), "backbone": self.backbone.config.to_dict()}
        mine = json.loads(json.dumps(mine))  # tuples as lists, as they come back from the file
        if os.path.exists(path):
            with open(path) as f:
                theirs = json.load(f)
            if {k: theirs.get(k) for k in mine} != mine:
                raise ValueError(f"checkpoint_dir: {self.checkpoint_dir} holds a run with another configuration; "
                                 "use a new directory or the same settings")
            self.history = theirs.get("history", {})
        else:
            self._write_json("agent.json", mine)

    def _record(self, key: str, hist: Any) -> None:
        self.history[key] = _history_dict(hist)
        if self.checkpoint_dir is not None:
            with open(self._path("agent.json")) as f:
                meta = json.load(f)
            meta["history"] = self.history
            self._write_json("agent.json", meta)

    def _history(self, key: str) -> History:
        h = self.history.get(key, {})
        return History(epochs=h.get("epochs", []), best_epoch=h.get("best_epoch"),
                       best_score=h.get("best_score", float("-inf")))

    def _write_json(self, name: str, obj: Any) -> None:
        tmp = self._path(name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, self._path(name))

    def _save_model(self, model: Any, name: str) -> None:
        """rmtl.save / Critic.save to a temporary name, then an atomic rename."""
        if self.checkpoint_dir is None:
            return
        tmp = self._path(name[:-4] + ".tmp.npz")
        if isinstance(model, Critic):
            model.save(tmp)
        else:
            save(model, tmp)
        os.replace(tmp, self._path(name))

    def __repr__(self) -> str:
        return (f"RMTL(backbone={type(self.backbone).__name__}, critics={len(self.critics)}, "
                f"weighting={self.config.weighting!r}, lam={self.config.lam}, target={self.config.target!r})")


class _Stage2:
    """Stage 2's state: critics, targets, actor copies, the global step and the epoch records,
    saved after every epoch and restored from the checkpoint directory; the replay buffer is
    filled (or reloaded) only when training actually runs."""

    def __init__(self, agent: RMTL, train: SessionData) -> None:
        self.agent, self.train, self.buffer = agent, train, None
        self.transitions: Dict[str, np.ndarray] = {}
        c = agent.config
        meta = agent.history.get("critics", {})
        self.records: List[Dict[str, Any]] = meta.get("epochs", [])
        self.epochs_done, self.step, self.complete = len(self.records), meta.get("step", 0), meta.get("complete", False)
        actor, T = agent.pretrained, train.num_tasks
        if self.epochs_done:
            load = lambda name: Critic.load(agent._path(name))  # noqa: E731
            agent.critics = [load(f"critic{k}.npz") for k in range(T)]
            self.targets = [load(f"critic{k}-target.npz") for k in range(T)]
            self.actor = _reload(agent._path("actor.npz"), actor)
            self.actor_target = _reload(agent._path("actor-target.npz"), actor)
        else:
            agent.critics = [_new_critic(actor, k, c) for k in range(T)]
            self.targets = [critic.clone() for critic in agent.critics]
            self.actor, self.actor_target = actor.clone().eval(), actor.clone().eval()
        self.cfg = (c.gamma, c.target == "td3", c.target_noise, c.target_noise_clip, c.ips, c.tau,
                    c.soft_update_freq, c.actor_update, c.actor_update_freq, c.init_training_step,
                    (c.seed * 1_000_003 + _NOISE_STREAM) & (2**64 - 1))
        self.critic_adam = (c.critic_lr, 0.9, 0.999, 1e-8, 0.0)
        self.actor_adam = (c.actor_lr, 0.9, 0.999, 1e-8, 0.0)

    def open_buffer(self) -> Any:
        """The replay buffer: reloaded from the checkpoint, or filled by replaying every
        training session with the behaviour policy; critics go to training mode."""
        from .env import ReplayBuffer, collect

        agent, c = self.agent, self.agent.config
        for critic in agent.critics:
            critic.train()
        if self.buffer is not None:
            return self.buffer
        if agent._done("replay.npz"):
            self.buffer = ReplayBuffer.load(agent._path("replay.npz"))
        else:
            self.buffer = ReplayBuffer(c.buffer_capacity, self.train.num_tasks, seed=c.seed)
            collect(self.train, self.buffer, policy=c.behaviour, noise=c.behaviour_noise,
                    model=agent.pretrained if c.behaviour == "actor" else None, reward=c.reward, seed=c.seed)
            if agent.checkpoint_dir is not None:
                self.buffer.save(agent._path("replay.npz"))
        if len(self.buffer) == 0:
            raise ValueError("train: produced no transitions; expected at least one session")
        self.transitions = self.buffer.transitions()
        return self.buffer

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order in which epoch ``epoch`` visits the stored transitions: a permutation
        drawn from (seed, epoch), so a resumed run takes exactly the minibatches of an
        uninterrupted one."""
        return row_order(len(self.buffer), True, self.agent.config.seed * 7919 + 17, epoch)

    def run(self, picks: np.ndarray, B: int) -> Tuple[np.ndarray, float, int]:
        """len(picks) // B stage-2 steps on the stored transitions ``picks``, in one C call."""
        t, data = self.transitions, self.train
        take = lambda key: np.ascontiguousarray(t[key][picks])  # noqa: E731
        n_steps = len(picks) // B
        losses, a_sum, a_steps = _core.td_chunk(
            self.actor._core, self.actor_target._core, [c._core for c in self.agent.critics],
            [c._core for c in self.targets], take("state"), take("next_state"), take("action"), take("reward"),
            take("done"), data.sparse, data.dense, data.labels, B, self.step, self.cfg,
            self.critic_adam, self.actor_adam)
        self.step += n_steps
        return np.asarray(losses), a_sum, a_steps

    def finish_epoch(self, rec: Dict[str, Any]) -> None:
        self.records.append(rec)
        self.epochs_done, self.complete = self.epochs_done + 1, False
        agent = self.agent
        for k, (critic, target) in enumerate(zip(agent.critics, self.targets)):
            agent._save_model(critic, f"critic{k}.npz")
            agent._save_model(target, f"critic{k}-target.npz")
        agent._save_model(self.actor, "actor.npz")
        agent._save_model(self.actor_target, "actor-target.npz")
        self._write(complete=False)

    def finish(self) -> None:
        self.complete = True
        self._write(complete=True)

    def _write(self, complete: bool) -> None:
        self.agent._record("critics", {"epochs": self.records, "step": self.step, "complete": complete})


class _WeightedBackbone:
    """A backbone as :class:`rmtl.Trainer` sees it, with stage 3's critic-weighted loss behind
    its chunked training call; everything else (predict, state_dict, modes) is the backbone's."""

    def __init__(self, backbone: Backbone, critics: Optional[Sequence[Critic]], weighting: int, lam: float) -> None:
        self._backbone = backbone
        self.config = backbone.config
        self._core = self
        self._critics = None if critics is None else [c.eval()._core for c in critics]
        self._weighting, self._lam = weighting, float(lam)
        self._sums, self._rows = np.zeros(backbone.config.num_tasks), 0
        self.mean_weights: List[List[float]] = []

    def train_chunk(self, rows: np.ndarray, sparse: np.ndarray, dense: np.ndarray, labels: np.ndarray, B: int,
                    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> float:
        """One C call: for every batch, the backbone's forward, the critics' Q in eval mode at
        its predictions, the weights, the weighted BCE backward and an Adam step."""
        loss, wsum = _core.weighted_chunk(self._backbone._core, self._critics, rows, sparse, dense, labels, B,
                                          self._weighting, self._lam, lr, beta1, beta2, eps, weight_decay)
        self._sums += wsum
        self._rows += len(rows)
        if self._rows >= len(labels):  # an epoch is one pass over the training rows
            self.mean_weights.append([float(s / self._rows) for s in self._sums])
            self._sums[...], self._rows = 0.0, 0
        return loss

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backbone, name)


def _new_critic(actor: Backbone, task: int, c: RMTLConfig) -> Critic:
    """Critic k for the actor's data, seeded from the agent's seed, embedding from the actor."""
    b = actor.config
    critic = Critic(b.field_dims, b.num_dense, b.embed_dim, c.critic_bottom_dims, c.critic_tower_dims,
                    c.critic_dropout, seed=c.seed * 7919 + 101 * (task + 1), output_bias=c.critic_output_bias)
    critic.copy_embedding(actor, task)
    return critic.train()


def _reload(path: str, like: Backbone, into: Optional[Backbone] = None) -> Backbone:
    """A backbone saved with rmtl.save; with ``into``, its weights are copied into that model."""
    model = load(path)
    if model.config != like.config:
        raise ValueError(f"checkpoint: {path} holds a {model.config.name} with another configuration than "
                         f"the backbone given; use a new checkpoint_dir")
    if into is not None:
        into.load_state_dict(model.state_dict())
        into.load_optimizer_state(model.optimizer_state())
        return into.eval()
    return model


def _history_dict(hist: Any) -> Dict[str, Any]:
    if isinstance(hist, History):
        return {"epochs": hist.epochs, "best_epoch": hist.best_epoch, "best_score": hist.best_score}
    return hist


def _check(c: RMTLConfig) -> RMTLConfig:
    choices = {"behaviour": ("uniform", "actor"), "target": ("td3", "ddpg"), "weighting": tuple(WEIGHTINGS),
               "reward": ("bce", "abs")}
    for key, allowed in choices.items():
        if getattr(c, key) not in allowed:
            raise ValueError(f"{key}: expected one of {list(allowed)}, got {getattr(c, key)!r}")
    for key in ("gamma", "tau"):
        if not 0.0 <= getattr(c, key) <= 1.0:
            raise ValueError(f"{key}: expected a value in [0, 1], got {getattr(c, key)}")
    positive = ("critic_lr", "actor_lr", "lr", "critic_epochs", "critic_batch_size", "buffer_capacity",
                "soft_update_freq", "actor_update_freq", "batch_size", "epochs", "patience")
    for key in positive:
        if not getattr(c, key) > 0:
            raise ValueError(f"{key}: expected > 0, got {getattr(c, key)}")
    for key in ("lam", "behaviour_noise", "target_noise", "target_noise_clip", "weight_decay", "init_training_step"):
        if not getattr(c, key) >= 0:
            raise ValueError(f"{key}: expected >= 0, got {getattr(c, key)}")
    return dataclasses.replace(c, critic_bottom_dims=tuple(int(d) for d in c.critic_bottom_dims),
                               critic_tower_dims=tuple(int(d) for d in c.critic_tower_dims))
