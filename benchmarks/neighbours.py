"""Loads that run beside a benchmark on the same cores, until killed, and what the benchmarks
share about the machine they ran on.

    python benchmarks/neighbours.py {busy,torch,membw}

A benchmark imports this file (``import neighbours``: scripts in benchmarks/ see it) for
:func:`start` (a load at nice 10 beside the timed runs) and :func:`cpu_model`.

busy: one Python busy loop. torch: a PyTorch training job (an MLP on random data fed by a
DataLoader with one worker process, 2 threads), like another experiment sharing the machine.
membw: streaming copies of 256 MB arrays (memory-bandwidth bound). The benchmark starts them
at low priority (nice 10).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

KINDS = ("busy", "torch", "membw")


def busy() -> None:
    x = 0
    while True:
        x += 1


def torch_job() -> None:
    import torch
    from torch.utils.data import DataLoader, Dataset

    class Random(Dataset):
        def __len__(self) -> int:
            return 1 << 30

        def __getitem__(self, i: int):
            g = torch.Generator().manual_seed(i)
            x = torch.randn(256, generator=g)
            return x, (x.sum() > 0).float()

    torch.set_num_threads(2)
    net = torch.nn.Sequential(
        torch.nn.Linear(256, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for x, y in DataLoader(Random(), batch_size=512, num_workers=1):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(1), y).backward()
        opt.step()


def membw() -> None:
    import numpy as np

    src = np.ones(1 << 26, np.float32)
    dst = np.empty_like(src)
    while True:
        np.copyto(dst, src)
        np.copyto(src, dst)


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.machine()


def start(kind: str) -> subprocess.Popen:
    """Start load ``kind`` at nice 10 and return it after 3 s (imports done, load running);
    the caller kills it."""
    proc = subprocess.Popen([sys.executable, __file__, kind], preexec_fn=lambda: os.nice(10))
    time.sleep(3.0)
    return proc


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in KINDS:
        sys.exit(f"usage: neighbours.py {{{','.join(KINDS)}}}")
    {"busy": busy, "torch": torch_job, "membw": membw}[sys.argv[1]]()
