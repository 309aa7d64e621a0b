"""Experiments: backbones with and without RMTL over several seeds, run as a graph of jobs
(:mod:`rmtl.jobs`) on any executor (:mod:`rmtl.executors`) and summarised with means,
standard deviations and paired t-tests against each backbone's own baseline.

(The module is ``experiments``, plural, so that the function ``rmtl.experiment`` does not
hide it.)"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import convergence
from .agent import RMTL, WEIGHTINGS
from .data import SessionData
from .executors import ExecutorSpec, backend, run_graph
from .jobs import BASELINE, CONTROL, METRICS, Job, JobOutput, Settings, agent_view, graph
from .models import check_compat

__all__ = ["experiment", "ExperimentResult", "holm", "METRICS", "BASELINE", "CONTROL"]


@dataclasses.dataclass
class ExperimentResult:
    """Test-set metrics of every (model, variant, seed, task), and their summary.

    ``records`` holds one dict per model, variant, seed and task with ``auc``, ``logloss``,
    ``s_logloss`` and ``flags`` (the convergence checks the run failed, see
    :func:`rmtl.convergence.check`). Variants: ``baseline`` (stage 1 only), a weighting name (``rmtl``,
    ``constant``, ``label``, ``neg_q``: stages 2 and 3 on top of that baseline;
    ``continued``: stage 3 with every weight one, the control for extra training) and
    ``rmtl[critics of X]`` (stage 3 with the critics learned with backbone X: transfer).
    ``oracle`` gives, per task, the AUC and logloss of the true probabilities when the test
    data carries them (synthetic data).
    """

    records: List[Dict[str, Any]]
    oracle: Dict[str, Dict[str, float]]
    config: Dict[str, Any]

    def table(self) -> List[Dict[str, Any]]:
        """One row per (model, variant, task): ``n`` seeds, ``<metric>_mean``, ``<metric>_std``
        (sample std) and the paired comparisons (lower logloss is better):

        - every variant against its backbone's baseline: ``<metric>_diff`` (mean paired
          difference variant minus baseline over seeds) and ``<metric>_p`` (two-sided paired
          t-test, scipy.stats.ttest_rel; NaN with fewer than two seeds or identical values);
        - every critic variant (not ``baseline`` or ``continued``) against the control
          ``continued`` of the same backbone, the critic effect: ``<metric>_effect`` and
          ``<metric>_effect_p``.

        Each p-value also comes Holm-adjusted over all tests of the table (every row, task,
        metric and comparison), as ``<metric>_p_holm`` and ``<metric>_effect_p_holm``.
        ``flags`` counts the seeds that failed each convergence check
        (:func:`rmtl.convergence.check`); ``diff_checked`` and ``effect_checked`` are True when
        neither side of that comparison is flagged (only then may it be called significant).
        """
        from scipy import stats

        groups: Dict[Tuple[str, str, str], Dict[int, Dict[str, float]]] = {}
        for r in self.records:
            groups.setdefault((r["model"], r["variant"], r["task"]), {})[r["seed"]] = r
        rows = []
        flags = {key: convergence.summary([r.get("flags", []) for r in by_seed.values()])
                 for key, by_seed in groups.items()}
        for (model, variant, task), by_seed in groups.items():
            row: Dict[str, Any] = {"model": model, "variant": variant, "task": task, "n": len(by_seed),
                                   "flags": flags[model, variant, task]}
            against = {} if variant == BASELINE else {"diff": (BASELINE, "p")}
            if variant not in (BASELINE, CONTROL):
                against["effect"] = (CONTROL, "effect_p")
            for m in METRICS:
                v = np.array([by_seed[s][m] for s in sorted(by_seed)], np.float64)
                row[f"{m}_mean"] = float(v.mean())
                row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
                for key, (other, pkey) in against.items():
                    ref = groups.get((model, other, task), {})
                    paired = sorted(set(by_seed) & set(ref))
                    if not paired:
                        continue
                    row[f"{key}_checked"] = not row["flags"] and not flags[model, other, task]
                    d = np.array([by_seed[s][m] - ref[s][m] for s in paired])
                    row[f"{m}_{key}"] = float(d.mean())
                    row[f"{m}_{pkey}"] = (
                        float("nan") if len(d) < 2 or np.all(d == d[0]) else
                        float(stats.ttest_rel([by_seed[s][m] for s in paired], [ref[s][m] for s in paired]).pvalue))
            rows.append(row)
        keys = [(i, k) for i, row in enumerate(rows) for k in row if k.endswith("_p")]
        for (i, k), adjusted in zip(keys, holm([rows[i][k] for i, k in keys])):
            rows[i][k + "_holm"] = adjusted
        return rows

    def correction(self) -> str:
        """The multiple-comparison correction the table applies, in words."""
        n = sum(1 for row in self.table() for k in row if k.endswith("_p") and not np.isnan(row[k]))
        return (f"p-values Holm-adjusted over all {n} paired t-tests of the table (every row, task, metric and "
                "comparison; family-wise error rate)")

    def to_markdown(self, metrics: Sequence[str] = METRICS) -> str:
        """The summary as a Markdown table (mean +- std over seeds; paired differences vs the
        baseline and vs ``continued`` with Holm-adjusted p-values, the convergence flags with
        the seeds that raised them), the correction applied and the oracle line when known."""
        head = ["model", "variant", "task", "seeds", "checks"]
        for m in metrics:
            head += [m, f"d {m} (p)", f"critic effect {m} (p)"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.table():
            cells = [row["model"], row["variant"], row["task"], str(row["n"]),
                     ", ".join(f"{flag} {n}/{row['n']}" for flag, n in row["flags"].items()) or "ok"]
            for m in metrics:
                cells.append(f"{row[f'{m}_mean']:.4f} +- {row[f'{m}_std']:.4f}")
                for d, p in ((f"{m}_diff", f"{m}_p_holm"), (f"{m}_effect", f"{m}_effect_p_holm")):
                    cells.append(f"{row[d]:+.4f} ({row[p]:.3f})" if d in row else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"d: variant - baseline, critic effect: variant - continued, paired by seed; "
                      f"{self.correction()}."]
        if self.oracle:
            lines.append("")
            lines.append("Oracle (true probabilities): " + ", ".join(
                f"{task} AUC {o['auc']:.4f} / logloss {o['logloss']:.4f}" for task, o in self.oracle.items()))
        return "\n".join(lines)


def experiment(train: SessionData, valid: SessionData, test: SessionData,
               backbones: Sequence[str] = ("esmm", "mmoe", "ple"), seeds: Iterable[int] = range(5),
               weightings: Sequence[str] = ("rmtl", CONTROL), transfer: Sequence[Tuple[str, str]] = (("esmm", "mmoe"),),
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
    effect of stages 2 and 3 alone; the default ``continued`` (stage 3 with every weight
    one) is the control that separates the critics' effect from the extra training.
    Every trained model goes through :func:`rmtl.convergence.check` on ``valid``; each
    failed check is recorded and raises a warning that says what to change.

    ``backbone_kwargs`` go to :func:`rmtl.models.create` (e.g. small ``embed_dim`` for a
    quick run; the seed is the experiment's), ``rmtl_kwargs`` to :class:`rmtl.RMTL`
    (with ``compat="authors"`` there, every backbone must be the authors' module: not ``ple_paper``).
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

    Each job runs with ``threads_per_job`` threads (:func:`rmtl.set_num_threads`); default:
    as this process is set for ``None`` and for a given executor, the cores divided by N for
    N processes, 1 on Ray (where it is also the CPUs a task reserves). The records depend
    neither on the executor nor on the threads per job: the same seeds give the same numbers,
    bit for bit (with OpenBLAS or ``RMTL_BLAS=builtin``; another BLAS splits the products by
    its own thread count, and then the numbers agree to rounding).
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
    for name in backbones:
        check_compat(str(name).lower(), rkw.get("compat"))
    jobs = graph(backbones, with_rmtl, seeds, weightings, transfer)
    settings = Settings(bkw, rkw, None if checkpoint_dir is None else os.path.abspath(checkpoint_dir), progress)

    def done(job: Job, outputs: Mapping[Job, JobOutput]) -> None:
        own = [j for j in jobs if j.model == job.model and j.seed == job.seed and not j.transfer]
        if on_agent is not None and job in own and all(j in outputs for j in own):
            on_agent(job.model, job.seed, agent_view(job.model, job.seed, settings, outputs, jobs))

    runner = backend(executor, (train, valid, test), threads_per_job)
    outputs = run_graph(jobs, settings, runner, done)
    records = [r for job in jobs for r in outputs[job].records]
    result = ExperimentResult(records, _oracle(test), {
        "backbones": list(backbones), "rmtl_backbones": with_rmtl, "seeds": seeds, "weightings": list(weightings),
        "transfer": [list(p) for p in transfer], "backbone_kwargs": bkw, "rmtl_kwargs": rkw,
        "rows": {"train": len(train), "valid": len(valid), "test": len(test)}, "threads_per_job": runner.threads})
    flagged = {(r["model"], r["variant"]): (r["flags"], r["n"]) for r in result.table() if r["flags"]}
    if flagged:
        raised = [f for f in convergence.ADVICE if any(f in fl for fl, _ in flagged.values())]
        warnings.warn("convergence checks failed, comparisons with these rows are not significant: " + "; ".join(
            f"{m} {v} ({', '.join(f'{f} {k}/{n}' for f, k in fl.items())})" for (m, v), (fl, n) in flagged.items())
            + ". What to change: " + "; ".join(f"{f}: {convergence.ADVICE[f]}" for f in raised), stacklevel=2)
    return result


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm's step-down adjustment of ``pvalues`` (NaN entries are left out of the family
    and stay NaN): the i-th smallest of m becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``."""
    p = np.asarray(pvalues, np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return [float(x) for x in out]


def _oracle(test: SessionData) -> Dict[str, Dict[str, float]]:
    """AUC and logloss of the true probabilities, per task, when the data knows them."""
    if test.truth is None:
        return {}
    from .metrics import logloss, oracle_auc

    return {task: {"auc": oracle_auc(test.truth[:, k]), "logloss": logloss(test.labels[:, k], test.truth[:, k])}
            for k, task in enumerate(test.task_names)}
