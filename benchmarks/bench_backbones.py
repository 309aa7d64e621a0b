"""Training and prediction throughput of all eight backbones, rmtl against PyTorch.

Reference hyperparameters (those of the authors' code, rmtl's defaults): embed 128, bottom
(512, 256), tower (128, 64), 8 experts, dropout 0.2, batch 2048, Adam (lr 1e-3, weight decay
1e-6), 2 tasks, 7 categorical fields with cardinalities like RetailRocket's processed item
fields plus one dense feature. The PyTorch models are the twins in tests/torch_reference.py,
built as the authors' modules build them (one Linear per expert), run with the same thread
count on the same data. The script also measures numpy.matmul's float32 rate and prints rmtl's
training FLOP rate (matrix products only) as a fraction of it.

Per backbone it reports rmtl's training speed with its first layers chosen automatically
(over each field's distinct codes in the batch where that pays), with the plain products
(`first_layer="plain"`, the path before issue 14; the two timed in turn, twice each) and with
one thread; the fraction of the reference's training FLOPs (every product over the batch's
rows, AITM's h1..h3 applied to both positions) the automatic path does; prediction against
torch; and the peak resident memory each side adds in a fresh process building the backbone
and taking 2 training steps (Linux). `--neighbour` runs a load beside
the timed runs (benchmarks/neighbours.py, nice 10); `--high-cardinality` adds a field of
1,000,000 codes (an item id: nearly every code distinct in a batch). `--torch-first` imports
torch before rmtl; `--import-order` instead runs the benchmark twice, each in a fresh process
(rmtl imported first, then torch first), and prints rmtl's training speed in both.

    python benchmarks/bench_backbones.py [--steps 6] [--threads N] [--only mmoe,ple]
        [--neighbour {busy,torch,membw}] [--high-cardinality] [--torch-first | --import-order]
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# RetailRocket-like cardinalities of the 7 item fields (785, 591, 814, available,
# categoryid, 364, 776) after the recipe of rmtl.datasets.load_retailrocket (its docstring);
# the long-tail 364 and 776 are cut at 20% cumulative frequency, hence small
FIELD_DIMS = (1202, 1530, 622, 3, 1243, 24, 17)
HIGH_CARDINALITY = 1_000_000
NEIGHBOURS = ("busy", "torch", "membw")
NAMES = ("singletask", "sharedbottom", "esmm", "omoe", "mmoe", "ple", "ple_paper", "aitm")
BATCH = 2048


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--steps", type=int, default=6, help="timed training steps (and prediction batches x 4)"
    )
    p.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="threads for rmtl, numpy and torch"
    )
    p.add_argument("--only", default=",".join(NAMES), help="comma-separated backbones")
    p.add_argument(
        "--neighbour", choices=NEIGHBOURS, help="a load run beside the timed runs, at nice 10"
    )
    p.add_argument(
        "--high-cardinality", action="store_true", help=f"add a field of {HIGH_CARDINALITY:,} codes"
    )
    order = p.add_mutually_exclusive_group()
    order.add_argument("--torch-first", action="store_true", help="import torch before rmtl")
    order.add_argument(
        "--import-order",
        action="store_true",
        help="rmtl's training speed with rmtl imported first and with torch first, a process each",
    )
    p.add_argument(
        "--peak-memory-of", help=argparse.SUPPRESS
    )  # internal: "rmtl:<name>" or "torch:<name>"
    return p.parse_args()


ARGS = parse()
DIMS = FIELD_DIMS + ((HIGH_CARDINALITY,) if ARGS.high_cardinality else ())
# thread counts and OpenBLAS's idle spin are read when the libraries load, so set them first
# (numpy's own OpenBLAS must not spin after the ceiling measurement)
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
if ARGS.torch_first:
    import torch  # noqa: F401  (before rmtl; --import-order compares)
import numpy as np  # noqa: E402
import torch  # noqa: E402

import rmtl  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests"))
import neighbours  # noqa: E402
from torch_reference import TWINS, twin_of, weighted_bce  # noqa: E402

torch.set_num_threads(ARGS.threads)


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sparse = np.stack([rng.integers(0, d, n) for d in DIMS], 1).astype(np.int32)
    dense = np.zeros((n, 1), np.float32)  # the authors' dummy numerical feature
    click = rng.random(n) < 0.05
    labels = np.stack([click, click & (rng.random(n) < 0.2)], 1).astype(np.float32)
    return sparse, dense, labels


def matmul_rate(seconds: float = 1.5) -> float:
    """Best float32 numpy.matmul rate (FLOP/s) over shapes like the backbones' products."""
    best = 0.0
    rng = np.random.default_rng(1)
    for m, k, n in ((2048, 1024, 4096), (2048, 1024, 512), (2048, 512, 2048)):
        a = rng.standard_normal((m, k), np.float32)
        b = rng.standard_normal((k, n), np.float32)
        np.matmul(a, b)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            np.matmul(a, b)
            reps += 1
        best = max(best, 2.0 * m * k * n * reps / (time.perf_counter() - t0))
    return best


def train_flops(model: rmtl.models.Backbone, batch: int) -> float:
    """Matrix-product FLOPs of one training step: forward, input and weight gradients."""
    c = model.config
    total = 0.0
    for name, w in model.named_parameters():
        if w.ndim != 2 or name.startswith("embedding"):
            continue
        uses = 1
        if c.name == "aitm" and name[:2] in ("h1", "h2", "h3"):
            uses = 2 * (c.num_tasks - 1)  # applied to both positions of every transfer
        uses *= _ple_uses(c, name)
        passes = 2 if name.startswith("numerical_layer") else 3  # no input gradient there
        total += 2.0 * batch * w.shape[0] * w.shape[1] * passes * uses
    return total


def _ple_uses(c: rmtl.models.BackboneConfig, name: str) -> int:
    """How often rmtl's training step applies a PLE weight: the authors' shared experts past
    level 0 once per task stream, the gates nothing reads (the authors' shared stream, the
    paper's last shared gate) never; 1 otherwise."""
    if c.name == "ple_paper":
        return 0 if name.startswith(f"share_gates.{len(c.bottom_dims) - 1}.") else 1
    parts = name.split(".")
    if c.name != "ple" or parts[0] not in ("expert", "gate"):
        return 1
    level, index = int(parts[1]), int(parts[2])
    if parts[0] == "gate":
        return 0 if index == c.num_tasks else 1
    return c.num_tasks if level > 0 and index >= c.num_tasks * (c.num_experts // 2) else 1


def first_layer_flops(
    model: rmtl.models.Backbone, rows: list[int], batch: int, distinct_fold: bool
) -> float:
    """Matrix-product FLOPs of one training step's first layers over the embedding and of the
    numerical layer (forward, input and weight gradients) when field f runs over rows[f] rows
    (its distinct codes or the batch), and the numerical layer's block either over the batch
    or folded into each distinct first layer (forward x (W_c w)^T, backward dout^T x and the
    folded weights' gradients)."""
    c = model.config
    E, F, D = c.embed_dim, len(c.field_dims), c.num_dense
    total = 0.0
    for name, w in model.named_parameters():
        if name.startswith("numerical_layer") and w.ndim == 2 and not distinct_fold:
            total += 2.0 * batch * E * D * 2  # its own forward and weight gradient
        elif w.ndim == 2 and w.shape[1] == (F + 1) * E and not name.startswith("embedding"):
            out = w.shape[0]
            total += 2.0 * out * E * sum(rows) * 3
            total += (
                2.0 * out * (2 * batch * D + 3 * E * D + 3 * E)
                if distinct_fold
                else 2.0 * out * E * batch * 3
            )
    return total


def attention_flops(model: rmtl.models.Backbone, batch: int, ours: bool) -> float:
    """Matrix-product FLOPs of one training step's AITM attentions (0 for other backbones):
    h1..h3 applied to both positions of every transfer with their gradients (18 products of
    (batch, d, d) per transfer), or rmtl's way without applying them (7 of those and 3 of
    (d, d, d); csrc/experts.c)."""
    c = model.config
    if c.name != "aitm":
        return 0.0
    d = c.bottom_dims[-1]
    per = 7.0 * batch * d * d + 3.0 * d**3 if ours else 18.0 * batch * d * d
    return 2.0 * per * (c.num_tasks - 1)


def memory_kb(key: str) -> int:
    """VmRSS or VmHWM (peak) of this process in kB; 0 where /proc is absent."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
    except (OSError, StopIteration):
        return 0


def peak_memory(side: str, name: str) -> float:
    """MB of resident memory a fresh process adds at its peak while `side` ("rmtl" or "torch")
    builds the backbone and takes 2 training steps (Linux; 0 elsewhere)."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--peak-memory-of",
        f"{side}:{name}",
        "--threads",
        str(ARGS.threads),
    ] + (["--high-cardinality"] if ARGS.high_cardinality else [])
    run = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(run.stdout.split()[-1])


def report_peak_memory(spec: str) -> None:
    """The child side of peak_memory: prints the MB."""
    side, name = spec.split(":")
    data = make_data(BATCH * 2)
    gc.collect()
    base = memory_kb("VmRSS")
    if side == "rmtl":
        time_train(rmtl.models.create(name, DIMS, 1, 2, seed=0), data, 1)
    else:
        time_torch(
            TWINS[name](
                list(DIMS),
                1,
                2,
                128,
                [512, 256],
                [128, 64],
                0.2,
                **({"num_experts": 8} if name in ("omoe", "mmoe", "ple", "ple_paper") else {}),
            ),
            data,
            1,
            predict=False,
        )
    print((memory_kb("VmHWM") - base) / 1024)


def time_train(model, data, steps: int) -> float:
    sparse, dense, labels = data
    rows = np.arange(BATCH * steps, dtype=np.int64)
    opt = dict(batch_size=BATCH, lr=1e-3, weight_decay=1e-6)
    model.train()
    model.train_chunk(rows[:BATCH], sparse, dense, labels, **opt)  # warm-up, buffers
    t0 = time.perf_counter()
    model.train_chunk(rows, sparse, dense, labels, **opt)
    return len(rows) / (time.perf_counter() - t0)


def time_rmtl(model, data, steps: int) -> dict:
    """Training speed with automatic and with plain first layers (timed automatic, plain, plain,
    automatic, each the mean of its two: a drift over the four windows cancels), then with
    automatic first layers on one thread; the rows per field of the last automatic step and
    whether the distinct first layer folded the numerical layer; prediction speed"""
    speed = {"auto": [], "plain": []}
    for mode in ("auto", "plain", "plain", "auto"):
        model.first_layer = mode
        speed[mode].append(time_train(model, data, steps))
    out = {
        "train": np.mean(speed["auto"]),
        "train_plain": np.mean(speed["plain"]),
        "rows": model._core.first_layer_rows,
        "distinct_fold": model._core.distinct_fold,
    }
    rmtl.set_num_threads(1)
    out["train_1"] = time_train(model, data, steps)
    rmtl.set_num_threads(ARGS.threads)
    sparse, dense, _ = data
    n = BATCH * steps * 4
    model.predict(sparse[:BATCH], dense[:BATCH], batch_size=BATCH)
    t0 = time.perf_counter()
    model.predict(sparse[:n], dense[:n], batch_size=BATCH)
    out["pred"] = n / (time.perf_counter() - t0)
    return out


def time_torch(net, data, steps: int, predict: bool = True):
    sparse, dense, labels = (torch.from_numpy(a) for a in data)
    sparse = sparse.long()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-6)

    def step(i):
        s = slice(i * BATCH, (i + 1) * BATCH)
        opt.zero_grad()
        weighted_bce(net(sparse[s], dense[s]), labels[s]).backward()
        opt.step()

    net.train()
    step(0)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    train = BATCH * steps / (time.perf_counter() - t0)
    if not predict:
        return train, None
    net.eval()
    n_batches = steps * 4
    with torch.no_grad():
        net(sparse[:BATCH], dense[:BATCH])
        t0 = time.perf_counter()
        for i in range(n_batches):
            net(sparse[i * BATCH : (i + 1) * BATCH], dense[i * BATCH : (i + 1) * BATCH])
    return train, BATCH * n_batches / (time.perf_counter() - t0)


def compare_import_order() -> None:
    """The benchmark in two fresh processes, rmtl imported first and torch first: rmtl's
    training speed in each (the torch columns are the same code either way)."""
    args = [a for a in sys.argv[1:] if a != "--import-order"]
    speeds = {}
    for label, extra in (("rmtl first", []), ("torch first", ["--torch-first"])):
        run = subprocess.run(
            [sys.executable, os.path.abspath(__file__)] + args + extra,
            capture_output=True,
            text=True,
            check=True,
        )
        print(f"# {label}\n{run.stdout}", end="", flush=True)
        rows = [
            line.split()
            for line in run.stdout.splitlines()
            if line.split()[:1] and line.split()[0] in NAMES
        ]
        speeds[label] = {r[0]: (float(r[1]), float(r[3])) for r in rows}
    print(
        f"{'backbone':<13}{'rmtl first/s':>13}{'torch first/s':>14}{'ratio':>7}"
        f"{'1 thr':>8}{'1 thr':>8}"
    )
    for name, (train, one) in speeds["rmtl first"].items():
        t_train, t_one = speeds["torch first"][name]
        print(
            f"{name:<13}{train:>13.0f}{t_train:>14.0f}{t_train / train:>7.2f}"
            f"{one:>8.0f}{t_one:>8.0f}"
        )


def main() -> None:
    names = [n.strip() for n in ARGS.only.split(",") if n.strip()]
    data = make_data(BATCH * ARGS.steps * 4)
    ceiling = matmul_rate()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the neighbour
    neighbour = neighbours.start(ARGS.neighbour) if ARGS.neighbour else None
    print(
        f"threads {ARGS.threads}, torch {torch.__version__}, "
        f"rmtl gemm {rmtl.blas_info()['backend']}, "
        f"batch {BATCH}, {ARGS.steps} training steps, {ARGS.steps * 4} prediction batches, "
        f"field dims {DIMS}, neighbour {ARGS.neighbour or 'none'}"
    )
    print(
        f"numpy.matmul float32 ceiling: {ceiling / 1e9:.1f} GFLOP/s (measured before any neighbour)"
    )
    head = (
        f"{'backbone':<13}{'rmtl train/s':>13}{'plain/s':>9}{'1 thr/s':>9}"
        f"{'torch train/s':>14}{'ratio':>7}"
        f"{'N/1 thr':>8}{'rmtl pred/s':>12}{'torch pred/s':>13}{'ratio':>7}"
        f"{'FLOPs':>7}{'GFLOP/s':>9}"
        f"{'of ceil':>8}{'rmtl MB':>8}{'torch MB':>9}"
    )
    print(head)
    try:
        for name in names:
            model = rmtl.models.create(name, DIMS, 1, 2, seed=0)
            r = time_rmtl(model, data, ARGS.steps)
            plain = train_flops(model, BATCH)
            ours = (
                plain
                - first_layer_flops(model, [BATCH] * len(DIMS), BATCH, False)
                + first_layer_flops(model, list(r["rows"]), BATCH, r["distinct_fold"])
                - attention_flops(model, BATCH, False)
                + attention_flops(model, BATCH, True)
            )
            t_train, t_pred = time_torch(twin_of(model), data, ARGS.steps)
            del model
            gc.collect()
            r_mb, t_mb = peak_memory("rmtl", name), peak_memory("torch", name)
            rate = ours * r["train"] / BATCH
            print(
                f"{name:<13}{r['train']:>13.0f}{r['train_plain']:>9.0f}{r['train_1']:>9.0f}{t_train:>14.0f}"
                f"{r['train'] / t_train:>7.2f}{r['train'] / r['train_1']:>8.2f}"
                f"{r['pred']:>12.0f}{t_pred:>13.0f}"
                f"{r['pred'] / t_pred:>7.2f}{ours / plain:>7.0%}"
                f"{rate / 1e9:>9.1f}{rate / ceiling:>8.0%}"
                f"{r_mb:>8.0f}{t_mb:>9.0f}",
                flush=True,
            )
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


if __name__ == "__main__":
    if ARGS.peak_memory_of:
        report_peak_memory(ARGS.peak_memory_of)
    elif ARGS.import_order:
        compare_import_order()
    else:
        main()
