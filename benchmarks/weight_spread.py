"""How much RMTL's stage-3 weights ``1 - lam Q`` vary across rows as the critics train longer:
the coefficient of variation (std / mean) of each task's weights on the test split, at the
pretrained model's predictions, after each listed number of critic epochs (ESMM, the quick
widths of ``rmtl run``, the synthetic RetailRocket preset).

    python benchmarks/weight_spread.py [--n-users 5000] [--seed 0] [--epochs 4 96 400]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import rmtl
from rmtl.lab.settings import PRESETS


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n-users", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--epochs", type=int, nargs="+", default=[4, 96, 400], help="critic epochs to report at"
    )
    args = p.parse_args()
    train, valid, test = rmtl.datasets.synthetic(
        "retailrocket", n_users=args.n_users, seed=0
    ).split((0.6, 0.2, 0.2))
    quick = PRESETS["quick"]
    model = rmtl.models.create(
        "esmm",
        train.field_dims,
        train.num_dense,
        train.num_tasks,
        seed=args.seed,
        **quick["backbone"],
    )
    agent = rmtl.RMTL(
        model,
        seed=args.seed,
        progress=False,
        min_steps=500,
        **{k: v for k, v in quick["rmtl"].items() if k != "critic_epochs"},
    )
    agent.pretrain(train, valid)
    prob = agent.pretrained.predict(test.sparse, test.dense)
    print(
        "| critic epochs | "
        + " | ".join(f"{t} weight mean | {t} CV" for t in test.task_names)
        + " | seconds |"
    )
    print("|---:|" + "---:|---:|" * test.num_tasks + "---:|")
    t0 = time.perf_counter()
    for epochs in sorted(args.epochs):
        agent.fit_critics(train, epochs=epochs)
        w = agent.loss_weights(test, prob).astype(np.float64)
        cells = [
            f"{w[:, k].mean():.3f} | {w[:, k].std() / w[:, k].mean():.1%}"
            for k in range(test.num_tasks)
        ]
        print(
            f"| {epochs} | " + " | ".join(cells) + f" | {time.perf_counter() - t0:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
