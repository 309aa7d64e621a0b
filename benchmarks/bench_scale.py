"""The same experiment serially, in 2 local processes and on a 2-CPU Ray cluster, in one run.

The experiment: the quick preset (embed 16, bottom (64, 32), tower (32, 16), 12 epochs with
early stopping, 4 critic epochs) on the synthetic RetailRocket data, ESMM and MMoE each with
RMTL, 4 seeds: 16 jobs (stage 1, stage 2, stage 3 per seed and backbone). Runs:

- serial: one job after another in this process, with 2 threads (OpenMP and BLAS);
- ``--processes 2``: 2 spawned worker processes with 1 thread each (the data sent once to each);
- Ray: a local cluster of 2 CPUs (started before the clock runs), 1 CPU and thread per task.

For each: wall time, speed-up over serial, the time spent inside jobs (summed over jobs), and
per job the slot time not spent in a job: (wall x slots - job time) / jobs, i.e. scheduling,
moving networks and data, and waiting for dependencies at the end of the graph. Also the
round trip of an empty Ray task, and whether the records agree: --processes 2 and Ray (1 thread
per job both) bit for bit; serial (2 threads) to rounding (OpenBLAS's sums depend on its
thread count).

    python benchmarks/bench_scale.py [--seeds 4] [--users 5000] [--models esmm mmoe]
"""

from __future__ import annotations

import argparse
import os
import time

from neighbours import cpu_model


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1")
    p.add_argument("--users", type=int, default=5000, help="users of the synthetic data")
    p.add_argument(
        "--models", nargs="+", default=["esmm", "mmoe"], help="backbones, each with RMTL"
    )
    return p.parse_args()


def main() -> None:
    args = parse()
    import numpy as np
    import ray

    import rmtl
    from rmtl.lab.executors import executor_for
    from rmtl.lab.graph import Settings, graph, run_graph
    from rmtl.lab.settings import PRESETS, RunConfig
    from rmtl.lab.units import execute

    data = rmtl.datasets.synthetic("retailrocket", n_users=args.users, seed=0).split(
        (0.6, 0.2, 0.2)
    )
    jobs = graph(args.models, args.models, range(args.seeds), ("rmtl",), ())
    settings = Settings(PRESETS["quick"]["backbone"], RunConfig().resolved().rmtl_config())
    print(
        f"{len(jobs)} jobs: {args.models} with RMTL, {args.seeds} seeds, "
        f"{len(data[0])} training rows; "
        f"{cpu_model()}, load average {os.getloadavg()[0]:.1f} at start"
    )

    def timed(name: str, executor, slots: int) -> dict:
        t0 = time.perf_counter()
        outputs = run_graph(jobs, settings, executor_for(executor, execute, data, None))
        wall = time.perf_counter() - t0
        busy = sum(o.seconds for o in outputs.values())
        print(f"  {name}: {wall:.1f} s", flush=True)
        return {
            "name": name,
            "wall": wall,
            "busy": busy,
            "idle": (wall * slots - busy) / len(jobs),
            "records": [r for j in jobs for r in outputs[j].records],
        }

    runs = [timed("serial, 2 threads", None, 1), timed("--processes 2, 1 thread each", 2, 2)]
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter() - t0
    empty = ray.remote(lambda: None)
    ray.get([empty.remote() for _ in range(20)])  # workers up
    t0 = time.perf_counter()
    for _ in range(50):
        ray.get(empty.remote())
    round_trip = (time.perf_counter() - t0) / 50
    runs.append(timed("Ray, 2 CPUs, 1 per task", "ray", 2))
    ray.shutdown()

    serial = runs[0]["wall"]
    print()
    print("| run | wall s | speed-up | time in jobs s | slot time outside jobs per job s |")
    print("|---|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['name']} | {r['wall']:.1f} | {serial / r['wall']:.2f}x "
            f"| {r['busy']:.1f} | {r['idle']:.2f} |"
        )
    jobs2, on_ray = runs[1], runs[2]
    auc = lambda r: np.array([x["auc"] for x in r["records"]])  # noqa: E731
    print()
    print(
        f"Ray cluster start {started:.1f} s (not in the wall time); empty Ray task round trip "
        f"{round_trip * 1e3:.1f} ms"
    )
    print(
        f"Ray / --processes 2 wall: {on_ray['wall'] / jobs2['wall']:.3f} (target <= 1.10); "
        "parallel speed-ups "
        f"{serial / jobs2['wall']:.2f}x and {serial / on_ray['wall']:.2f}x (target >= 1.3x)"
    )
    print(
        f"records: --processes 2 == Ray bit for bit: {jobs2['records'] == on_ray['records']}; "
        "serial (2 threads) vs "
        "--processes 2 (1 thread): max |AUC difference| "
        f"{np.abs(auc(runs[0]) - auc(jobs2)).max():.2e}"
    )
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
