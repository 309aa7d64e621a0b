"""The synthetic generator's task knobs (issue 31, item 6): 2 to 6 tasks, rates down to 0.1%,
correlated or conflicting utilities, label noise, task-only fields, the kuairand6 preset."""

import dataclasses
import hashlib
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import rmtl
from rmtl import _core
from rmtl.datasets import FieldSpec, synthetic
from rmtl.datasets.synth import _PY_ONLY, KUAIRAND_PURE_RATES, _world


def digest(d):
    h = hashlib.sha256()
    for a in (d.session, d.time, d.user, d.item, d.sparse, d.dense, d.labels, d.truth):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def logit(p):
    p = p.astype(np.float64)
    return np.log(p / (1 - p))


# Digests of the generator before the task knobs (commit d3be77a), x86-64 Linux (glibc's libm):
# the default data, the quick run's data (5,000 users) and two small cases must not change.
BEFORE = {
    "default": (
        lambda: synthetic(),
        "0fab9a0f2d852f8f85fe685d6228665d34db005e00854648cb92715cbaae7e59",
    ),
    "quick": (
        lambda: synthetic("retailrocket", n_users=5000, seed=0),
        "150228874868d8a3d293b777a181c457adaad9b3e689f0c7f4703c95c7717c0e",
    ),
    "kuairand": (
        lambda: synthetic("kuairand", n_users=200, seed=3),
        "333bc4050e35ea4591e95bcc2be906288324e8ce2dad1e6831ecefc1371405ac",
    ),
    "free_negative": (
        lambda: synthetic("retailrocket", n_users=2000, task_corr=-0.5, nested=0, seed=5),
        "d845c72c2471bf15f3a3c02039f591ffa53d8d4e73408e85fbbbff2d572a33ed",
    ),
}


@pytest.mark.parametrize("name", list(BEFORE))
def test_two_task_data_is_bit_identical_to_before(name):
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("digests recorded on x86-64 Linux (another libm may round differently)")
    make, want = BEFORE[name]
    assert digest(make()) == want


def test_task_knobs_at_their_defaults_change_nothing():
    kw = dict(n_users=300, seed=4)
    plain = synthetic("retailrocket", **kw)
    spelled = synthetic(
        "retailrocket",
        n_tasks=2,
        task_names=("click", "pay"),
        task_rates=(0.05, 0.0085),
        task_corr=(0.6,),
        label_noise=(0.0, 0.0),
        **kw,
    )
    assert digest(plain) == digest(spelled)


def test_six_tasks_hit_their_rates_down_to_a_tenth_of_a_percent():
    """With the calibration users as the data's users the mean truth is the target up to the
    solver's tolerance; the labels follow it."""
    rates = (0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
    names = ("click", "cart", "pay", "review", "share", "return")
    d = synthetic("retailrocket", n_users=2000, seed=3, task_names=names, task_rates=rates)
    assert d.task_names == names and d.labels.shape[1] == d.truth.shape[1] == 6
    np.testing.assert_allclose(d.truth.astype(np.float64).mean(0), rates, rtol=2e-4)
    n = len(d)
    for k, r in enumerate(rates):
        assert abs(d.labels[:, k].mean() - r) < 5 * np.sqrt(r * (1 - r) / n)
        assert (d.labels[:, k] <= d.labels[:, 0]).all()  # nested: every task needs the click
    assert "oracle AUC" in d.describe().splitlines()[-1]


def test_kuairand6_preset():
    d = synthetic("kuairand6", seed=0)
    assert d.task_names == ("click", "long_view", "like", "follow", "comment", "forward")
    rates = np.array(list(KUAIRAND_PURE_RATES.values()))
    np.testing.assert_allclose(rates[:3], (0.4597, 0.3318, 0.01848), rtol=1e-3)
    np.testing.assert_allclose(rates[3:], (0.001074, 0.002546, 0.000962), rtol=1e-3)
    # 3,300 users, 2,000 of them calibrated: the mean truth within a few percent of the target
    np.testing.assert_allclose(d.truth.astype(np.float64).mean(0), rates, rtol=0.06)
    click = d.labels[:, 0] == 1
    for k in range(2, 6):  # not nested, but most interactions follow a click, as in KuaiRand
        y = d.labels[:, k] == 1
        assert 0.75 < click[y].mean() < 0.99 and (y & ~click).any()


def test_a_preset_per_task_vector_follows_the_task_count():
    kw = dict(n_users=50, calibrate=False, click_offset=0.0, task2_offset=-3.0)
    cut = synthetic("kuairand6", n_tasks=4, **kw)
    assert cut.task_names == ("click", "long_view", "like", "follow")
    spelled = synthetic("kuairand6", n_tasks=4, task_corr=(0.6, 0.5, 0.3), **kw)
    assert digest(cut) == digest(spelled)
    one = synthetic("kuairand6", task_corr=0.6, **kw)  # one number replaces the vector
    six = synthetic("kuairand6", **kw)
    np.testing.assert_array_equal(one.truth[:, :2], six.truth[:, :2])
    assert not np.array_equal(one.truth[:, 2], six.truth[:, 2])


CORRS = (0.9, 0.5, 0.0, -0.5, -0.9)


def test_task_corr_sets_the_correlation_of_the_utilities():
    """Without the click's other terms (popularity, biases, mood, drift, fatigue, context)
    and the click lift, the logits of the tasks correlate as asked: click with task k by
    task_corr[k], two later tasks by the product."""
    pure = dict(click_lift=0.0, pop_sd=0.0, bias_sd=0.0, mood_sd=0.0, drift=0.0, fatigue=0.0)
    pure.update(context_sd=0.0, price_weight=0.0, boost=0.0, calibration_users=500)
    d = synthetic("kuairand", n_users=1200, seed=1, task_rates=(0.3,) * 6, task_corr=CORRS, **pure)
    r = np.corrcoef(logit(d.truth).T)
    np.testing.assert_allclose(r[0, 1:], CORRS, atol=0.05)
    np.testing.assert_allclose(r[1, 2:], np.multiply(CORRS[0], CORRS[1:]), atol=0.05)
    truth = np.corrcoef(d.truth.T)[0, 1:]
    np.testing.assert_allclose(truth, CORRS, atol=0.12)


def test_conflicting_tasks_in_the_full_model():
    """With every other term on, the truth correlations keep the sign, order and rough size of
    task_corr."""
    d = synthetic(
        "kuairand",
        n_users=1200,
        seed=1,
        task_rates=(0.3,) * 6,
        task_corr=CORRS,
        click_lift=0.0,
        calibration_users=500,
    )
    r = np.corrcoef(d.truth.T)[0, 1:]
    assert (np.diff(r) < 0).all()
    assert r[0] > 0.4 and r[1] > 0.15 and abs(r[2]) < 0.05 and r[3] < -0.15 and r[4] < -0.3


def test_a_task_field_moves_only_its_task():
    kw = dict(n_users=500, seed=2, task_rates=(0.3, 0.2, 0.1, 0.05), click_lift=0.0)
    kw.update(calibration_users=500)
    plain = synthetic("kuairand", **kw)
    d = synthetic("kuairand", task_fields={"task3": 1.0}, **kw)
    assert list(d.vocab)[-1] == "only_task3" and d.sparse.shape[1] == plain.sparse.shape[1] + 1
    np.testing.assert_array_equal(d.sparse[:, :-1], plain.sparse)
    for k in (0, 1, 3):  # the other tasks: the same truth and labels, bit for bit
        np.testing.assert_array_equal(d.truth[:, k], plain.truth[:, k])
        np.testing.assert_array_equal(d.labels[:, k], plain.labels[:, k])
    # task 3's logit moves by one constant per level (its shift, plus the recalibration)
    moved, code = logit(d.truth[:, 2]) - logit(plain.truth[:, 2]), d.sparse[:, -1]
    means = []
    for level in range(1, 9):
        m = code == level
        assert m.sum() > 200 and np.ptp(moved[m]) < 1e-4
        means.append(moved[m].mean())
    assert np.ptp(means) > 0.5
    # and only task 3's labels follow the field
    rates = [[d.labels[code == v, k].mean() for v in range(1, 9)] for k in range(4)]
    assert np.ptp(rates[2]) > 0.1 and max(np.ptp(rates[k]) for k in (0, 1, 3)) < 0.06


def test_task_context_field_spec():
    base = rmtl.datasets.PRESETS["kuairand"]
    extra = FieldSpec("mood", "task_context", ("a", "b", "c"), task="long_view", effect=2.0)
    d = synthetic("kuairand", n_users=100, fields=base.fields + (extra,), calibration_users=200)
    assert d.vocab["mood"] == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(ValueError, match="task"):
        FieldSpec("mood", "task_context", ("a",))
    with pytest.raises(ValueError, match="task"):
        FieldSpec("tag2", "item_category", ("a",), task="click")
    with pytest.raises(ValueError, match="effect"):
        FieldSpec("mood", "task_context", ("a",), task="click", effect=-1.0)


def test_label_noise_flips_the_expected_share():
    kw = dict(n_users=500, seed=2, n_tasks=4, calibrate=False, offsets=(-0.5, -1.0, -2.0, -3.0))
    clean = synthetic("kuairand", **kw)
    noisy = synthetic("kuairand", label_noise=(0.0, 0.1, 0.0, 0.3), **kw)
    for a in ("session", "time", "item", "sparse"):  # the session runs on the same responses
        np.testing.assert_array_equal(getattr(noisy, a), getattr(clean, a))
    flipped = (noisy.labels != clean.labels).mean(0)
    n = len(clean)
    assert flipped[0] == 0 and flipped[2] == 0
    for k, e in ((1, 0.1), (3, 0.3)):
        assert abs(flipped[k] - e) < 5 * np.sqrt(e * (1 - e) / n)
        # truth is the probability of the recorded label
        np.testing.assert_allclose(
            noisy.truth[:, k], e + (1 - 2 * e) * clean.truth[:, k], atol=1e-6
        )
        se = np.sqrt((noisy.truth[:, k] * (1 - noisy.truth[:, k])).sum()) / n
        assert abs(noisy.labels[:, k].mean() - noisy.truth[:, k].mean()) < 5 * se
    one = synthetic("kuairand", label_noise=0.5, **kw)
    assert (one.truth == 0.5).all()


def test_user_splits_and_chunks_do_not_change_six_task_data():
    kw = dict(seed=1, n_tasks=6, task_corr=CORRS, label_noise=0.05, task_fields={"task4": 1.0})
    kw.update(calibration_users=300)
    small = synthetic("retailrocket", n_users=300, chunk_rows=100, **kw)
    big = synthetic("retailrocket", n_users=600, **kw)
    assert digest(small) == digest(big.take_rows(np.arange(len(small))))
    assert digest(big) != digest(synthetic("retailrocket", n_users=600, **dict(kw, seed=2)))


THREAD_SCRIPT = """
import hashlib, numpy as np, rmtl
d = rmtl.datasets.synthetic("kuairand6", n_users=400, seed=7, task_corr=(0.9, -0.9, 0.5, 0, -0.5),
                            label_noise=0.1, task_fields={"like": 1.0, "forward": 2.0},
                            calibration_users=400)
h = hashlib.sha256()
for a in (d.session, d.time, d.user, d.item, d.sparse, d.dense, d.labels, d.truth):
    h.update(np.ascontiguousarray(a).tobytes())
print(h.hexdigest())
"""


def test_one_and_two_threads_agree_on_six_tasks(tmp_path):
    out = []
    for threads in (1, 2):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        res = subprocess.run(
            [sys.executable, "-c", THREAD_SCRIPT],
            env=env,
            check=True,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        out.append(res.stdout.strip())
    assert out[0] == out[1] and len(out[0]) == 64


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_tasks=1), "n_tasks"),
        (dict(n_tasks=7), "n_tasks"),
        (dict(n_tasks=2.0), "n_tasks"),
        (dict(task_names=("click",) * 3), "task_names"),
        (dict(n_tasks=3, task_names=("a", "b")), "task_names"),
        (dict(task_rates=(0.05, 0.0)), "task_rates"),
        (dict(task_rates=(0.05, 1.0)), "task_rates"),
        (dict(task_rates=(0.05, float("nan"))), "task_rates"),
        (dict(n_tasks=3, task_rates=(0.05, 0.01)), "task_rates"),
        (dict(task_rates=(0.05, 0.06)), "nested"),  # nested: below the click's rate
        (dict(task_rates=(0.05, 0.01), target_rates=(0.05, 0.01)), "task_rates"),
        (dict(task_corr=1.5), "task_corr"),
        (dict(task_corr=-1.01), "task_corr"),
        (dict(n_tasks=4, task_corr=(0.5, 0.5)), "task_corr"),
        (dict(task_corr="high"), "task_corr"),
        (dict(label_noise=0.6), "label_noise"),
        (dict(label_noise=-0.1), "label_noise"),
        (dict(label_noise=(0.1, 0.1, 0.1)), "label_noise"),
        (dict(task_fields={"like": 1.0}), "task_fields"),
        (dict(task_fields={"pay": 0.0}), "task_fields"),
        (dict(task_fields={"pay": float("inf")}), "task_fields"),
        (dict(calibrate=False, offsets=(0.0, 0.0, 0.0)), "offsets"),
    ],
)
def test_bad_task_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        synthetic("retailrocket", n_users=10, **kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(task_corr="x"), "task_corr: expected one number or a sequence of 1 number, got 'x'"),
        (dict(task_corr=(0.1, 0.2)), "sequence of 1 number, got 2 numbers"),
        (dict(n_tasks=4, task_corr=(0.5,)), "sequence of 3 numbers, got 1 number$"),
        (dict(label_noise="ab"), "label_noise: expected one number or a sequence of 2 numbers"),
    ],
)
def test_per_task_knob_errors_count_in_good_english(kw, match):
    with pytest.raises(ValueError, match=match):
        synthetic("retailrocket", n_users=10, **kw)


def test_the_core_checks_the_task_settings_too():
    cfg = rmtl.datasets.PRESETS["retailrocket"]
    world = _world(cfg, 10, 0)
    with pytest.raises(ValueError, match="offsets"):
        world.mean_truth(lo=0, hi=10, offsets=(0.0,))
    with pytest.raises(ValueError, match="offsets"):
        world.mean_truth(lo=0, hi=10, offsets=(0.0, float("nan")))
    assert len(world.mean_truth(lo=0, hi=10, offsets=(0.0, 0.0))) == 2
    keys = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in _PY_ONLY}
    keys.update(n_users=10, seed=0)
    fields = [(_core.enums["field_kind"][f.kind], f.levels, f.missing, f.skew) for f in cfg.fields]
    for bad in (dict(n_tasks=7), dict(task_corr=(0.5, 0.5)), dict(label_noise=0.7)):
        with pytest.raises(ValueError, match="n_tasks|task_corr|out of range"):
            _core.SynthWorld(dict(keys, **bad), fields)
    ctx = (_core.enums["field_kind"]["task_context"], 4, 0.0, 1.0, 2, 1.0)  # task 2 of 2
    with pytest.raises(ValueError, match="out of range"):
        _core.SynthWorld(keys, fields + [ctx])
