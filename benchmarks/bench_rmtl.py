"""RMTL's stage 2 (critic training) and a whole three-stage run: rmtl against PyTorch.

Part 1, critic training: transitions per second of stage-2 steps at the reference
hyperparameters (embed 128, critics with bottom (512, 256) and tower (128, 64), dropout 0.2,
batch 2048, 2 tasks, an ESMM actor target, the code's TD3-like target with clipped target
noise, soft update every 2 steps), rmtl's C loop against the same step written in PyTorch
with the twins of tests/torch_reference.py. Both gather minibatches from the same
transitions by row index, same thread count.

Part 2, pipeline: ``rmtl.RMTL(...).fit(train, valid)`` (pretrain, fill the replay buffer,
train critics, weighted fine-tuning, each epoch followed by a validation AUC) against the
same three stages in PyTorch (NumPy for the transitions, vectorised), with fixed epoch
counts and no early stopping so both do the same work, on the synthetic RetailRocket preset.

Each part is timed in ``--repeat`` rounds, the two sides taking turns to go first, and the
ratio is that of the medians (each round's ratio printed too): on the 2-core virtual machines
this was measured on, one CPU at times runs at half speed for tens of seconds (its host core
shared), long enough to swallow rmtl's 3-second pipeline whole, and a single timing of each
side then reports that spell, not the code. rmtl runs on its own thread pool, so importing
torch first does not slow it (bench_backbones.py --import-order measures that).

    python benchmarks/bench_rmtl.py [--steps 8] [--threads N] [--users 40000] [--repeat 3]
        [--skip-pipeline]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELD_DIMS = (1202, 1530, 622, 3, 1243, 24, 17)  # RetailRocket-like, as bench_backbones.py
BATCH = 2048


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=8, help="timed stage-2 steps per side")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for rmtl and torch")
    p.add_argument(
        "--users", type=int, default=40000, help="pipeline: users of the synthetic preset"
    )
    p.add_argument(
        "--epochs", type=int, default=2, help="pipeline: epochs of stages 1 and 3, and of stage 2"
    )
    p.add_argument("--repeat", type=int, default=3, help="rounds per part, the sides alternating")
    p.add_argument("--skip-pipeline", action="store_true", help="only part 1")
    args = p.parse_args()
    for name in ("steps", "threads", "users", "epochs", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name}: expected at least 1, got {getattr(args, name)}")
    return args


# Thread counts and OpenBLAS's idle spin are read when the libraries load, so they are set
# before anything is imported.
ARGS = parse()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
import numpy as np  # noqa: E402

import rmtl  # noqa: E402
from rmtl import _core  # noqa: E402

GAMMA, TAU, NOISE, CLIP = 0.9, 0.2, 0.4, 3e-3


# ---------------------------------------------------------------- part 1: critic training
def transitions(n: int, seed: int = 0):
    """Random sessions of 5 rows over RetailRocket-like codes: features, labels, and
    transitions (state row, next row, uniform action, BCE reward, done)."""
    rng = np.random.default_rng(seed)
    sparse = np.stack([rng.integers(0, d, n) for d in FIELD_DIMS], 1).astype(np.int32)
    dense = np.zeros((n, 1), np.float32)
    click = rng.random(n) < 0.05
    labels = np.stack([click, click & (rng.random(n) < 0.2)], 1).astype(np.float32)
    rows = np.arange(n)
    done = (rows % 5 == 4).astype(np.float32)
    nxt = np.where(done > 0, rows, rows + 1)
    action = rng.random((n, 2)).astype(np.float32)
    reward = labels * np.log(np.clip(action, 1e-4, 1)) + (1 - labels) * np.log(
        np.clip(1 - action, 1e-4, 1)
    )
    return (sparse, dense, labels), (rows, nxt, action, reward.astype(np.float32), done)


def minibatches(n: int, steps: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(n, BATCH, replace=False) for _ in range(steps)])


def rmtl_stage2(data, trans, picks) -> float:
    """Seconds per step of rmtl's C loop (one call for all timed steps, after a warm-up call)."""
    sparse, dense, labels = data
    rows, nxt, action, reward, done = trans
    actor = rmtl.models.ESMM(FIELD_DIMS, 1, 2, seed=0).eval()
    critics = [rmtl.Critic(FIELD_DIMS, 1, seed=k).train() for k in range(2)]
    for c in critics:
        c.copy_embedding(actor)
    targets = [c.clone() for c in critics]
    adam = (1e-3, 0.9, 0.999, 1e-8, 0.0)
    cfg = dict(
        gamma=GAMMA,
        td3=True,
        noise_std=NOISE,
        noise_clip=CLIP,
        ips=False,
        tau=TAU,
        soft_update_freq=2,
        actor_update=False,
        actor_update_freq=1,
        init_training_step=0,
        seed=7,
        critic_adam=adam,
        actor_adam=adam,
    )

    def run(idx, step):
        flat = idx.ravel()
        _core.td_chunk(
            actor=actor._core,
            actor_target=actor.clone()._core,
            critics=[c._core for c in critics],
            targets=[t._core for t in targets],
            state=rows[flat],
            next=nxt[flat],
            action=action[flat],
            reward=reward[flat],
            done=done[flat],
            sparse=sparse,
            dense=dense,
            labels=labels,
            batch_size=BATCH,
            step=step,
            **cfg,
        )

    run(picks[:1], 0)
    t0 = time.perf_counter()
    run(picks[1:], 1)
    return (time.perf_counter() - t0) / (len(picks) - 1)


def torch_td_step(actor_target, critics, targets, opts, x, x_next, a, r, done, step):
    """One stage-2 step as the authors' TD3 agent takes it, per task: target actions with
    clipped noise, the min-of-two TD target, an Adam step; soft updates every 2 steps."""
    with torch.no_grad():
        na = actor_target(*x_next)
        na = na + torch.clamp(torch.randn_like(na) * NOISE, -CLIP, CLIP)
    for k, (q, qt, opt) in enumerate(zip(critics, targets, opts)):
        loss = td_loss(q, qt, x, a[:, k], x_next, na[:, k], r[:, k], done, None, GAMMA, True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if step % 2 == 0:
        for q, qt in zip(critics, targets):
            soft_update(qt, q, TAU)


def torch_stage2(data, trans, picks) -> float:
    sparse, dense, labels = (torch.from_numpy(a) for a in data)
    sparse = sparse.long()
    rows, nxt, action, reward, done = (torch.from_numpy(np.asarray(a)) for a in trans)
    actor = twin_of(rmtl.models.ESMM(FIELD_DIMS, 1, 2, seed=0)).eval()
    critics = [
        CriticNeg(list(FIELD_DIMS), 1, 128, [512, 256], [128, 64], 0.2).train() for _ in range(2)
    ]
    targets = [copy.deepcopy(c) for c in critics]
    opts = [torch.optim.Adam(c.parameters(), lr=1e-3) for c in critics]

    def step(idx, s):
        i = torch.from_numpy(idx)
        j = nxt[i]
        torch_td_step(
            actor,
            critics,
            targets,
            opts,
            (sparse[i], dense[i]),
            (sparse[j], dense[j]),
            action[i],
            reward[i],
            done[i],
            s,
        )

    step(picks[0], 0)
    t0 = time.perf_counter()
    for s, idx in enumerate(picks[1:], 1):
        step(idx, s)
    return (time.perf_counter() - t0) / (len(picks) - 1)


# ---------------------------------------------------------------- part 2: three stages
# the experiment's small configuration (benchmarks/RESULTS.md) so the run takes minutes
NET = dict(embed_dim=16, bottom_dims=(64, 32), tower_dims=(32, 16), dropout=0.2)
CRITIC = dict(critic_bottom_dims=(64, 32), critic_tower_dims=(32, 16), critic_dropout=0.2)
LR, WD, LAM = 1e-3, 1e-6, 0.7


def torch_epoch(net, opt, data, rng, weigh=None) -> None:
    """One shuffled pass of Adam steps on the (optionally critic-weighted) mean BCE."""
    sparse, dense, labels = data
    net.train()
    order = rng.permutation(len(labels))
    for start in range(0, len(order), BATCH):
        i = torch.from_numpy(order[start : start + BATCH])
        x = (sparse[i], dense[i])
        prob = net(*x)
        w = None if weigh is None else weigh(x, prob)
        opt.zero_grad()
        weighted_bce(prob, labels[i], w).backward()
        opt.step()


def torch_valid_auc(net, data) -> float:
    sparse, dense, labels = data
    net.eval()
    with torch.no_grad():
        prob = torch.cat(
            [net(sparse[s : s + 16384], dense[s : s + 16384]) for s in range(0, len(labels), 16384)]
        )
    return float(
        np.mean(
            [
                rmtl.metrics.auc(labels[:, k].numpy(), prob[:, k].numpy())
                for k in range(prob.shape[1])
            ]
        )
    )


def torch_pipeline(train, valid, epochs: int) -> float:
    """The three stages in PyTorch: the same models, steps and evaluations as RMTL.fit."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)

    def as_t(d):
        return (
            torch.from_numpy(d.sparse).long(),
            torch.from_numpy(d.dense),
            torch.from_numpy(d.labels),
        )  # noqa: E731

    tr, va = as_t(train), as_t(valid)
    args = (
        list(train.field_dims),
        train.num_dense,
        train.num_tasks,
        NET["embed_dim"],
        list(NET["bottom_dims"]),
        list(NET["tower_dims"]),
        NET["dropout"],
    )
    net = twin_of(rmtl.models.ESMM(*args[:3], **NET))
    opt = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=WD)
    for _ in range(epochs):
        torch_epoch(net, opt, tr, rng)
        torch_valid_auc(net, va)
    # stage 2: transitions of every training session with uniform actions (vectorised)
    n, T = len(train), train.num_tasks
    rows = np.arange(n)
    last = np.zeros(n, bool)
    last[train.offsets[1:] - 1] = True
    nxt = torch.from_numpy(np.where(last, rows, rows + 1))
    action = rng.random((n, T)).astype(np.float32)
    y = train.labels
    reward = torch.from_numpy(
        (
            y * np.log(np.clip(action, 1e-4, 1)) + (1 - y) * np.log(np.clip(1 - action, 1e-4, 1))
        ).astype(np.float32)
    )
    action, done = torch.from_numpy(action), torch.from_numpy(last.astype(np.float32))
    net.eval()
    critics = []
    for _ in range(T):
        c = CriticNeg(
            args[0],
            args[1],
            args[3],
            list(CRITIC["critic_bottom_dims"]),
            list(CRITIC["critic_tower_dims"]),
            CRITIC["critic_dropout"],
        )
        c.embedding.load_state_dict(net.embedding.state_dict())
        critics.append(c.train())
    targets, actor_target = [copy.deepcopy(c) for c in critics], copy.deepcopy(net)
    opts = [torch.optim.Adam(c.parameters(), lr=1e-3) for c in critics]
    B = min(BATCH, n)
    for step in range(epochs * (n // B)):
        i = torch.from_numpy(rng.choice(n, B, replace=False))
        j = nxt[i]
        torch_td_step(
            actor_target,
            critics,
            targets,
            opts,
            (tr[0][i], tr[1][i]),
            (tr[0][j], tr[1][j]),
            action[i],
            reward[i],
            done[i],
            step,
        )
    # stage 3: weighted fine-tuning of a copy of the pretrained model
    for c in critics:
        c.eval()

    def weigh(x, prob):
        with torch.no_grad():
            q = torch.stack([c(*x, prob[:, k].detach()) for k, c in enumerate(critics)], 1)
        return 1 - LAM * q

    tuned = copy.deepcopy(net)
    opt = torch.optim.Adam(tuned.parameters(), lr=LR, weight_decay=WD)
    for _ in range(epochs):
        torch_epoch(tuned, opt, tr, rng, weigh)
        torch_valid_auc(tuned, va)
    return time.perf_counter() - t0


def rmtl_pipeline(train, valid, epochs: int) -> float:
    t0 = time.perf_counter()
    model = rmtl.models.ESMM(train.field_dims, train.num_dense, train.num_tasks, **NET)
    rmtl.RMTL(
        model,
        epochs=epochs,
        patience=epochs + 1,
        critic_epochs=epochs,
        lr=LR,
        weight_decay=WD,
        lam=LAM,
        progress=False,
        **CRITIC,
    ).fit(train, valid)
    return time.perf_counter() - t0


def rounds(timers) -> dict:
    """``ARGS.repeat`` rounds of each timer (name -> callable returning seconds), the order of
    the sides turning each round; seconds per round by name."""
    names = list(timers)
    times = {name: [] for name in names}
    for r in range(ARGS.repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timers[name]())
    return times


def report(times, unit) -> None:
    """Median per side, the ratio pytorch/rmtl of the medians and each round's."""
    ours, theirs = times["rmtl"], times["pytorch"]
    for name, ts in times.items():
        print(
            f"  {name:8s}"
            + " ".join(f"{unit(t):>9s}" for t in ts)
            + f"   median {unit(float(np.median(ts)))}"
        )
    per_round = " ".join(f"{b / a:.2f}" for a, b in zip(ours, theirs))
    print(
        "  ratio pytorch/rmtl (time) "
        f"{float(np.median(theirs)) / float(np.median(ours)):.2f}  (rounds: {per_round})"
    )


if __name__ == "__main__":
    data, trans = transitions(200_000)
    picks = minibatches(200_000, ARGS.steps + 1)
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from torch_reference import CriticNeg, soft_update, td_loss, twin_of, weighted_bce

    torch.set_num_threads(ARGS.threads)
    print(
        f"{ARGS.threads} threads, BLAS {rmtl.blas_info()['backend']}, torch {torch.__version__}, "
        f"{ARGS.repeat} rounds per part, the sides taking turns to go first"
    )
    times = rounds(
        {
            "rmtl": lambda: rmtl_stage2(data, trans, picks),
            "pytorch": lambda: torch_stage2(data, trans, picks),
        }
    )
    print(
        f"stage 2, critic training (2 critics + targets, ESMM actor target, batch {BATCH}, "
        f"{ARGS.steps} steps), transitions/s per round:"
    )
    report(times, lambda t: f"{BATCH / t:.0f}")
    if not ARGS.skip_pipeline:
        train, valid, _ = rmtl.datasets.synthetic(
            "retailrocket", n_users=ARGS.users, seed=0
        ).split()
        times = rounds(
            {
                "rmtl": lambda: rmtl_pipeline(train, valid, ARGS.epochs),
                "pytorch": lambda: torch_pipeline(train, valid, ARGS.epochs),
            }
        )
        print(
            f"three stages, ESMM (embed {NET['embed_dim']}, bottom {NET['bottom_dims']}, "
            f"tower {NET['tower_dims']}; "
            f"critics {CRITIC['critic_bottom_dims']} + {CRITIC['critic_tower_dims']}), "
            f"{ARGS.epochs} epochs per "
            f"stage, synthetic retailrocket {ARGS.users} users: {len(train)} training / "
            f"{len(valid)} validation rows; "
            "seconds per round:"
        )
        report(times, lambda t: f"{t:.1f}")
