"""Session data: synthetic generation speed, oracle metrics of both presets, and loading
RetailRocket-format files of the real dataset's size (2.76M events, 20.3M property rows).

    python benchmarks/bench_data.py [--scale 1.0] [--keep DIR]

The load runs in a fresh process, so its peak memory (ru_maxrss) is the loader's own
(targets: under 60 s and 6 GB). There is no PyTorch equivalent of CSV loading or of the
generator, so no ratio is printed.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

import rmtl
from rmtl import metrics
from rmtl.datasets import synthetic, write_retailrocket

REAL_EVENTS, REAL_PROPERTY_ROWS, REAL_ITEMS = 2_756_101, 20_275_902, 417_053
SNAPSHOTS = 4

LOAD = """
import sys, time, resource
import rmtl
t0 = time.perf_counter()
d = rmtl.datasets.load_retailrocket(sys.argv[1])
t = time.perf_counter() - t0
print(len(d), d.num_sessions, t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def generation() -> None:
    for preset, users in (("retailrocket", 70_000), ("kuairand", 17_000)):
        t0 = time.perf_counter()
        d = synthetic(preset, n_users=users)
        dt = time.perf_counter() - t0
        print(
            f"generate {preset}: {len(d):,} impressions in {dt:.2f} s "
            f"({len(d) / dt / 1e6:.2f} M/s, calibration included)"
        )


def oracle() -> None:
    for preset in ("retailrocket", "kuairand"):
        d = synthetic(preset)
        for k, name in enumerate(d.task_names):
            print(
                f"oracle {preset} default ({len(d):,} rows) {name}: "
                f"rate {d.labels[:, k].mean():.4f} "
                f"AUC {metrics.oracle_auc(d.truth[:, k]):.4f} "
                f"logloss {metrics.oracle_logloss(d.truth[:, k]):.4f}"
            )


def real_size(directory: str, scale: float) -> None:
    # about 1.06 events per impression (views + addtocarts + transactions)
    users = int(178_000 * scale)
    t0 = time.perf_counter()
    d = synthetic("retailrocket", n_users=users, n_items=int(REAL_ITEMS * scale))
    items = np.unique(d.item).size
    present = (d.sparse > 0).sum() / len(d)  # fields per item with a value (about)
    extra = max(0, round(REAL_PROPERTY_ROWS * scale / (SNAPSHOTS * items) - present))
    write_retailrocket(d, directory, snapshots=SNAPSHOTS, extra_properties=extra)
    events = sum(1 for _ in open(os.path.join(directory, "events.csv"))) - 1
    props = sum(
        sum(1 for _ in open(os.path.join(directory, f))) - 1
        for f in ("item_properties_part1.csv", "item_properties_part2.csv")
    )
    size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
    print(
        f"wrote {events:,} events, {props:,} property rows ({size / 1e9:.2f} GB) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    out = subprocess.run(
        [sys.executable, "-c", LOAD, directory], capture_output=True, text=True, check=True
    ).stdout.split()
    rows, sessions, secs, rss_kb = int(out[0]), int(out[1]), float(out[2]), int(out[3])
    print(
        f"load_retailrocket: {rows:,} rows, {sessions:,} sessions in {secs:.1f} s, "
        f"peak memory {rss_kb / 1024**2:.2f} GB (targets: 60 s, 6 GB)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the real dataset's size")
    ap.add_argument("--keep", metavar="DIR", help="write the files here and keep them")
    args = ap.parse_args()
    print(f"rmtl {rmtl.__version__}, {os.cpu_count()} cores, {rmtl.get_num_threads()} threads")
    generation()
    oracle()
    if args.keep:
        real_size(args.keep, args.scale)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            real_size(tmp, args.scale)
    print(
        "benchmark peak memory "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB"
    )


if __name__ == "__main__":
    main()
