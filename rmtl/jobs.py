"""The experiment as a graph of jobs: per (seed, backbone) stage 1, then stage 2, then one
job per stage-3 variant; a transfer is a stage-3 job on the target's baseline with the
source's critics.

A job is a small picklable description (:class:`Job`); :func:`run` executes it anywhere
(this process, a worker process, a Ray task) from the data and its inputs' outputs and
returns a :class:`JobOutput`: the networks it produced as the bytes of their ``.npz`` files,
its test-set records and the agent's history entries. Every job draws its randomness from
its own seed, so the order and place of execution never change a number.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _threads, convergence
from .agent import CRITIC_FREE, RMTL
from .critic import Critic
from .data import SessionData
from .metrics import evaluate
from .models import Backbone, create, load, save

__all__ = ["Job", "JobOutput", "Settings", "graph", "run", "needs_critics", "load_critics", "agent_view"]

METRICS = ("auc", "logloss", "s_logloss")
BASELINE = "baseline"
CONTROL = "continued"  # stage 3 with every weight one: the control for extra training
Splits = Tuple[SessionData, SessionData, SessionData]


def needs_critics(weighting: Optional[str]) -> bool:
    """Whether a stage-3 weighting reads the critics (``constant`` and ``continued`` do not)."""
    return weighting not in CRITIC_FREE


@dataclasses.dataclass(frozen=True)
class Job:
    """One unit of work.

    ``kind``: ``pretrain`` (stage 1 of ``model``), ``critics`` (stage 2 on its pretrained
    weights) or ``finetune`` (stage 3 of ``model``'s pretrained weights with ``weighting``,
    None for the agent's own, weighted by the critics of ``critics_of``: ``model`` itself,
    another backbone for a transfer, None when the weighting reads no critics).
    """

    kind: str
    model: str
    seed: int
    weighting: Optional[str] = None
    critics_of: Optional[str] = None

    @property
    def transfer(self) -> bool:
        """Whether the critics come from another backbone."""
        return self.critics_of not in (None, self.model)

    @property
    def key(self) -> str:
        """A unique name, also the job's checkpoint subdirectory: ``esmm-seed0/critics``."""
        stage = {"pretrain": "pretrain", "critics": "critics"}.get(self.kind)
        if stage is None:
            stage = f"transfer-{self.critics_of}" if self.transfer else f"finetune-{self.weighting}"
        return f"{self.model}-seed{self.seed}/{stage}"

    @property
    def variant(self) -> str:
        """The ``variant`` of its records."""
        if self.kind == "pretrain":
            return BASELINE
        return f"rmtl[critics of {self.critics_of}]" if self.transfer else str(self.weighting)

    @property
    def deps(self) -> Tuple["Job", ...]:
        """The jobs whose outputs this one reads, in the order :func:`run` expects them."""
        if self.kind == "pretrain":
            return ()
        base = (Job("pretrain", self.model, self.seed),)
        if self.kind == "critics" or self.critics_of is None:
            return base
        return base + (Job("critics", self.critics_of, self.seed),)


@dataclasses.dataclass
class JobOutput:
    """What a job hands on: ``networks`` (``pretrained``, ``finetuned`` or ``critic<k>`` ->
    the bytes of the file :func:`rmtl.save` / :meth:`rmtl.Critic.save` writes), ``records``
    (test metrics per task), ``history`` (the agent's history entries) and ``seconds`` (the
    job's wall time where it ran)."""

    networks: Dict[str, bytes]
    records: List[Dict[str, Any]]
    history: Dict[str, Any]
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every job of one experiment shares: model and agent keyword arguments, the
    checkpoint root (every job checkpoints in ``<root>/<job.key>``), progress bars and the
    threads each job runs with (None: as the process is set)."""

    backbone_kwargs: Mapping[str, Any]
    rmtl_kwargs: Mapping[str, Any]
    checkpoint_dir: Optional[str] = None
    progress: bool = False
    threads: Optional[int] = None


def graph(backbones: Sequence[str], rmtl_backbones: Sequence[str], seeds: Sequence[int],
          weightings: Sequence[str], transfer: Sequence[Tuple[str, str]]) -> List[Job]:
    """Every job of an experiment, in the order a serial run takes them (and its records
    are listed): per seed, each backbone's stages, then the transfers."""
    jobs = []
    for seed in seeds:
        for name in backbones:
            jobs.append(Job("pretrain", name, seed))
            if name not in rmtl_backbones:
                continue
            if any(needs_critics(w) for w in weightings) or any(src == name for src, _ in transfer):
                jobs.append(Job("critics", name, seed))
            jobs += [Job("finetune", name, seed, w, name if needs_critics(w) else None) for w in weightings]
        jobs += [Job("finetune", dst, seed, None, src) for src, dst in transfer]
    return jobs


def run(job: Job, settings: Settings, data: Splits, inputs: Sequence[JobOutput]) -> JobOutput:
    """Execute ``job`` on ``data`` = (train, valid, test) given the outputs of ``job.deps``."""
    t0 = time.perf_counter()
    with _threads.limit(settings.threads):
        out = _RUNNERS[job.kind](job, settings, data, inputs)
    out.seconds = time.perf_counter() - t0
    return out


def _pretrain(job: Job, s: Settings, data: Splits, inputs: Sequence[JobOutput]) -> JobOutput:
    train, valid, test = data
    model = create(job.model, train.field_dims, train.num_dense, train.num_tasks, seed=job.seed,
                   **s.backbone_kwargs)
    agent = _agent(job, s, model)
    hist = agent.pretrain(train, valid)
    _finished(hist.interrupted)
    return JobOutput({"pretrained": _dump(save, agent.pretrained)}, _records(job, agent.pretrained, hist, data),
                     agent.history)


def _critics(job: Job, s: Settings, data: Splits, inputs: Sequence[JobOutput]) -> JobOutput:
    agent = _agent(job, s, _restore(load, inputs[0].networks["pretrained"]))
    _finished(len(agent.fit_critics(data[0])) < agent.config.critic_epochs)
    return JobOutput({f"critic{k}": _dump(Critic.save, c) for k, c in enumerate(agent.critics)}, [],
                     agent.history)


def _finetune(job: Job, s: Settings, data: Splits, inputs: Sequence[JobOutput]) -> JobOutput:
    train, valid, test = data
    agent = _agent(job, s, _restore(load, inputs[0].networks["pretrained"]))
    if len(inputs) > 1:
        agent.critics = load_critics(inputs[1])
    hist = agent.finetune(train, valid, weighting=job.weighting)
    _finished(hist.interrupted)
    return JobOutput({"finetuned": _dump(save, agent.backbone)}, _records(job, agent.backbone, hist, data),
                     agent.history)


_RUNNERS: Dict[str, Callable[[Job, Settings, Splits, Sequence[JobOutput]], JobOutput]] = {
    "pretrain": _pretrain, "critics": _critics, "finetune": _finetune}


def load_critics(output: JobOutput) -> List[Critic]:
    """The critics a stage-2 job produced, in task order."""
    return [_restore(Critic.load, output.networks[f"critic{k}"]) for k in range(len(output.networks))]


def agent_view(model: str, seed: int, settings: Settings, outputs: Mapping[Job, JobOutput],
               jobs: Sequence[Job]) -> RMTL:
    """An agent holding what the jobs of (``model``, ``seed``) produced: pretrained weights,
    critics, the last own variant's fine-tuned model and the merged history."""
    own = [j for j in jobs if j.model == model and j.seed == seed and not j.transfer]
    pretrained = _restore(load, outputs[own[0]].networks["pretrained"])
    agent = RMTL(pretrained, seed=seed, progress=False, **settings.rmtl_kwargs)
    for job in own:
        out = outputs[job]
        agent.history.update(out.history)
        if job.kind == "critics":
            agent.critics = load_critics(out)
        elif job.kind == "finetune":
            agent.backbone = _restore(load, out.networks["finetuned"])
    return agent


def _agent(job: Job, s: Settings, backbone: Backbone) -> RMTL:
    ckpt = None if s.checkpoint_dir is None else os.path.join(s.checkpoint_dir, job.key)
    return RMTL(backbone, seed=job.seed, checkpoint_dir=ckpt, progress=s.progress, **s.rmtl_kwargs)


def _finished(interrupted: bool) -> None:
    """A stage stopped by Ctrl-C stops the experiment (the stage's checkpoint keeps its progress)."""
    if interrupted:
        raise KeyboardInterrupt


def _records(job: Job, model: Backbone, hist: Any, data: Splits) -> List[Dict[str, Any]]:
    """Test metrics per task, with the convergence checks the training failed on ``valid``."""
    flags = convergence.check(hist, model, data[1])
    return [{"model": job.model, "variant": job.variant, "seed": job.seed, "task": task,
             **{m: res[m] for m in METRICS}, "flags": flags} for task, res in evaluate(model, data[2]).items()]


def _dump(save_fn: Callable[[Any, str], None], net: Any) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "net.npz")
        save_fn(net, path)
        with open(path, "rb") as f:
            return f.read()


def _restore(load_fn: Callable[[str], Any], blob: bytes) -> Any:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "net.npz")
        with open(path, "wb") as f:
            f.write(blob)
        return load_fn(path)
