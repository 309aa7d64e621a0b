"""Paired comparisons over seeds: the mean difference with its 95% confidence interval and
two-sided paired t-test, Holm's adjustment over a declared family, and the power analysis
that says what a run could have detected (the smallest effect at 80% power, and the seeds a
given effect would need).

A paired difference over ``n`` seeds with sample standard deviation ``s`` has the t-test
statistic ``t = mean / (s / sqrt(n))`` on ``n - 1`` degrees of freedom. Its power against a
true effect ``delta`` at level ``alpha`` is ``P(|T| > t_{1 - alpha/2})`` with ``T`` noncentral
t of noncentrality ``delta sqrt(n) / s``; :func:`detectable_effect` inverts that.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

__all__ = [
    "ALPHA",
    "TARGET_EFFECT",
    "Paired",
    "paired",
    "holm",
    "power",
    "detectable_effect",
    "seeds_needed",
]

ALPHA = 0.05
CONFIDENCE = 0.95
POWER = 0.8
TARGET_EFFECT = 0.001
"""The critic effect (AUC or logloss) a run should be able to detect: the gains the paper
reports (+0.003 to +0.005 AUC) are several times this."""


@dataclasses.dataclass(frozen=True)
class Paired:
    """A paired difference ``a - b`` over seeds: ``mean``, sample ``sd``, ``n`` pairs, the
    95% confidence interval ``low``..``high`` (t-based; NaN with fewer than two pairs) and
    the two-sided paired t-test's ``p`` (NaN with fewer than two pairs or when every
    difference is the same).

    Parameters
    ----------
    mean : float
        Mean difference.
    sd : float
        Sample standard deviation of the differences.
    n : int
        Number of pairs.
    low, high : float
        The 95% confidence interval of the mean.
    p : float
        The two-sided paired t-test's p-value.
    """

    mean: float
    sd: float
    n: int
    low: float
    high: float
    p: float


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """The paired difference ``a - b`` (same length, paired by position).

    Parameters
    ----------
    a, b : sequence of float
        One value per seed each.

    Returns
    -------
    Paired

    Raises
    ------
    ValueError
        When ``a`` or ``b`` is not one-dimensional, when they differ in length, or when
        there is no pair (both are empty).
    """
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    for name, v in (("a", x), ("b", y)):
        if v.ndim != 1:
            raise ValueError(
                f"{name}: expected a 1-D sequence of floats, got an array of shape {v.shape}"
            )
    if len(x) != len(y):
        raise ValueError(
            f"a, b: expected the same length (one value per seed each), got {len(x)} and {len(y)}"
        )
    d = x - y
    n = len(d)
    if n == 0:
        raise ValueError("a, b: expected at least one pair, got none")
    mean = float(d.mean())
    if n < 2:
        return Paired(mean, math.nan, n, math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
    p = (
        math.nan
        if np.all(d == d[0])
        else float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    )
    return Paired(mean, sd, n, mean - half, mean + half, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``pvalues`` (NaN entries are left out of the family
    and stay NaN): the i-th smallest of m becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``.

    Parameters
    ----------
    pvalues : sequence of float
        The family's p-values (NaN: not part of it).

    Returns
    -------
    list of float
        The adjusted p-values, in the same order.
    """
    p = np.asarray(pvalues, np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return [float(x) for x in out]


def power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs whose
    differences have standard deviation ``sd``, against a true mean difference ``effect``.

    Parameters
    ----------
    effect : float
        The true mean difference.
    sd : float
        Standard deviation of the differences.
    n : int
        Number of pairs.
    alpha : float, default 0.05
        The test's level.

    Returns
    -------
    float
        The probability of a rejection (NaN when ``n < 2`` or ``sd`` is not positive).
    """
    if n < 2 or not sd > 0:
        return math.nan
    df, nc = n - 1, abs(effect) * math.sqrt(n) / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    # P(T < -crit) as the upper tail at -nc: scipy's lower tail is NaN far from the centre
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def detectable_effect(sd: float, n: int, alpha: float = 0.05, target: float = POWER) -> float:
    """The smallest true mean difference the two-sided paired t-test at level ``alpha`` finds
    with probability ``target`` (80%) from ``n`` pairs of spread ``sd``; NaN when ``n < 2``
    or ``sd`` is not positive.

    Parameters
    ----------
    sd : float
        Standard deviation of the differences.
    n : int
        Number of pairs.
    alpha : float, default 0.05
        The test's level.
    target : float, default POWER
        The power wanted.

    Returns
    -------
    float
    """
    if n < 2 or not sd > 0:
        return math.nan
    upper = sd
    while power(upper, sd, n, alpha) < target:
        upper *= 2
    return float(
        optimize.brentq(lambda e: power(e, sd, n, alpha) - target, 0.0, upper, xtol=1e-12 * sd)
    )


def seeds_needed(
    effect: float, sd: float, alpha: float = 0.05, target: float = POWER, most: int = 100_000
) -> int:
    """The fewest pairs (at least 2) with which the paired t-test at level ``alpha`` finds a
    true difference ``effect`` with probability ``target``, given differences of spread
    ``sd``; ``most + 1`` when even ``most`` do not suffice.

    Parameters
    ----------
    effect : float
        The true mean difference.
    sd : float
        Standard deviation of the differences.
    alpha : float, default 0.05
        The test's level.
    target : float, default POWER
        The power wanted.
    most : int, default 100000
        The most pairs considered.

    Returns
    -------
    int
    """
    if not sd > 0:
        return 2
    if power(effect, sd, most, alpha) < target:
        return most + 1
    lo, hi = 2, most  # power grows with n: bisect for the first n that reaches the target
    while lo < hi:
        mid = (lo + hi) // 2
        if power(effect, sd, mid, alpha) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo
