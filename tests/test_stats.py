"""Paired differences, confidence intervals and the power analysis against hand computations
(the t quantiles from scipy, the power by simulation and by the normal approximation)."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from rmtl.lab import stats


def test_paired_mean_ci_and_p_by_hand():
    a = np.array([0.712, 0.705, 0.731, 0.699, 0.720])
    b = np.array([0.700, 0.701, 0.722, 0.700, 0.709])
    d = a - b
    n, mean, sd = len(d), d.mean(), d.std(ddof=1)
    half = sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n)  # 2.776 for 4 degrees of freedom
    got = stats.paired(a, b)
    assert got.n == 5 and got.mean == pytest.approx(mean) and got.sd == pytest.approx(sd)
    assert got.low == pytest.approx(mean - half) and got.high == pytest.approx(mean + half)
    assert sps.t.ppf(0.975, 4) == pytest.approx(2.7764451, abs=1e-6)
    assert got.p == pytest.approx(sps.ttest_rel(a, b).pvalue)
    # the interval excludes zero exactly when p < 0.05
    assert (got.low > 0) == (got.p < 0.05)


def test_paired_degenerate_cases():
    one = stats.paired([0.7], [0.6])
    assert one.mean == pytest.approx(0.1) and math.isnan(one.low) and math.isnan(one.p)
    same = stats.paired([0.5, 0.75], [0.25, 0.5])  # both differences exactly 0.25
    assert math.isnan(same.p) and same.low == 0.25 == same.high
    with pytest.raises(ValueError, match="at least one pair"):
        stats.paired([], [])


def test_paired_refuses_unequal_lengths_and_non_1d_input():
    with pytest.raises(ValueError, match=r"a, b: expected the same length.*got 3 and 1"):
        stats.paired([1, 2, 3], [0])
    with pytest.raises(ValueError, match=r"a: expected a 1-D sequence.*shape \(\)"):
        stats.paired(0.5, [0.5])
    with pytest.raises(ValueError, match=r"b: expected a 1-D sequence.*shape \(2, 1\)"):
        stats.paired([1, 2], [[1], [2]])


def test_detectable_effect_has_the_target_power_by_simulation():
    """Draw 20,000 runs of n paired differences with mean = the detectable effect: the
    paired t-test at alpha rejects in 80% of them."""
    sd, n, alpha = 0.003, 6, 0.05 / 4
    mde = stats.detectable_effect(sd, n, alpha)
    rng = np.random.default_rng(0)
    d = rng.normal(mde, sd, size=(20_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    rejected = np.mean(np.abs(t) > sps.t.ppf(1 - alpha / 2, n - 1))
    assert rejected == pytest.approx(0.8, abs=0.01)
    assert stats.power(mde, sd, n, alpha) == pytest.approx(0.8, abs=1e-9)


def test_detectable_effect_approaches_the_normal_formula():
    """For many seeds the t-test becomes a z-test: (z_{1-alpha/2} + z_{0.8}) sd / sqrt(n)."""
    sd, n = 0.01, 2000
    by_hand = (1.959964 + 0.841621) * sd / math.sqrt(n)
    assert stats.detectable_effect(sd, n) == pytest.approx(by_hand, rel=2e-3)
    assert math.isnan(stats.detectable_effect(sd, 1)) and math.isnan(
        stats.detectable_effect(0.0, 5)
    )


def test_seeds_needed_is_the_first_n_with_enough_power():
    sd, effect, alpha = 0.004, 0.001, 0.05 / 6
    n = stats.seeds_needed(effect, sd, alpha)
    assert stats.power(effect, sd, n, alpha) >= 0.8 > stats.power(effect, sd, n - 1, alpha)
    assert (
        stats.detectable_effect(sd, n, alpha) <= effect < stats.detectable_effect(sd, n - 1, alpha)
    )
    assert stats.seeds_needed(effect, 1.0, alpha, most=50) == 51  # not reachable within the cap
