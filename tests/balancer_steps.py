"""Random steps for the balancer tests, in NumPy alone: the property tests of
tests/test_balancers*.py draw them where torch is missing (the sanitizer job hides it), and the
parity tests give the same steps to rmtl and to LibMTL (tests/libmtl_driver.py)."""

import numpy as np


def random_steps(
    rng: np.random.Generator, n: int, num_tasks: int, dim: int, samples: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` steps of positive losses (shrinking slowly, as in training) and Jacobians with
    conflicting rows, float32: each step is ``(losses (samples, num_tasks), jacobian (samples,
    num_tasks, dim))``."""
    out = []
    for i in range(n):
        losses = (rng.uniform(0.2, 1.5, (samples, num_tasks)) * 0.97**i).astype(np.float32)
        base = rng.normal(size=dim)
        jac = rng.normal(size=(samples, num_tasks, dim)) + 0.5 * base
        jac *= rng.uniform(0.1, 3.0, (samples, num_tasks, 1))  # unequal gradient scales
        out.append((losses, jac.astype(np.float32)))
    return out
