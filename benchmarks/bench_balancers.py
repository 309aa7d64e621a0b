"""Training speed with every loss balancer, rmtl against LibMTL's class balancing the PyTorch
twin, same data, same threads, one run.

The reference shape (the hyperparameters of the authors' code, rmtl's defaults; MMoE: embed
128, 8 experts of (512, 256), towers (128, 64), dropout 0.2, batch 2048, Adam lr 1e-3, weight
decay 1e-6) over RetailRocket-like fields, with 2 and 6 tasks. rmtl trains with
``Backbone.train_chunk(..., balancer=...)`` (one C call for all timed steps); the reference
runs LibMTL's weighting class on the twin (tests/torch_reference.py) as LibMTL's trainer does
(tests/libmtl_driver.py ``train``): the installed LibMTL (PyPI 1.1.5, 12 methods) or, with
``--libmtl PATH``, a checkout of its repository (all 23; export one with ``git archive``;
its Aligned-MTL and ExcessMTL run with the stand-ins of :func:`repository_runnable`).
``linear`` is timed against LibMTL's EW (the same work: fixed weights), ``metabalance``
against torch-rechub's optimizer (installed, or a checkout at ``--torch-rechub PATH``).

Each side is timed ``--rounds`` times and the fastest counts, the sides taking turns round by
round (rmtl's ``ew``, rmtl's balancer, its twin), so a load that comes and goes hits all three;
``ew`` is timed again beside every balancer. Targets (issue 31): a balancer of the losses
family costs at most 10% over ``ew`` per step; a gradient balancer in parameter space at most
1.1 (1 + 2K) / 3 times ``ew`` (one forward and K backwards; times the batches a step reads:
3 for MoDo and SDMGrad, whose twins read 3 as well); in representation space
(``--spaces``) at most 1.3x ``ew``; every balancer at least 2.5x its PyTorch twin.

    python benchmarks/bench_balancers.py [--steps 4] [--tasks 2,6] [--only uw,mgda]
        [--spaces parameters,representation]
        [--threads N] [--libmtl DIR] [--torch-rechub DIR] [--neighbour {busy,torch,membw}]
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELD_DIMS = (1202, 1530, 622, 3, 1243, 24, 17)  # as benchmarks/bench_backbones.py
BATCH = 2048


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=4, help="timed training steps per side")
    p.add_argument(
        "--rounds", type=int, default=2, help="timed rounds per side (the fastest counts)"
    )
    p.add_argument("--tasks", default="2,6", help="comma-separated task counts")
    p.add_argument("--only", help="comma-separated balancers (default: all)")
    p.add_argument(
        "--spaces",
        default="parameters",
        help="comma-separated spaces (parameters, representation); a balancer that cannot work "
        "in a space is left out there",
    )
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both sides")
    p.add_argument("--libmtl", help="a checkout of LibMTL's repository (default: installed)")
    p.add_argument("--torch-rechub", help="a checkout of torch-rechub (metabalance's twin)")
    p.add_argument(
        "--neighbour", choices=("busy", "torch", "membw"), help="a load beside the timed runs"
    )
    return p.parse_args()


ARGS = parse()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
import numpy as np  # noqa: E402
import torch  # noqa: E402

import rmtl  # noqa: E402
from rmtl import balancers  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests"))
import libmtl_driver  # noqa: E402
import neighbours  # noqa: E402
from libmtl_driver import CLASSES, LIBMTL_ARGS  # noqa: E402
from torch_reference import twin_of  # noqa: E402

torch.set_num_threads(ARGS.threads)
rmtl.set_num_threads(ARGS.threads)


def make_data(n: int, T: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sparse = np.stack([rng.integers(0, d, n) for d in FIELD_DIMS], 1).astype(np.int32)
    dense = np.zeros((n, 1), np.float32)
    labels = (rng.random((n, T)) < np.linspace(0.05, 0.3, T)).astype(np.float32)
    return sparse, dense, labels


def make_model(T: int) -> rmtl.models.Backbone:
    return rmtl.models.create("mmoe", field_dims=FIELD_DIMS, num_dense=1, num_tasks=T, seed=0)


def rmtl_timer(name: str, T: int, data, steps: int, space: str = "parameters"):
    """A function that times one round of ``steps`` training steps (seconds per step), after
    one untimed step."""
    model = make_model(T)
    b = balancers.create(name, T, space=space)
    n = steps * b.samples * BATCH
    rows = np.arange(n + b.samples * BATCH, dtype=np.int64) % len(data[0])
    kw = {"batch_size": BATCH, "lr": 1e-3, "weight_decay": 1e-6, "balancer": b}
    model.train_chunk(rows[: b.samples * BATCH], *data, **kw)

    def round_() -> float:
        t0 = time.perf_counter()
        model.train_chunk(rows[b.samples * BATCH :], *data, **kw)
        return (time.perf_counter() - t0) / steps

    return round_


def fastest(timers: dict) -> dict:
    """Each timer's fastest of ``--rounds`` rounds, the timers taking turns in every round
    (a load that comes and goes hits every side alike)."""
    best = dict.fromkeys(timers, math.inf)
    for _ in range(ARGS.rounds):
        for key, round_ in timers.items():
            best[key] = min(best[key], round_())
    return best


def reference_class(name: str, weighting):
    """LibMTL's class for ``name`` (or torch-rechub's MetaBalance as a LibMTL-style class),
    or None when the reference at hand lacks it."""
    if name == "metabalance":
        return metabalance_class()
    return getattr(weighting, CLASSES[name], None)


def metabalance_class():
    """torch-rechub's MetaBalance behind LibMTL's weighting interface (from ``--torch-rechub``
    or the installed torch-rechub), or None without either."""
    try:
        return libmtl_driver.metabalance_weighting(ARGS.torch_rechub)
    except ImportError:
        return None


def repository_runnable(weighting):
    """LibMTL's repository with the two stand-ins its classes need to run at all here (as the
    parity tests run them): ``torch.symeig`` for Aligned-MTL, and the representation branch of
    the ``autograd`` mode for ExcessMTL (without it its weights go NaN at the second step)."""
    torch.symeig = libmtl_driver.symeig
    excess = weighting.ExcessMTL
    excess._compute_grad = libmtl_driver.autograd_on_the_representation(excess._compute_grad)
    return weighting


def torch_timer(cls, name: str, T: int, data, steps: int, space: str):
    """:func:`rmtl_timer` for LibMTL's class ``cls`` balancing the PyTorch twin."""
    model = make_model(T)
    net = twin_of(model)
    samples = balancers.create(name, T).samples
    n_batches = (steps + 1) * samples
    batches = []
    for i in range(n_batches):
        lo = (i * BATCH) % len(data[0])
        s, d, y = (a[lo : lo + BATCH] for a in data)
        batches.append((torch.from_numpy(s).long(), torch.from_numpy(d), torch.from_numpy(y)))
    shared = model.shared_parameters()
    hyper = dict(LIBMTL_ARGS)
    kw = {"samples": samples, "rep_grad": space == "representation"}
    libmtl_driver.train(cls, net, batches[:samples], shared, hyper, steps=1, **kw)

    def round_() -> float:
        t0 = time.perf_counter()
        libmtl_driver.train(cls, net, batches[samples:], shared, hyper, steps=steps, **kw)
        return (time.perf_counter() - t0) / steps

    return round_


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    neighbour = neighbours.start(ARGS.neighbour) if ARGS.neighbour else None
    try:
        weighting = (
            repository_runnable(libmtl_driver.import_repository(ARGS.libmtl))
            if ARGS.libmtl
            else libmtl_driver.import_weighting()
        )
        names = ARGS.only.split(",") if ARGS.only else balancers.names()
        print(
            f"# rmtl {rmtl.__version__}, torch {torch.__version__}, {ARGS.threads} threads, "
            f"MMoE reference shape, batch {BATCH}, {ARGS.steps} steps, LibMTL "
            f"{ARGS.libmtl or 'installed (PyPI)'}, neighbour {ARGS.neighbour or 'none'}"
        )
        print(
            "| balancer | K | space | family | rmtl ms/step | x ew | target x ew | "
            "torch ms/step | rmtl speed-up | meets |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        cases = [
            (T, space, name)
            for T in (int(t) for t in ARGS.tasks.split(","))
            for space in ARGS.spaces.split(",")
            for name in names
            if space == "parameters" or name in balancers.representation_names()
        ]
        for T, space, name in cases:
            data = make_data(BATCH * 3 * (ARGS.steps + 2), T)
            b = balancers.create(name, T)
            family, samples = b.family, b.samples
            if family == "losses":
                target = 1.1
            else:  # a step of MoDo or SDMGrad reads 3 batches: 3 forwards, 3 K backwards
                target = 1.3 if space == "representation" else 1.1 * samples * (1 + 2 * T) / 3
            # ew timed beside each balancer and its twin, round by round
            timers = {"ew": rmtl_timer("ew", T, data, ARGS.steps)}
            if name != "ew":
                timers["ours"] = rmtl_timer(name, T, data, ARGS.steps, space)
            cls = reference_class(name, weighting)
            try:
                if cls is not None:
                    timers["theirs"] = torch_timer(cls, name, T, data, ARGS.steps, space)
            except ValueError:  # LibMTL 1.1.5's CAGrad runs for 3 tasks only
                pass
            best = fastest(timers)
            ew, theirs = best["ew"], best.get("theirs")
            ours = best.get("ours", ew)
            ratio = None if theirs is None else theirs / ours
            meets = ours / ew <= target and (ratio is None or ratio >= 2.5)
            print(
                f"| {name} | {T} | {space} | {family} | {ours * 1e3:.1f} | {ours / ew:.2f} | "
                f"{target:.2f} | {'-' if theirs is None else f'{theirs * 1e3:.1f}'} | "
                f"{'-' if ratio is None else f'{ratio:.2f}'} | {'yes' if meets else 'NO'} |",
                flush=True,
            )
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


if __name__ == "__main__":
    main()
