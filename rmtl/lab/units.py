"""What each unit of work of the graph (:mod:`rmtl.lab.graph`) does: :func:`execute` runs a
job anywhere (this process, a worker process, a Ray task) from the data and its inputs'
outputs, with RMTL's stages (:class:`rmtl.RMTL`), and returns its :class:`JobOutput`: the
networks it produced as the bytes of their ``.npz`` files, its test-set records (with the
convergence checks and the budget it ran) and the agent's history entries."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np

from ..agent import RMTL
from ..critic import Critic
from ..metrics import evaluate
from ..models import Backbone, create, load, save
from ..train import History
from . import _threads, convergence
from .graph import METRICS, Job, JobOutput, Settings, Splits

__all__ = ["execute", "agent_view", "load_critics", "reference_history", "kept_mean_weights"]


def execute(job: Job, settings: Settings, data: Splits, inputs: Sequence[JobOutput]) -> JobOutput:
    """Execute ``job`` on ``data`` = (train, valid, test) given the outputs of ``job.deps``.

    Parameters
    ----------
    job : Job
        The job.
    settings : Settings
        What every job of the experiment shares (its ``threads`` limit the job).
    data : tuple of SessionData
        The (train, valid, test) splits.
    inputs : sequence of JobOutput
        The outputs of ``job.deps``, in that order.

    Returns
    -------
    JobOutput
        Its ``seconds`` set to the job's wall time.
    """
    t0 = time.perf_counter()
    with _threads.limit(settings.threads):
        out = _RUNNERS[job.kind](job, settings, data, inputs)
    out.seconds = time.perf_counter() - t0
    return out


def _pretrain(job: Job, s: Settings, data: Splits, inputs: Sequence[JobOutput]) -> JobOutput:
    train, valid, test = data
    model = create(
        job.model,
        train.field_dims,
        train.num_dense,
        train.num_tasks,
        seed=job.seed,
        **s.backbone_kwargs,
    )
    agent = _agent(job, s, model)
    hist = agent.pretrain(train, valid)
    _finished(hist.interrupted)
    return JobOutput(
        {"pretrained": _dump(save, agent.pretrained)},
        _records(job, agent.pretrained, hist, data),
        agent.history,
    )


def _critics(job: Job, s: Settings, data: Splits, inputs: Sequence[JobOutput]) -> JobOutput:
    agent = _agent(job, s, _restore(load, inputs[0].networks["pretrained"]))
    _finished(len(agent.fit_critics(data[0])) < agent.config.critic_epochs)
    return JobOutput(
        {f"critic{k}": _dump(Critic.save, c) for k, c in enumerate(agent.critics)},
        [],
        agent.history,
    )


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
    hist = agent.finetune(
        train,
        valid,
        weighting=job.weighting,
        epochs=epochs,
        task_weights=task_weights,
        balancer=job.balancer,
    )
    _finished(hist.interrupted)
    return JobOutput(
        {"finetuned": _dump(save, agent.backbone)},
        _records(job, agent.backbone, hist, data),
        agent.history,
    )


_RUNNERS: dict[str, Callable[[Job, Settings, Splits, Sequence[JobOutput]], JobOutput]] = {
    "pretrain": _pretrain,
    "critics": _critics,
    "finetune": _finetune,
}


def reference_history(output: JobOutput) -> History:
    """The stage-3 history in the output of a ``finetune`` job.

    Parameters
    ----------
    output : JobOutput
        The output of a ``finetune`` job.

    Returns
    -------
    History
    """
    (key,) = [k for k in output.history if k.startswith("finetuned-")]
    return History.from_dict(output.history[key])


def kept_mean_weights(hist: History, tasks: Sequence[str]) -> list[float]:
    """Per task, the mean stage-3 loss weight over the epochs up to the kept one (every epoch
    visits every training row once, so this is the mean over the rows and steps that made
    the kept model): the ``static`` control's weights.

    Parameters
    ----------
    hist : History
        A stage-3 history.
    tasks : sequence of str
        The task names.

    Returns
    -------
    list of float
        One weight per task.
    """
    kept = hist.epochs[: hist.best_epoch or len(hist.epochs)]
    return [float(np.mean([e[f"mean_weight_{t}"] for e in kept])) for t in tasks]


def load_critics(output: JobOutput) -> list[Critic]:
    """The critics a stage-2 job produced, in task order.

    Parameters
    ----------
    output : JobOutput
        The output of a ``critics`` job.

    Returns
    -------
    list of Critic
    """
    return [
        _restore(Critic.load, output.networks[f"critic{k}"]) for k in range(len(output.networks))
    ]


def agent_view(
    model: str, seed: int, settings: Settings, outputs: Mapping[Job, JobOutput], jobs: Sequence[Job]
) -> RMTL:
    """An agent holding what the jobs of (``model``, ``seed``) produced: pretrained weights,
    critics, the last own variant's fine-tuned model and the merged history.

    Parameters
    ----------
    model : str
        The backbone's name.
    seed : int
        The seed.
    settings : Settings
        What every job of the experiment shares.
    outputs : mapping of Job to JobOutput
        The finished jobs' outputs.
    jobs : sequence of Job
        The graph.

    Returns
    -------
    RMTL
    """
    own = [j for j in jobs if j.model == model and j.seed == seed and not j.transfer]
    pretrained = _restore(load, outputs[own[0]].networks["pretrained"])
    agent = RMTL.from_config(
        pretrained, settings.rmtl.replace(seed=seed), compat=settings.compat, progress=False
    )
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
    return RMTL.from_config(
        backbone,
        s.rmtl.replace(seed=job.seed)
        if job.balancer is None or job.kind != "pretrain"
        else s.rmtl.replace(seed=job.seed, balancer=job.balancer, balancer_args={}),
        compat=s.compat,
        checkpoint_dir=ckpt,
        progress=s.progress,
    )


def _finished(interrupted: bool) -> None:
    """A stage stopped by Ctrl-C stops the experiment (the stage's checkpoint keeps its
    progress)."""
    if interrupted:
        raise KeyboardInterrupt


def _records(job: Job, model: Backbone, hist: History, data: Splits) -> list[dict[str, Any]]:
    """Test metrics per task, with the convergence checks the training failed (judged on
    ``valid`` and, against the constant predictor at the training rates, on ``test``) and
    the budget the model actually trained: ``epochs`` run, ``kept_epoch`` and ``steps`` (Adam
    steps up to the kept weights)."""
    train, valid, test = data
    flags = convergence.check(hist, model, valid, test, train.labels.mean(0))
    budget = {
        "epochs": len(hist.epochs),
        "kept_epoch": hist.best_epoch or len(hist.epochs),
        "steps": hist.steps,
    }
    return [
        {
            "model": job.model,
            "variant": job.variant,
            "seed": job.seed,
            "task": task,
            **{m: res[m] for m in METRICS},
            "flags": flags,
            **budget,
        }
        for task, res in evaluate(model, test, warn=False).items()  # the report says why
    ]


def _dump(save_fn: Callable[[Any, io.BytesIO], None], net: Any) -> bytes:
    """The bytes of the .npz file ``save_fn`` writes, written in memory (no temporary file)."""
    buffer = io.BytesIO()
    save_fn(net, buffer)
    return buffer.getvalue()


def _restore(load_fn: Callable[[io.BytesIO], Any], blob: bytes) -> Any:
    return load_fn(io.BytesIO(blob))
