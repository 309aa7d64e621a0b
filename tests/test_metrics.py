"""Metrics against scikit-learn and hand-computed values."""

import warnings

import numpy as np
import pytest
from conftest import optional

import rmtl
from rmtl import metrics


def sk():
    return optional("sklearn.metrics")


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    y = (rng.random(n) < 0.2).astype(np.float32)
    s = np.round(rng.random(n) + 0.3 * y, 1).astype(np.float32)  # many ties
    assert metrics.auc(y, s) == pytest.approx(sk().roc_auc_score(y, s), abs=1e-12)


def test_auc_and_gauc_over_the_whole_float64_and_int64_range():
    # the sort works on the values' bits: negative scores, -0.0 tied with +0.0, magnitudes
    # from float64 subnormals to 1e300 (past float32's range: ranked as float64, no overflow
    # warning), neighbours one float64 ulp apart, group ids past 32 bits and negative
    rng = np.random.default_rng(5)
    n = 4000
    pool = np.array(
        [-1e300, -2.5, -1e-310, -0.0, 0.0, 1e-310, 1.0, np.nextafter(1.0, 2.0), 3e12, 1e300]
    )
    s = np.where(rng.random(n) < 0.5, rng.choice(pool, n), rng.normal(0, 1e3, n))
    y = (rng.random(n) < 0.3).astype(np.float32)
    s = s + (y > 0) * rng.random(n) * 1e3 * (rng.random(n) < 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.auc(y, s) == pytest.approx(sk().roc_auc_score(y, s), abs=1e-12)
    g = rng.choice(np.array([-(2**62), -7, 0, 3, 2**33, 2**62 + 5], np.int64), n)
    num = den = 0.0
    for u in np.unique(g):
        m = g == u
        num += sk().roc_auc_score(y[m], s[m]) * m.sum()
        den += m.sum()
    assert metrics.gauc(y, s, g) == pytest.approx(num / den, abs=1e-12)


def test_auc_hand_example():
    assert metrics.auc([0, 1, 0, 1], [0.1, 0.4, 0.4, 0.8]) == pytest.approx(0.875)
    with pytest.raises(ValueError, match="one class"):
        metrics.auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc([0, 1], [np.nan, 0.2])
    with pytest.raises(ValueError, match="0/1"):
        metrics.auc([0, 2], [0.1, 0.2])


def test_logloss_matches_sklearn_and_torch_clamp():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.3).astype(np.float32)
    p = rng.uniform(0.01, 0.99, 500).astype(np.float32)
    assert metrics.logloss(y, p) == pytest.approx(sk().log_loss(y, p.astype(np.float64)), rel=1e-6)
    # torch semantics: log(0) clamps at -100
    assert metrics.logloss([1.0], [0.0]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.logloss([1.0], [1.5])


def test_session_logloss_by_hand():
    y = np.array([1, 0, 0], np.float32)
    p = np.array([0.5, 0.5, 0.25], np.float32)
    per_session = [np.log(2), -np.log(0.75)]
    assert metrics.session_logloss(y, p, [7, 7, 3]) == pytest.approx(np.mean(per_session))
    with pytest.raises(ValueError, match="sessions: expected integer session ids of shape"):
        metrics.session_logloss(y, p, [0, 2])
    with pytest.raises(ValueError, match="sessions: the rows of session 1 are not contiguous"):
        metrics.session_logloss(y, p, [1, 2, 1])


def test_gauc_matches_weighted_per_group_sklearn():
    rng = np.random.default_rng(1)
    n = 2000
    g = rng.integers(0, 40, n)
    y = (rng.random(n) < 0.3).astype(np.float32)
    s = rng.random(n).astype(np.float32) + 0.2 * y
    num = den = 0.0
    for u in np.unique(g):
        m = g == u
        if 0 < y[m].sum() < m.sum():
            num += sk().roc_auc_score(y[m], s[m]) * m.sum()
            den += m.sum()
    assert metrics.gauc(y, s, g) == pytest.approx(num / den, abs=1e-12)


def test_evaluate_reports_every_task():
    from conftest import random_session_data

    d = random_session_data()
    model = rmtl.models.create(
        "sharedbottom", d.field_dims, d.num_dense, 2, embed_dim=4, bottom_dims=(8,), tower_dims=(4,)
    )
    res = rmtl.evaluate(model, d)
    assert set(res) == {"task0", "task1"}
    prob = model.predict(d.sparse, d.dense)
    assert res["task1"]["auc"] == pytest.approx(metrics.auc(d.labels[:, 1], prob[:, 1]))
    assert res["task0"]["s_logloss"] == pytest.approx(
        metrics.session_logloss(d.labels[:, 0], prob[:, 0], d.session)
    )
    assert res["task0"]["gauc"] == pytest.approx(metrics.gauc(d.labels[:, 0], prob[:, 0], d.user))
