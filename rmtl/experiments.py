"""Experiments: backbones with and without RMTL over several seeds, run as a graph of jobs
(:mod:`rmtl.jobs`) on any executor (:mod:`rmtl.executors`) and summarised with means,
standard deviations and paired t-tests against each backbone's own baseline.

(The module is ``experiments``, plural, so that the function ``rmtl.experiment`` does not
hide it.)"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .agent import RMTL, WEIGHTINGS
from .data import SessionData
from .executors import ExecutorSpec, backend, run_graph
from .jobs import BASELINE, METRICS, Job, JobOutput, Settings, agent_view, graph

__all__ = ["experiment", "ExperimentResult", "METRICS", "BASELINE"]


@dataclasses.dataclass
class ExperimentResult:
    """Test-set metrics of every (model, variant, seed, task), and their summary.

    ``records`` holds one dict per model, variant, seed and task with ``auc``, ``logloss``
    and ``s_logloss``. Variants: ``baseline`` (stage 1 only), a weighting name (``rmtl``,
    ``constant``, ``label``, ``neg_q``: stages 2 and 3 on top of that baseline) and
    ``rmtl[critics of X]`` (stage 3 with the critics learned with backbone X: transfer).
    ``oracle`` gives, per task, the AUC and logloss of the true probabilities when the test
    data carries them (synthetic data).
    """

    records: List[Dict[str, Any]]
    oracle: Dict[str, Dict[str, float]]
    config: Dict[str, Any]

    def table(self) -> List[Dict[str, Any]]:
        """One row per (model, variant, task): ``n`` seeds, ``<metric>_mean``, ``<metric>_std``
        (sample std), and for variants ``<metric>_diff`` (mean paired difference variant minus
        baseline over seeds; lower logloss is better) and ``<metric>_p`` (two-sided paired
        t-test, scipy.stats.ttest_rel; NaN with fewer than two seeds or identical values)."""
        from scipy import stats

        groups: Dict[Tuple[str, str, str], Dict[int, Dict[str, float]]] = {}
        for r in self.records:
            groups.setdefault((r["model"], r["variant"], r["task"]), {})[r["seed"]] = r
        rows = []
        for (model, variant, task), by_seed in groups.items():
            row: Dict[str, Any] = {"model": model, "variant": variant, "task": task, "n": len(by_seed)}
            base = groups.get((model, BASELINE, task), {})
            paired = sorted(set(by_seed) & set(base)) if variant != BASELINE else []
            for m in METRICS:
                v = np.array([by_seed[s][m] for s in sorted(by_seed)], np.float64)
                row[f"{m}_mean"] = float(v.mean())
                row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
                if paired:
                    a = np.array([by_seed[s][m] for s in paired])
                    b = np.array([base[s][m] for s in paired])
                    row[f"{m}_diff"] = float((a - b).mean())
                    same = len(paired) < 2 or np.allclose(a - b, (a - b)[0], rtol=0, atol=0)
                    row[f"{m}_p"] = float("nan") if same else float(stats.ttest_rel(a, b).pvalue)
            rows.append(row)
        return rows

    def to_markdown(self, metrics: Sequence[str] = METRICS) -> str:
        """The summary as a Markdown table (mean +- std over seeds; paired difference vs the
        baseline and its p-value), with the oracle line when known."""
        head = ["model", "variant", "task", "seeds"]
        for m in metrics:
            head += [m, f"d {m} (p)"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.table():
            cells = [row["model"], row["variant"], row["task"], str(row["n"])]
            for m in metrics:
                cells.append(f"{row[f'{m}_mean']:.4f} +- {row[f'{m}_std']:.4f}")
                cells.append(f"{row[f'{m}_diff']:+.4f} ({row[f'{m}_p']:.3f})" if f"{m}_diff" in row else "")
            lines.append("| " + " | ".join(cells) + " |")
        if self.oracle:
            lines.append("")
            lines.append("Oracle (true probabilities): " + ", ".join(
                f"{task} AUC {o['auc']:.4f} / logloss {o['logloss']:.4f}" for task, o in self.oracle.items()))
        return "\n".join(lines)


def experiment(train: SessionData, valid: SessionData, test: SessionData,
               backbones: Sequence[str] = ("esmm", "mmoe", "ple"), seeds: Iterable[int] = range(5),
               weightings: Sequence[str] = ("rmtl",), transfer: Sequence[Tuple[str, str]] = (("esmm", "mmoe"),),
               backbone_kwargs: Optional[Mapping[str, Any]] = None, rmtl_kwargs: Optional[Mapping[str, Any]] = None,
               checkpoint_dir: Optional["str | os.PathLike[str]"] = None, progress: bool = False,
               rmtl_backbones: Optional[Sequence[str]] = None,
               on_agent: Optional[Callable[[str, int, RMTL], None]] = None,
               executor: ExecutorSpec = None, threads_per_job: Optional[int] = None) -> ExperimentResult:
    """Run every backbone with and without RMTL over ``seeds`` and evaluate on ``test``.

    For each seed and backbone: stage 1 gives the baseline (metrics of the pretrained
    model); stage 2 learns the critics; stage 3 fine-tunes a copy of the baseline once per
    entry of ``weightings``. For each ``(source, target)`` in ``transfer``, the critics of
    the source backbone's agent fine-tune the target's baseline (same seed). Each variant
    is paired with its own backbone's baseline of the same seed, so a difference is the
    effect of stages 2 and 3 alone.

    ``backbone_kwargs`` go to :func:`rmtl.models.create` (e.g. small ``embed_dim`` for a
    quick run; the seed is the experiment's), ``rmtl_kwargs`` to :class:`rmtl.RMTL`.
    With ``checkpoint_dir``, every job saves in its own subdirectory there
    (``esmm-seed0/critics``) and an interrupted experiment (or a retried job) resumes from
    the last finished stage. ``rmtl_backbones`` (default: all of ``backbones``) limits
    stages 2 and 3 to those; the others are baselines only. ``on_agent(name, seed, agent)``
    is called in this process once a backbone's own stages have finished for a seed, with an
    agent holding their results (e.g. to keep diagnostics).

    The work is a graph of jobs (:mod:`rmtl.jobs`: stage 1, stage 2, each stage-3 variant
    and transfer per seed and backbone) that ``executor`` runs:

    - ``None``: one after another in this process (progress bars with ``progress``);
    - an integer N: N local worker processes, which receive the data once;
    - any ``concurrent.futures.Executor`` (the data travel with every job);
    - ``"ray"``: tasks on the Ray cluster ``ray.init()`` connects to (joined already, or
      ``$RAY_ADDRESS``, or a new local one); the data go into the object store once, a job
      whose worker dies is retried (``pip install 'rmtl[ray]'``).

    Each job runs with ``threads_per_job`` OpenMP and BLAS threads; default: as this process
    is set for ``None`` and for a given executor, the cores divided by N for N processes, 1
    on Ray (where it is also the CPUs a task reserves). The records do not depend on the
    executor: the same seeds and threads per job give the same numbers, bit for bit.
    (OpenBLAS's sums change in the last bits with its thread count, so a serial run on 2
    threads and 2 processes of 1 thread agree only to rounding; ``RMTL_BLAS=builtin`` gives
    the same bits on any count.)
    """
    seeds = [int(s) for s in seeds]
    unknown = [w for w in weightings if w not in WEIGHTINGS]
    if unknown or not seeds or not backbones:
        raise ValueError(f"expected at least one seed and backbone and weightings from {sorted(WEIGHTINGS)}; "
                         f"got seeds={seeds}, backbones={list(backbones)}, unknown weightings {unknown}")
    with_rmtl = list(backbones) if rmtl_backbones is None else list(rmtl_backbones)
    missing = sorted((set(with_rmtl) | {name for pair in transfer for name in pair}) - set(backbones))
    if missing:
        raise ValueError(f"rmtl_backbones, transfer: backbones {missing} are not in backbones={list(backbones)}; "
                         "add them")
    if any(src not in with_rmtl for src, _ in transfer):
        raise ValueError(f"transfer: every source needs critics, so must be in rmtl_backbones={with_rmtl}")
    bkw, rkw = dict(backbone_kwargs or {}), dict(rmtl_kwargs or {})
    jobs = graph(backbones, with_rmtl, seeds, weightings, transfer)
    settings = Settings(bkw, rkw, None if checkpoint_dir is None else os.fspath(checkpoint_dir), progress)

    def done(job: Job, outputs: Mapping[Job, JobOutput]) -> None:
        own = [j for j in jobs if j.model == job.model and j.seed == job.seed and not j.transfer]
        if on_agent is not None and job in own and all(j in outputs for j in own):
            on_agent(job.model, job.seed, agent_view(job.model, job.seed, settings, outputs, jobs))

    runner = backend(executor, (train, valid, test), threads_per_job)
    outputs = run_graph(jobs, settings, runner, done)
    records = [r for job in jobs for r in outputs[job].records]
    return ExperimentResult(records, _oracle(test), {
        "backbones": list(backbones), "rmtl_backbones": with_rmtl, "seeds": seeds, "weightings": list(weightings),
        "transfer": [list(p) for p in transfer], "backbone_kwargs": bkw, "rmtl_kwargs": rkw,
        "rows": {"train": len(train), "valid": len(valid), "test": len(test)}, "threads_per_job": runner.threads})


def _oracle(test: SessionData) -> Dict[str, Dict[str, float]]:
    """AUC and logloss of the true probabilities, per task, when the data knows them."""
    if test.truth is None:
        return {}
    from .metrics import logloss, oracle_auc

    return {task: {"auc": oracle_auc(test.truth[:, k]), "logloss": logloss(test.labels[:, k], test.truth[:, k])}
            for k, task in enumerate(test.task_names)}
