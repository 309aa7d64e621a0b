"""The state of RMTL's stage 2 (critics, targets, actor copies, step, epoch records and its
checkpoint file), apart from the agent that runs it."""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

import numpy as np

from . import _core, _progress
from ._checkpoint import Checkpoint
from .config import RMTLConfig
from .critic import Critic
from .data import SessionData, row_order
from .models import Backbone, create
from .replay import ReplayBuffer, collect
from .train import NonFiniteLossError, chunks

__all__ = ["CriticStage"]

_log = logging.getLogger(__name__)

_NOISE_STREAM = 0x5444  # keys the TD3 target-action noise apart from other uses of the seed
STATE_FILE = "critics.npz"
REPLAY_FILE = "replay.npz"


class CriticStage:
    """Stage 2 for one actor (the pretrained backbone) and one training set.

    State: ``critics`` and their ``targets``, the ``actor`` and ``actor_target`` copies,
    the global ``step`` and the epoch ``records``. With a checkpoint, the state of the last
    finished epoch is loaded, and every finished epoch is committed as one file
    (``critics.npz``, atomically), so a kill resumes exactly from an epoch boundary. The
    replay buffer is filled (or reloaded) only when training actually runs.
    """

    def __init__(
        self,
        config: RMTLConfig,
        actor: Backbone,
        train: SessionData,
        checkpoint: Optional[Checkpoint] = None,
        progress: bool = True,
    ) -> None:
        self.config, self.train, self.checkpoint, self.progress = (
            config,
            train,
            checkpoint,
            progress,
        )
        self.pretrained = actor
        self.buffer: Any = None
        self.transitions: dict[str, np.ndarray] = {}
        self.records: list[dict[str, Any]] = []
        self.step, self.complete = 0, False
        T = train.num_tasks
        if checkpoint is not None and checkpoint.has(STATE_FILE):
            nets, state = checkpoint.load_nets(
                STATE_FILE, {"critic_config": Critic, "config": create}
            )
            if nets["actor"].config != actor.config:
                raise ValueError(
                    f"checkpoint: {checkpoint.path(STATE_FILE)} holds critics of another actor; "
                    "use a new checkpoint_dir"
                )
            self.critics = [nets[f"critic{k}"] for k in range(T)]
            self.targets = [nets[f"target{k}"] for k in range(T)]
            self.actor, self.actor_target = nets["actor"], nets["actor_target"]
            self.records, self.step, self.complete = (
                state["epochs"],
                state["step"],
                state["complete"],
            )
        else:
            self.critics = [_new_critic(actor, train.critic_num_dense, k, config) for k in range(T)]
            self.targets = [critic.clone() for critic in self.critics]
            self.actor, self.actor_target = actor.clone().eval(), actor.clone().eval()
        c = config
        self.cfg = dict(
            gamma=c.gamma,
            td3=c.target == "td3",
            noise_std=c.target_noise,
            noise_clip=c.target_noise_clip,
            ips=c.ips,
            tau=c.tau,
            soft_update_freq=c.soft_update_freq,
            actor_update=c.actor_update,
            actor_update_freq=c.actor_update_freq,
            init_training_step=c.init_training_step,
            seed=(c.seed * 1_000_003 + _NOISE_STREAM) & (2**64 - 1),
            critic_adam=(c.critic_lr, 0.9, 0.999, 1e-8, 0.0),
            actor_adam=(c.actor_lr, 0.9, 0.999, 1e-8, 0.0),
        )

    @property
    def epochs_done(self) -> int:
        """Finished stage-2 epochs."""
        return len(self.records)

    def summary(self) -> dict[str, Any]:
        """The stage's history: epoch records, global step, whether it finished."""
        return {"epochs": self.records, "step": self.step, "complete": self.complete}

    def fit(self, epochs: int) -> list[dict[str, Any]]:
        """Train up to ``epochs`` epochs in total (continuing after the finished ones).

        Ctrl-C, or a TD loss that becomes NaN or infinite, restores the state of the last
        finished epoch and re-raises (KeyboardInterrupt / NonFiniteLossError); nothing of the
        unfinished epoch is kept or written."""
        if self.complete and self.epochs_done >= epochs:
            return self.records
        buffer = self.open_buffer()
        B = min(self.config.critic_batch_size, len(buffer))
        steps_per_epoch = len(buffer) // B
        for epoch in range(self.epochs_done, epochs):
            saved = self._snapshot()
            try:
                rec = self._epoch(epoch, epochs, B, steps_per_epoch)
            except (KeyboardInterrupt, NonFiniteLossError):
                self._restore(saved)
                raise
            self.records.append(rec)
            self.complete = epoch + 1 == epochs
            self._commit()
            _progress.log_record(self.progress, rec, _log)
        if not self.complete:
            self.complete = True
            self._commit()
        for critic in self.critics:
            critic.eval()
        return self.records

    def _epoch(self, epoch: int, epochs: int, B: int, steps_per_epoch: int) -> dict[str, Any]:
        order = self.epoch_order(epoch)
        T = self.train.num_tasks
        sums, actor_sum, actor_steps = np.zeros(T), 0.0, 0
        with _progress.bar(
            self.progress, total=steps_per_epoch, desc=f"critics {epoch + 1}/{epochs}", leave=False
        ) as bar:
            for first, n in chunks(steps_per_epoch):
                losses, a_sum, a_steps = self.run(order[first * B : (first + n) * B], B)
                if not np.isfinite(losses).all() or not math.isfinite(a_sum):
                    raise NonFiniteLossError(
                        f"critic TD loss became {losses.tolist()} in epoch {epoch + 1}; "
                        "lower critic_lr or check the rewards"
                    )
                sums += losses
                actor_sum, actor_steps = actor_sum + a_sum, actor_steps + a_steps
                bar.update(n)
        rec: dict[str, Any] = {"epoch": epoch + 1, "steps": self.step}
        rec.update(
            {
                f"td_loss_{name}": float(s / steps_per_epoch)
                for name, s in zip(self.train.task_names, sums)
            }
        )
        if actor_steps:
            rec["actor_loss"] = actor_sum / actor_steps
        return rec

    def open_buffer(self) -> Any:
        """The replay buffer: reloaded from the checkpoint, or filled by replaying every
        training session with the behaviour policy; critics go to training mode."""
        c, ckpt = self.config, self.checkpoint
        for critic in self.critics:
            critic.train()
        if self.buffer is not None:
            return self.buffer
        if ckpt is not None and ckpt.has(REPLAY_FILE):
            self.buffer = ckpt.load_replay(REPLAY_FILE, ReplayBuffer.load)
        else:
            self.buffer = ReplayBuffer(c.buffer_capacity, self.train.num_tasks, seed=c.seed)
            collect(
                self.train,
                self.buffer,
                policy=c.behaviour,
                noise=c.behaviour_noise,
                model=self.pretrained if c.behaviour == "actor" else None,
                reward=c.reward,
                seed=c.seed,
            )
            if ckpt is not None:
                ckpt.save_replay(REPLAY_FILE, self.buffer)
        if len(self.buffer) == 0:
            raise ValueError("train: produced no transitions; expected at least one session")
        self.transitions = self.buffer.transitions()
        return self.buffer

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order in which epoch ``epoch`` visits the stored transitions: a permutation
        drawn from (seed, epoch), so a resumed run takes exactly the minibatches of an
        uninterrupted one."""
        return row_order(len(self.buffer), True, self.config.seed * 7919 + 17, epoch)

    def run(self, picks: np.ndarray, B: int) -> tuple[np.ndarray, float, int]:
        """len(picks) // B stage-2 steps on the stored transitions ``picks``, in one C call."""
        t, data = self.transitions, self.train
        take = lambda key: np.ascontiguousarray(t[key][picks])  # noqa: E731
        losses, a_sum, a_steps = _core.td_chunk(
            actor=self.actor._core,
            actor_target=self.actor_target._core,
            critics=[c._core for c in self.critics],
            targets=[c._core for c in self.targets],
            state=take("state"),
            next=take("next_state"),
            action=take("action"),
            reward=take("reward"),
            done=take("done"),
            sparse=data.sparse,
            dense=data.dense,
            labels=data.labels,
            batch_size=B,
            step=self.step,
            extra=data.critic_only,
            **self.cfg,
        )
        self.step += len(picks) // B
        return np.asarray(losses), a_sum, a_steps

    def _nets(self) -> dict[str, Any]:
        nets: dict[str, Any] = {"actor": self.actor, "actor_target": self.actor_target}
        for k, (critic, target) in enumerate(zip(self.critics, self.targets)):
            nets[f"critic{k}"], nets[f"target{k}"] = critic, target
        return nets

    def _snapshot(self) -> tuple[dict[str, tuple[Any, Any]], int]:
        return {
            role: (net.state_dict(), net.optimizer_state()) for role, net in self._nets().items()
        }, self.step

    def _restore(self, saved: tuple[dict[str, tuple[Any, Any]], int]) -> None:
        nets = self._nets()
        for role, (weights, opt) in saved[0].items():
            nets[role].load_state_dict(weights)
            nets[role].load_optimizer_state(opt)
        self.step = saved[1]

    def _commit(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint.save_nets(STATE_FILE, self._nets(), self.summary())


def _new_critic(actor: Backbone, num_dense: int, task: int, c: RMTLConfig) -> Critic:
    """Critic k for the actor's data (its state: ``num_dense`` features, see
    :attr:`rmtl.SessionData.critic_num_dense`), seeded from the agent's seed, embedding from
    the actor."""
    b = actor.config
    critic = Critic(
        b.field_dims,
        num_dense,
        b.embed_dim,
        c.critic_bottom_dims,
        c.critic_tower_dims,
        c.critic_dropout,
        seed=c.seed * 7919 + 101 * (task + 1),
        output_bias=c.critic_output_bias,
    )
    critic.copy_embedding(actor, task)
    return critic.train()
