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

import concurrent.futures as cf
import dataclasses
import os
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..agent import CRITIC_FREE, RMTL
from ..critic import Critic
from ..data import SessionData
from ..metrics import evaluate
from ..models import Backbone, create, load, save
from ..train import History
from . import _threads, convergence

__all__ = ["Job", "JobOutput", "Settings", "Executor", "graph", "execute", "run_graph", "needs_critics", "load_critics", "agent_view",
           "CONTROLS", "BUDGETS"]

METRICS = ("auc", "logloss", "s_logloss")
BASELINE = "baseline"
CONTROL = "continued"  # stage 3 with every weight one: the control for extra training
# the stage-3 controls of the critic effect: extra training alone (continued), RMTL's task
# ratio alone (static: each task's weight fixed at the mean of RMTL's), RMTL's weights without
# their rows (permuted: the same weights shuffled across each batch's rows)
CONTROLS = ("continued", "static", "permuted")
BUDGETS = ("matched", "fixed")
Splits = Tuple[SessionData, SessionData, SessionData]


def needs_critics(weighting: Optional[str]) -> bool:
    """Whether a stage-3 weighting reads the critics (``constant``, ``continued`` and
    ``static`` do not)."""
    return weighting not in CRITIC_FREE


@dataclasses.dataclass(frozen=True)
class Job:
    """One unit of work.

    ``kind``: ``pretrain`` (stage 1 of ``model``), ``critics`` (stage 2 on its pretrained
    weights) or ``finetune`` (stage 3 of ``model``'s pretrained weights with ``weighting``,
    None for the agent's own, weighted by the critics of ``critics_of``: ``model`` itself,
    another backbone for a transfer, None when the weighting reads no critics).

    A stage-3 budget: ``epochs`` (a fixed budget: exactly that many epochs, the last weights
    kept) or, with ``matched``, as many epochs as the ``rmtl`` job of the same model and seed
    kept (a control trained for RMTL's steps); neither: early stopping.
    """

    kind: str
    model: str
    seed: int
    weighting: Optional[str] = None
    critics_of: Optional[str] = None
    epochs: Optional[int] = None
    matched: bool = False

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
    def reference(self) -> Optional["Job"]:
        """The ``rmtl`` stage-3 job whose kept epochs (``matched``) or mean weights
        (``static``) this one reads, else None."""
        if self.kind != "finetune" or not (self.matched or self.weighting == "static"):
            return None
        return Job("finetune", self.model, self.seed, "rmtl", self.model, epochs=self.epochs)

    @property
    def deps(self) -> Tuple["Job", ...]:
        """The jobs whose outputs this one reads, in the order :func:`run` expects them:
        the pretrained model, the critics (when read), the reference (when read)."""
        if self.kind == "pretrain":
            return ()
        deps = (Job("pretrain", self.model, self.seed),)
        if self.kind == "finetune" and self.critics_of is not None:
            deps += (Job("critics", self.critics_of, self.seed),)
        elif self.kind == "critics":
            return deps
        return deps + ((self.reference,) if self.reference is not None else ())


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
          weightings: Sequence[str], transfer: Sequence[Tuple[str, str]], budget: str = "matched",
          epochs: Optional[int] = None) -> List[Job]:
    """Every job of an experiment, in the order a serial run takes them (and its records
    are listed): per seed, each backbone's stages, then the transfers.

    ``budget="matched"``: the controls (:data:`CONTROLS`) train as many epochs as the same
    seed's ``rmtl`` job kept (it must be among ``weightings``), every other stage-3 job stops
    early; ``"fixed"``: every stage-3 job trains exactly ``epochs`` epochs."""
    if budget not in BUDGETS:
        raise ValueError(f"budget: expected one of {list(BUDGETS)}, got {budget!r}")
    if budget == "fixed" and epochs is None:
        raise ValueError("epochs: a fixed stage-3 budget needs the number of epochs")
    needs_rmtl = [w for w in weightings if w == "static" or (budget == "matched" and w in CONTROLS[1:])]
    if needs_rmtl and "rmtl" not in weightings:
        raise ValueError(f"weightings: {needs_rmtl} read the rmtl arm of the same seed (its budget or weights); "
                         "add 'rmtl'")
    fixed = epochs if budget == "fixed" else None
    matched = budget == "matched" and "rmtl" in weightings
    jobs = []
    for seed in seeds:
        for name in backbones:
            jobs.append(Job("pretrain", name, seed))
            if name not in rmtl_backbones:
                continue
            if any(needs_critics(w) for w in weightings) or any(src == name for src, _ in transfer):
                jobs.append(Job("critics", name, seed))
            ordered = sorted(weightings, key=lambda w: w != "rmtl")  # the reference runs first
            jobs += [Job("finetune", name, seed, w, name if needs_critics(w) else None, fixed,
                         matched and w in CONTROLS) for w in ordered]
        jobs += [Job("finetune", dst, seed, None, src, fixed) for src, dst in transfer]
    return jobs


def execute(job: Job, settings: Settings, data: Splits, inputs: Sequence[JobOutput]) -> JobOutput:
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
    if job.critics_of is not None:
        agent.critics = load_critics(inputs[1])
    epochs, task_weights = job.epochs, None
    if job.reference is not None:
        ref = reference_history(inputs[-1])
        if job.matched:
            epochs = ref.best_epoch or len(ref.epochs)
        if job.weighting == "static":
            task_weights = kept_mean_weights(ref, train.task_names)
    hist = agent.finetune(train, valid, weighting=job.weighting, epochs=epochs, task_weights=task_weights)
    _finished(hist.interrupted)
    return JobOutput({"finetuned": _dump(save, agent.backbone)}, _records(job, agent.backbone, hist, data),
                     agent.history)


_RUNNERS: Dict[str, Callable[[Job, Settings, Splits, Sequence[JobOutput]], JobOutput]] = {
    "pretrain": _pretrain, "critics": _critics, "finetune": _finetune}


def reference_history(output: JobOutput) -> History:
    """The stage-3 history in the output of a ``finetune`` job."""
    (key,) = [k for k in output.history if k.startswith("finetuned-")]
    return History.from_dict(output.history[key])


def kept_mean_weights(hist: History, tasks: Sequence[str]) -> List[float]:
    """Per task, the mean stage-3 loss weight over the epochs up to the kept one (every epoch
    visits every training row once, so this is the mean over the rows and steps that made
    the kept model): the ``static`` control's weights."""
    kept = hist.epochs[:hist.best_epoch or len(hist.epochs)]
    return [float(np.mean([e[f"mean_weight_{t}"] for e in kept])) for t in tasks]


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


def _records(job: Job, model: Backbone, hist: History, data: Splits) -> List[Dict[str, Any]]:
    """Test metrics per task, with the convergence checks the training failed (judged on
    ``valid`` and, against the constant predictor at the training rates, on ``test``) and
    the budget the model actually trained: ``epochs`` run, ``kept_epoch`` and ``steps`` (Adam
    steps up to the kept weights)."""
    train, valid, test = data
    flags = convergence.check(hist, model, valid, test, train.labels.mean(0))
    budget = {"epochs": len(hist.epochs), "kept_epoch": hist.best_epoch or len(hist.epochs), "steps": hist.steps}
    return [{"model": job.model, "variant": job.variant, "seed": job.seed, "task": task,
             **{m: res[m] for m in METRICS}, "flags": flags, **budget} for task, res in evaluate(model, test).items()]


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


class Executor:
    """Where jobs run (:mod:`rmtl.lab.executors` has the kinds): ``submit`` returns a future of
    the :class:`JobOutput`; ``handle`` turns a finished future into what dependent jobs
    receive; ``capacity`` jobs are in flight at once."""

    capacity: int = 1 << 30
    threads: Optional[int] = None

    def submit(self, job: Job, settings: Settings, inputs: Sequence[Any]) -> cf.Future:
        """Start ``job`` with the handles of its inputs (in ``job.deps`` order)."""
        raise NotImplementedError

    def handle(self, future: cf.Future) -> Any:
        """What jobs depending on the finished ``future`` receive: its output here."""
        return future.result()

    def close(self) -> None:
        """Release workers (cancelling what has not started)."""


def run_graph(jobs: Sequence[Job], settings: Settings, runner: Executor,
              on_done: Optional[Callable[[Job, Dict[Job, JobOutput]], None]] = None) -> Dict[Job, JobOutput]:
    """Run ``jobs`` (a graph: every job's deps come before it) and return every output.

    Ready jobs are submitted in list order up to the executor's capacity; ``on_done(job,
    outputs)`` is called in this process as each job finishes. A failure (or Ctrl-C) cancels
    the jobs not yet started and is raised."""
    outputs: Dict[Job, JobOutput] = {}
    handles: Dict[Job, Any] = {}
    running: Dict[cf.Future, Job] = {}
    waiting: List[Job] = list(jobs)
    # bars from many workers would interleave: only a serial run shows them
    settings = dataclasses.replace(settings, threads=runner.threads,
                                   progress=settings.progress and runner.capacity == 1)
    try:
        while waiting or running:
            for job in [j for j in waiting if all(d in outputs for d in j.deps)]:
                if len(running) >= runner.capacity:
                    break
                waiting.remove(job)
                running[runner.submit(job, settings, [handles[d] for d in job.deps])] = job
            if not running:
                missing = sorted({d.key for j in waiting for d in j.deps} - {j.key for j in jobs})
                raise ValueError(f"jobs: inputs {missing} are not in the graph")
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: jobs.index(running[f])):
                job = running.pop(future)
                outputs[job], handles[job] = future.result(), runner.handle(future)
                if on_done is not None:
                    on_done(job, outputs)
    finally:
        for future in running:
            future.cancel()
        runner.close()
    return outputs
