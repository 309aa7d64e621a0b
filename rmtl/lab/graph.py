"""The experiment as a graph of jobs: per (seed, backbone) stage 1, then stage 2, then one
job per stage-3 variant; a transfer is a stage-3 job on the target's baseline with the
source's critics.

A job is a small picklable description (:class:`Job`); :func:`rmtl.lab.units.execute` runs
it anywhere and returns a :class:`JobOutput`. :class:`Executor` is where jobs run (the kinds
are in :mod:`rmtl.lab.executors`) and :func:`run_graph` schedules a graph on one. Every job
draws its randomness from its own seed, so the order and place of execution never change a
number.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from ..config import CRITIC_FREE, RMTLConfig
from ..data import SessionData

__all__ = [
    "Job",
    "JobOutput",
    "Settings",
    "Work",
    "Executor",
    "graph",
    "run_graph",
    "needs_critics",
    "CONTROLS",
    "BUDGETS",
]

METRICS = ("auc", "logloss", "s_logloss")
BASELINE = "baseline"
CONTROL = "continued"  # stage 3 with every weight one: the control for extra training
# the stage-3 controls of the critic effect: extra training alone (continued), RMTL's task
# ratio alone (static: each task's weight fixed at the mean of RMTL's), RMTL's weights without
# their rows (permuted: the same weights shuffled across each batch's rows)
CONTROLS = ("continued", "static", "permuted")
BUDGETS = ("matched", "fixed")
Splits = tuple[SessionData, SessionData, SessionData]


def balanced(name: str) -> str:
    """The variant of a backbone trained from scratch with balancer ``name``."""
    return f"balanced[{name}]"


def continued_with(name: str) -> str:
    """The variant of the Continued control (stage 3, no critics) with balancer ``name``."""
    return f"{CONTROL}[{name}]"


def balancer_of(variant: str) -> Optional[str]:
    """The balancer of a :func:`balanced` or :func:`continued_with` variant, else None."""
    for prefix in ("balanced[", f"{CONTROL}["):
        if variant.startswith(prefix) and variant.endswith("]"):
            return variant[len(prefix) : -1]
    return None


def is_balanced(variant: str) -> bool:
    """Whether a variant trains with a loss balancer."""
    return balancer_of(variant) is not None


def needs_critics(weighting: Optional[str]) -> bool:
    """Whether a stage-3 weighting reads the critics (``constant``, ``continued`` and
    ``static`` do not).

    Parameters
    ----------
    weighting : str or None
        A stage-3 weighting (None: the agent's own, which reads them).

    Returns
    -------
    bool
    """
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

    ``balancer``: the loss balancer the job trains with (:mod:`rmtl.balancers`): a
    ``pretrain`` job then trains the backbone from scratch with it (variant
    ``balanced[<name>]``), a ``finetune`` job with ``weighting="continued"`` is the Continued
    control with it (``continued[<name>]``).

    Parameters
    ----------
    kind : str
        ``"pretrain"``, ``"critics"`` or ``"finetune"``.
    model : str
        The backbone's name.
    seed : int
        The seed of the model and its agent.
    weighting : str, optional
        ``finetune``: the stage-3 weighting (None: the agent's own).
    critics_of : str, optional
        ``finetune``: the backbone whose critics weight the losses (None: no critics read).
    epochs : int, optional
        ``finetune``: a fixed budget of exactly that many epochs.
    matched : bool, default False
        ``finetune``: train as many epochs as the ``rmtl`` job of the same model and seed kept.
    balancer : str, optional
        The loss balancer the job trains with (None: the agent's own losses).
    """

    kind: str
    model: str
    seed: int
    weighting: Optional[str] = None
    critics_of: Optional[str] = None
    epochs: Optional[int] = None
    matched: bool = False
    balancer: Optional[str] = None

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
        if self.balancer is not None:
            stage += f"-{self.balancer}"
        return f"{self.model}-seed{self.seed}/{stage}"

    @property
    def variant(self) -> str:
        """The ``variant`` of its records."""
        if self.kind == "pretrain":
            return BASELINE if self.balancer is None else balanced(self.balancer)
        if self.balancer is not None:
            return continued_with(self.balancer)
        return f"rmtl[critics of {self.critics_of}]" if self.transfer else str(self.weighting)

    @property
    def reference(self) -> Optional[Job]:
        """The ``rmtl`` stage-3 job whose kept epochs (``matched``) or mean weights
        (``static``) this one reads, else None."""
        if self.kind != "finetune" or not (self.matched or self.weighting == "static"):
            return None
        return Job("finetune", self.model, self.seed, "rmtl", self.model, epochs=self.epochs)

    @property
    def deps(self) -> tuple[Job, ...]:
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
    job's wall time where it ran).

    Parameters
    ----------
    networks : dict of str to bytes
        ``pretrained``, ``finetuned`` or ``critic<k>`` -> the bytes of the network's file.
    records : list of dict
        Test metrics per task.
    history : dict
        The agent's history entries.
    seconds : float, default 0.0
        The job's wall time where it ran.
    """

    networks: dict[str, bytes]
    records: list[dict[str, Any]]
    history: dict[str, Any]
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every job of one experiment shares: the backbones' keyword arguments, the agents'
    settings ``rmtl`` (checked once, when the :class:`rmtl.RMTLConfig` was built; each job
    puts in its own seed), the checkpoint root (every job checkpoints in
    ``<root>/<job.key>``), progress bars, the threads each job runs with (None: as the
    process is set) and ``compat`` (``"authors"``: every backbone must be the authors'
    module; the authors' switches are already in ``rmtl``).

    Parameters
    ----------
    backbone_kwargs : mapping
        Keyword arguments of every backbone (:func:`rmtl.models.create`).
    rmtl : RMTLConfig
        The agents' settings (each job puts in its own seed).
    checkpoint_dir : str, optional
        The checkpoint root (None: no checkpoints).
    progress : bool, default False
        Whether jobs show progress bars.
    threads : int, optional
        Threads each job runs with (None: as the process is set).
    compat : str, optional
        ``"authors"``: every backbone must be the authors' module.
    """

    backbone_kwargs: Mapping[str, Any]
    rmtl: RMTLConfig
    checkpoint_dir: Optional[str] = None
    progress: bool = False
    threads: Optional[int] = None
    compat: Optional[str] = None


def graph(
    backbones: Sequence[str],
    rmtl_backbones: Sequence[str],
    seeds: Sequence[int],
    weightings: Sequence[str],
    transfer: Sequence[tuple[str, str]],
    budget: str = "matched",
    epochs: Optional[int] = None,
    balancers: Sequence[str] = (),
    balanced_backbones: Optional[Sequence[str]] = None,
) -> list[Job]:
    """Every job of an experiment, in the order a serial run takes them (and its records
    are listed): per seed, each backbone's stages, then the transfers.

    ``budget="matched"``: the controls (:data:`CONTROLS`) train as many epochs as the same
    seed's ``rmtl`` job kept (it must be among ``weightings``), every other stage-3 job stops
    early; ``"fixed"``: every stage-3 job trains exactly ``epochs`` epochs.

    ``balancers``: per balancer, every backbone of ``balanced_backbones`` (default all) is
    also trained from scratch with it (as its baseline, with early stopping), and every RMTL
    backbone gets a Continued control with it, budgeted as the other controls.

    Parameters
    ----------
    backbones : sequence of str
        The backbones, each pretrained (stage 1) per seed.
    rmtl_backbones : sequence of str
        Those of ``backbones`` that also go through RMTL's stages 2 and 3.
    seeds : sequence of int
        The seeds.
    weightings : sequence of str
        The stage-3 weightings (``"rmtl"`` and the controls) of every RMTL backbone.
    transfer : sequence of (str, str)
        (source, destination) pairs: destination fine-tuned with the source's critics.
    budget : {"matched", "fixed"}, default "matched"
        The stage-3 budget of the controls (above).
    epochs : int, optional
        The epochs of every stage-3 job with ``budget="fixed"`` (required there).
    balancers : sequence of str, default ()
        Loss balancers (:mod:`rmtl.balancers`) to train with as well.
    balanced_backbones : sequence of str, optional
        The backbones trained with each balancer (None: all of ``backbones``).

    Returns
    -------
    list of Job

    Raises
    ------
    ValueError
        When ``budget`` is neither ``"matched"`` nor ``"fixed"``, ``budget="fixed"`` comes
        without ``epochs``, or ``weightings`` holds ``static`` (or, with ``budget="matched"``,
        ``permuted``) without ``rmtl``, whose arm they read.
    """
    if budget not in BUDGETS:
        raise ValueError(f"budget: expected one of {list(BUDGETS)}, got {budget!r}")
    if budget == "fixed" and epochs is None:
        raise ValueError("epochs: a fixed stage-3 budget needs the number of epochs")
    needs_rmtl = [
        w for w in weightings if w == "static" or (budget == "matched" and w in CONTROLS[1:])
    ]
    if needs_rmtl and "rmtl" not in weightings:
        raise ValueError(
            f"weightings: {needs_rmtl} read the rmtl arm of the same seed (its budget or weights); "
            "add 'rmtl'"
        )
    fixed = epochs if budget == "fixed" else None
    matched = budget == "matched" and "rmtl" in weightings
    jobs = []
    with_balancers = backbones if balanced_backbones is None else balanced_backbones
    for seed in seeds:
        for name in backbones:
            jobs.append(Job("pretrain", name, seed))
            if name in with_balancers:
                jobs += [Job("pretrain", name, seed, balancer=b) for b in balancers]
            if name not in rmtl_backbones:
                continue
            if any(needs_critics(w) for w in weightings) or any(src == name for src, _ in transfer):
                jobs.append(Job("critics", name, seed))
            ordered = sorted(weightings, key=lambda w: w != "rmtl")  # the reference runs first
            jobs += [
                Job(
                    "finetune",
                    name,
                    seed,
                    w,
                    name if needs_critics(w) else None,
                    fixed,
                    matched and w in CONTROLS,
                )
                for w in ordered
            ]
            if name in with_balancers:
                jobs += [
                    Job("finetune", name, seed, CONTROL, None, fixed, matched, balancer=b)
                    for b in balancers
                ]
        jobs += [Job("finetune", dst, seed, None, src, fixed) for src, dst in transfer]
    return jobs


Work = Callable[[Job, Settings, Splits, Sequence[JobOutput]], JobOutput]
"""What runs one job: ``work(job, settings, data, inputs)`` (:func:`rmtl.lab.units.execute`)."""


class Executor:
    """Where jobs run (:mod:`rmtl.lab.executors` has the kinds): ``submit`` returns a future of
    the :class:`JobOutput`; ``handle`` turns a finished future into what dependent jobs
    receive; ``capacity`` jobs are in flight at once."""

    capacity: int = 1 << 30
    threads: Optional[int] = None

    def submit(self, job: Job, settings: Settings, inputs: Sequence[Any]) -> cf.Future:
        """Start ``job`` with the handles of its inputs (in ``job.deps`` order).

        Parameters
        ----------
        job : Job
            The job.
        settings : Settings
            What every job of the experiment shares.
        inputs : sequence
            The handles (:meth:`handle`) of the outputs of ``job.deps``.

        Returns
        -------
        concurrent.futures.Future
            A future of the job's :class:`JobOutput`.

        Raises
        ------
        NotImplementedError
            Always, here: an abstract method, which every subclass (the kinds in
            :mod:`rmtl.lab.executors`) implements.
        """
        raise NotImplementedError

    def result(self, future: cf.Future) -> JobOutput:
        """The output of the finished ``future`` (or its error, raised).

        Parameters
        ----------
        future : concurrent.futures.Future
            A finished future of :meth:`submit`.

        Returns
        -------
        JobOutput
        """
        return future.result()

    def handle(self, future: cf.Future) -> Any:
        """What jobs depending on the finished ``future`` receive: its output here.

        Parameters
        ----------
        future : concurrent.futures.Future
            A finished future of :meth:`submit`.

        Returns
        -------
        object
            The :class:`JobOutput`, or what stands for it where the jobs run (a Ray object
            reference).
        """
        return future.result()

    def close(self) -> None:
        """Release workers (cancelling what has not started)."""


def run_graph(
    jobs: Sequence[Job],
    settings: Settings,
    runner: Executor,
    on_done: Optional[Callable[[Job, dict[Job, JobOutput]], None]] = None,
) -> dict[Job, JobOutput]:
    """Run ``jobs`` (a graph: every job's deps come before it) and return every output.

    Ready jobs are submitted in list order up to the executor's capacity; ``on_done(job,
    outputs)`` is called in this process as each job finishes. A failure (or Ctrl-C) cancels
    the jobs not yet started and is raised.

    Parameters
    ----------
    jobs : sequence of Job
        The graph (:func:`graph`).
    settings : Settings
        What every job shares.
    runner : Executor
        Where jobs run (closed at the end).
    on_done : callable, optional
        ``on_done(job, outputs)`` after each job, with the outputs so far.

    Returns
    -------
    dict of Job to JobOutput

    Raises
    ------
    ValueError
        When no job is running and the waiting ones cannot start: because ``runner`` takes
        no job at all (its ``capacity`` is below 1), or because an input (a job of
        ``job.deps``) is not in ``jobs``; the message names the capacity or the missing
        inputs.
    """
    outputs: dict[Job, JobOutput] = {}
    handles: dict[Job, Any] = {}
    running: dict[cf.Future, Job] = {}
    waiting: list[Job] = list(jobs)
    # bars from many workers would interleave: only a serial run shows them
    settings = dataclasses.replace(
        settings, threads=runner.threads, progress=settings.progress and runner.capacity == 1
    )
    try:
        while waiting or running:
            for job in [j for j in waiting if all(d in outputs for d in j.deps)]:
                if len(running) >= runner.capacity:
                    break
                waiting.remove(job)
                running[runner.submit(job, settings, [handles[d] for d in job.deps])] = job
            if not running:  # deps form no cycle: nothing can start for one of these
                if runner.capacity < 1:
                    raise ValueError(
                        f"runner: expected a capacity of at least 1 job, got {runner.capacity}"
                    )
                given = set(jobs)
                missing = sorted({d.key for j in waiting for d in j.deps if d not in given})
                raise ValueError(f"jobs: inputs {missing} are not in the graph")
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: jobs.index(running[f])):
                job = running.pop(future)
                outputs[job], handles[job] = runner.result(future), runner.handle(future)
                if on_done is not None:
                    on_done(job, outputs)
    finally:
        for future in running:
            future.cancel()
        runner.close()
    return outputs
