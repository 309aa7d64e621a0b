"""RMTL against its baselines on the synthetic RetailRocket preset: ESMM, MMoE and PLE with and
without RMTL over several seeds, plus transfer (ESMM's critics weighting MMoE's fine-tuning),
summarised by rmtl.experiment (means, stds, paired differences and paired t-test p-values of
test AUC, logloss and s-logloss per task) with the oracle AUC of the true probabilities.

Small networks and a capped number of epochs keep the whole run to minutes on 2 cores; the
configuration is printed with the table.

    python benchmarks/experiment_rmtl.py [--users 15000] [--seeds 5] [--critic-epochs 4]
        [--epochs 20] [--checkpoint-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import time

import rmtl

NET = dict(embed_dim=16, bottom_dims=(64, 32), tower_dims=(32, 16), dropout=0.2)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--users", type=int, default=15000, help="users of the synthetic retailrocket preset"
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..n-1 (models, batches, critics)")
    p.add_argument(
        "--critic-epochs", type=int, default=4, help="stage-2 passes over the replay buffer"
    )
    p.add_argument(
        "--epochs", type=int, default=20, help="cap of stages 1 and 3 (early stopping, patience 2)"
    )
    p.add_argument("--checkpoint-dir", default=None, help="resume an interrupted run from here")
    args = p.parse_args()
    t0 = time.perf_counter()
    data = rmtl.datasets.synthetic("retailrocket", n_users=args.users, seed=0)
    train, valid, test = data.split()
    rmtl_kwargs = dict(
        critic_bottom_dims=NET["bottom_dims"],
        critic_tower_dims=NET["tower_dims"],
        critic_epochs=args.critic_epochs,
        epochs=args.epochs,
    )
    res = rmtl.experiment(
        train,
        valid,
        test,
        backbones=("esmm", "mmoe", "ple"),
        seeds=range(args.seeds),
        weightings=("rmtl",),
        transfer=(("esmm", "mmoe"),),
        backbone_kwargs=NET,
        rmtl_kwargs=rmtl_kwargs,
        checkpoint_dir=args.checkpoint_dir,
    )
    print(
        f"synthetic retailrocket, {args.users} users: {len(data)} rows in "
        f"{len(data.offsets) - 1} sessions "
        f"(train/valid/test {len(train)}/{len(valid)}/{len(test)}); label rates "
        f"{', '.join(f'{t} {r:.4f}' for t, r in zip(data.task_names, data.labels.mean(0)))}"
    )
    print("config:", json.dumps({k: v for k, v in res.config.items() if k != "rows"}))
    print(res.to_markdown())
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
