"""The synthetic generator (rates, determinism, sessions, dynamics) and the oracle metrics."""

import hashlib
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import rmtl
from rmtl import metrics
from rmtl.datasets import synthetic

GAP_MS = 30 * 60_000


def digest(d):
    h = hashlib.sha256()
    for a in (d.session, d.time, d.user, d.item, d.sparse, d.dense, d.labels, d.truth):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def rr():
    return synthetic("retailrocket")


@pytest.fixture(scope="module")
def kr():
    return synthetic("kuairand")


def test_retailrocket_preset_rates_and_shape(rr):
    assert 170_000 < len(rr) < 240_000  # documented: about 200k impressions
    assert rr.task_names == ("click", "pay") and rr.num_fields == 7 and rr.num_dense == 1
    assert tuple(rr.vocab) == rmtl.datasets.retailrocket.ITEM_FIELDS
    assert (rr.dense == 0).all()
    click, pay = rr.labels.mean(0)
    assert abs(click - 0.05) < 0.004 and abs(pay - 0.0085) < 0.0012
    assert (rr.labels[:, 1] <= rr.labels[:, 0]).all()  # pay implies click
    assert (rr.truth[:, 1] <= rr.truth[:, 0] + 1e-7).all()


def test_kuairand_preset_rates_and_shape(kr):
    assert 170_000 < len(kr) < 240_000
    assert kr.task_names == ("click", "long_view")
    assert tuple(kr.vocab) == rmtl.datasets.kuairand.FIELDS
    click, long_view = kr.labels.mean(0)
    assert abs(click - 0.46) < 0.015 and abs(long_view - 0.33) < 0.015
    assert ((kr.labels[:, 1] == 1) & (kr.labels[:, 0] == 0)).any()  # not nested
    np.testing.assert_array_equal(
        kr.dense[:, 0],
        np.log1p(np.round(np.expm1(kr.dense[:, 0].astype(np.float64)) * 1000) / 1000).astype(
            np.float32
        ),
    )


@pytest.mark.parametrize("name", ["rr", "kr"])
def test_labels_follow_truth(name, request):
    d = request.getfixturevalue(name)
    n = len(d)
    for k in range(2):
        p = d.truth[:, k].astype(np.float64)
        se = np.sqrt((p * (1 - p)).sum()) / n
        assert abs(d.labels[:, k].mean() - p.mean()) < 5 * se
        # calibration by decile of the truth
        bins = np.quantile(p, np.linspace(0, 1, 6)[1:-1])
        which = np.digitize(p, bins)
        for b in range(5):
            m = which == b
            se_b = np.sqrt((p[m] * (1 - p[m])).sum()) / m.sum()
            assert abs(d.labels[m, k].mean() - p[m].mean()) < 5 * se_b + 1e-4


def test_same_seed_same_data_other_seed_differs():
    a, b = synthetic("kuairand", n_users=200, seed=3), synthetic("kuairand", n_users=200, seed=3)
    assert digest(a) == digest(b)
    assert digest(a) != digest(synthetic("kuairand", n_users=200, seed=4))


def test_chunks_and_user_prefix_do_not_change_the_data():
    small = synthetic("retailrocket", n_users=300, seed=1, chunk_rows=100)
    big = synthetic("retailrocket", n_users=600, seed=1)
    assert digest(small) == digest(big.take_rows(np.arange(len(small))))
    assert big.user[len(small)] == 300


THREAD_SCRIPT = """
import hashlib, numpy as np, rmtl
d = rmtl.datasets.synthetic("{preset}", n_users=1500, seed=7)
h = hashlib.sha256()
for a in (d.session, d.time, d.user, d.item, d.sparse, d.dense, d.labels, d.truth):
    h.update(np.ascontiguousarray(a).tobytes())
print(h.hexdigest())
"""


@pytest.mark.parametrize("preset", ["retailrocket", "kuairand"])
def test_one_and_two_threads_agree(tmp_path, preset):
    out = []
    for threads in (1, 2):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        res = subprocess.run(
            [sys.executable, "-c", THREAD_SCRIPT.format(preset=preset)],
            env=env,
            check=True,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        out.append(res.stdout.strip())
    assert out[0] == out[1] and len(out[0]) == 64


@pytest.mark.parametrize("name", ["rr", "kr"])
def test_sessions_are_recovered_by_a_30_minute_split(name, request):
    d = request.getfixturevalue(name)
    inside = np.ones(len(d) - 1, bool)
    inside[d.offsets[1:-1] - 1] = False
    gaps = np.diff(d.time)
    assert gaps[inside].max() <= 600_000 and gaps[inside].min() >= 0
    same_user = d.user[1:] == d.user[:-1]
    assert gaps[~inside & same_user].min() > 2 * GAP_MS
    new = np.ones(len(d), bool)
    new[1:] = ~same_user | (gaps > GAP_MS)
    np.testing.assert_array_equal(np.cumsum(new) - 1, d.session)


def test_sessions_show_each_item_once(rr):
    key = rr.session * (rr.item.max() + 1) + rr.item
    assert np.unique(key).size == key.size


def test_earlier_responses_change_later_ones(rr):
    """Drift toward clicked items and category focus: a click raises the next click's
    probability; fatigue lowers it along the session."""
    p = rr.truth[:, 0]
    nxt = np.flatnonzero(rr.session[1:] == rr.session[:-1])
    after_click = p[nxt + 1][rr.labels[nxt, 0] == 1].mean()
    after_none = p[nxt + 1][rr.labels[nxt, 0] == 0].mean()
    assert after_click > 1.5 * after_none
    flat = synthetic("retailrocket", n_users=3000, drift=0.0, focus=0.0, fatigue=0.0)
    q = flat.truth[:, 0]
    nxt = np.flatnonzero(flat.session[1:] == flat.session[:-1])
    ratio = (
        q[nxt + 1][flat.labels[nxt, 0] == 1].mean() / q[nxt + 1][flat.labels[nxt, 0] == 0].mean()
    )
    assert ratio < (after_click / after_none + 1) / 2


def test_purchase_boost_after_same_category_clicks():
    on = synthetic("retailrocket", n_users=3000, boost=1.5)
    off = synthetic(
        "retailrocket", n_users=3000, boost=0.0, calibrate=False, click_offset=0.0, task2_offset=0.0
    )
    on0 = synthetic(
        "retailrocket", n_users=3000, boost=1.5, calibrate=False, click_offset=0.0, task2_offset=0.0
    )
    # same clicks (task 1 never depends on boost), higher purchase odds with the boost
    np.testing.assert_array_equal(off.labels[:, 0], on0.labels[:, 0])
    assert (on0.truth[:, 1] >= off.truth[:, 1]).all() and (on0.truth[:, 1] > off.truth[:, 1]).any()
    assert abs(on.labels[:, 1].mean() - 0.0085) < 0.003


def test_observed_item_fields_reveal_responses(rr):
    """The popularity field 776 orders items by click probability (what lets a backbone that
    sees only item fields reach paper-like AUC); with pop_sd=0 it carries no signal."""
    col = list(rr.vocab).index("776")
    codes, p = rr.sparse[:, col], rr.truth[:, 0]
    seen = codes > 0
    assert metrics.auc(rr.labels[seen, 0], codes[seen].astype(np.float32)) > 0.6
    assert np.corrcoef(codes[seen], p[seen])[0, 1] > 0.2
    flat = synthetic("retailrocket", n_users=2000, pop_sd=0.0)
    codes, seen = flat.sparse[:, col], flat.sparse[:, col] > 0
    assert abs(np.corrcoef(codes[seen], flat.truth[seen, 0])[0, 1]) < 0.05


def test_describe_shows_oracle_auc(rr):
    text = rr.describe()
    assert text.count("oracle AUC") == 2


def test_vocab_survives_save_and_split(tmp_path, rr):
    path = tmp_path / "d.npz"
    rr.save(path)
    back = rmtl.SessionData.load(path)
    assert back.vocab == rr.vocab
    assert rr.split()[2].vocab == rr.vocab


def test_bad_arguments():
    with pytest.raises(ValueError, match="preset"):
        synthetic("movielens")
    with pytest.raises(ValueError, match="n_users"):
        synthetic(n_users=0)
    with pytest.raises(ValueError, match="out of range"):
        synthetic(n_users=10, availability=2.0)
    with pytest.raises(TypeError):
        synthetic(n_users=10, no_such_option=1)


# ------------------------------------------------------------------ oracle metrics


def brute_force(p):
    """E[concordant pairs] / E[pairs] and the expected BCE by enumerating every labelling."""
    num = den = 0.0
    for y in itertools.product((0, 1), repeat=len(p)):
        y = np.array(y)
        w = np.prod(np.where(y == 1, p, 1 - p))
        pos, neg = p[y == 1], p[y == 0]
        den += w * len(pos) * len(neg)
        num += w * sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    ll = -np.mean(
        p * np.log(np.maximum(p, np.exp(-100))) + (1 - p) * np.log(np.maximum(1 - p, np.exp(-100)))
    )
    return num / den, ll


@pytest.mark.parametrize(
    "p",
    [
        [0.2, 0.8],
        [0.5, 0.5],
        [0.1, 0.3, 0.3, 0.9, 0.0, 1.0, 0.3],
        [0.05, 0.4, 0.4, 0.4, 0.7, 0.2, 0.95, 0.6],
    ],
)
def test_oracle_matches_enumeration(p):
    p = np.array(p, np.float32)
    auc, ll = brute_force(p.astype(np.float64))
    assert metrics.oracle_auc(p) == pytest.approx(auc, abs=1e-12)
    assert metrics.oracle_logloss(p) == pytest.approx(ll, rel=1e-6)


def test_oracle_matches_monte_carlo():
    rng = np.random.default_rng(0)
    n, reps = 3000, 300
    p = np.round(rng.beta(1, 3, n), 2).astype(np.float32)  # many ties
    aucs, lls = [], []
    for _ in range(reps):
        y = (rng.random(n) < p).astype(np.float32)
        aucs.append(metrics.auc(y, p))
        lls.append(metrics.logloss(y, p))
    se = np.std(aucs) / np.sqrt(reps)
    assert abs(metrics.oracle_auc(p) - np.mean(aucs)) < 4 * se + 1e-3
    assert abs(metrics.oracle_logloss(p) - np.mean(lls)) < 4 * np.std(lls) / np.sqrt(reps)


def test_oracle_bad_input():
    with pytest.raises(ValueError, match="pairs"):
        metrics.oracle_auc([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.oracle_auc([0.5, 1.5])
    with pytest.raises(ValueError, match="NaN"):
        metrics.oracle_logloss([np.nan])
