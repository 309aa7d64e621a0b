"""Trainer: learning, early stopping, determinism, thread independence, interruption."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import random_session_data

import rmtl

SMALL = dict(embed_dim=8, bottom_dims=(16, 8), tower_dims=(8,), dropout=0.1)


def learnable_data(n_sessions=400, seed=0):
    """Labels that depend on field 0, so a model can learn them."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 6, n_sessions)
    n = int(lengths.sum())
    sparse = np.stack([rng.integers(0, 6, n), rng.integers(0, 4, n)], 1)
    p = np.array([0.05, 0.2, 0.4, 0.6, 0.8, 0.95])[sparse[:, 0]]
    click = (rng.random(n) < p).astype(np.float32)
    pay = click * (rng.random(n) < p)
    return rmtl.SessionData(
        np.repeat(np.arange(n_sessions), lengths),
        np.arange(n),
        sparse,
        rng.normal(size=(n, 1)),
        np.stack([click, pay], 1),
        (6, 4),
    )


def test_training_learns_and_restores_best():
    tr, va, te = learnable_data().split()
    model = rmtl.models.ESMM(tr.field_dims, 1, 2, seed=1, **SMALL)
    before = rmtl.evaluate(model, te)["task0"]["auc"]
    hist = rmtl.Trainer(model, lr=1e-2, batch_size=64, progress=False).fit(
        tr, va, epochs=6, patience=2
    )
    after = rmtl.evaluate(model, te)
    assert after["task0"]["auc"] > 0.75 > before
    assert hist.best_epoch is not None and len(hist.epochs) >= hist.best_epoch
    best_rec = hist.epochs[hist.best_epoch - 1]
    assert rmtl.evaluate(model, va)["task0"]["auc"] == pytest.approx(best_rec["valid_auc_task0"])
    assert not model.training


def test_early_stopping_respects_patience():
    tr, va, _ = learnable_data().split()
    model = rmtl.models.SharedBottom(tr.field_dims, 1, 2, seed=1, **SMALL)
    hist = rmtl.Trainer(model, lr=5e-2, batch_size=32, progress=False).fit(
        tr, va, epochs=30, patience=1
    )
    assert hist.stopped_early and len(hist.epochs) == hist.best_epoch + 1


def test_min_steps_adds_epochs_and_delays_early_stopping():
    """min_steps counts Adam steps in whole epochs: it raises the epoch limit and early
    stopping waits until the steps are done; without it the same run stops at best + 1."""
    tr, va, _ = learnable_data().split()
    steps = -(-len(tr) // 32)
    runs = {}
    for min_steps in (0, 12 * steps - 1, 40 * steps):
        model = rmtl.models.SharedBottom(tr.field_dims, 1, 2, seed=1, **SMALL)
        runs[min_steps] = rmtl.Trainer(model, lr=5e-2, batch_size=32, progress=False).fit(
            tr, va, epochs=2, patience=1, min_steps=min_steps
        )
    assert len(runs[0].epochs) <= 2
    late = runs[12 * steps - 1]
    assert len(late.epochs) >= 12 and late.stopped_early == (len(late.epochs) < 40)
    assert len(runs[40 * steps].epochs) == 40
    with pytest.raises(ValueError, match="min_steps"):
        rmtl.Trainer(rmtl.models.SharedBottom(tr.field_dims, 1, 2, **SMALL)).fit(tr, min_steps=-1)


def test_same_seed_bit_identical():
    tr = learnable_data().split()[0]
    weights = []
    for _ in range(2):
        model = rmtl.models.ESMM(tr.field_dims, 1, 2, seed=3, **SMALL)
        rmtl.Trainer(model, batch_size=50, seed=7, progress=False).fit(tr, epochs=2)
        weights.append(np.concatenate([p.ravel() for p in model.parameters()]))
    np.testing.assert_array_equal(weights[0], weights[1])
    model = rmtl.models.ESMM(tr.field_dims, 1, 2, seed=3, **SMALL)
    rmtl.Trainer(model, batch_size=50, seed=8, progress=False).fit(tr, epochs=2)
    assert not np.array_equal(weights[0], np.concatenate([p.ravel() for p in model.parameters()]))


TRAIN_SCRIPT = """
import numpy as np, rmtl, sys
sys.path.insert(0, {tests!r})
from test_train import learnable_data
tr = learnable_data(2000).split()[0]
m = rmtl.models.SharedBottom(tr.field_dims, 1, 2, embed_dim=32, bottom_dims=(256, 128),
                             tower_dims=(64,), seed=2)
rmtl.Trainer(m, batch_size=512, progress=False).fit(tr, epochs=1)
np.save({out!r}, np.concatenate([p.ravel() for p in m.parameters()]))
"""


@pytest.mark.parametrize("backend", ["blas", "builtin"])
def test_one_and_two_threads_agree(tmp_path, backend):
    res = []
    for threads in (1, 2):
        out = str(tmp_path / f"w{threads}.npy")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        if backend == "builtin":
            env["RMTL_BLAS"] = "builtin"
        code = TRAIN_SCRIPT.format(tests=os.path.dirname(__file__), out=out)
        subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tmp_path)
        res.append(np.load(out))
    np.testing.assert_allclose(res[0], res[1], rtol=1e-4, atol=1e-5)


class SignalledModel:
    """A model whose ``at``-th training chunk receives SIGINT while it runs; counts chunks."""

    def __init__(self, model, at):
        self._m, self._core, self.config, self.chunks, self.at = model, self, model.config, 0, at

    def train_chunk(self, *args, **kwargs):
        self.chunks += 1
        if self.chunks == self.at:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while this chunk's C call runs
        return self._m.train_chunk(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._m, name)


def test_ctrl_c_stops_at_once_and_leaves_model_usable():
    tr = learnable_data(3000).split()[0]
    model = rmtl.models.SharedBottom(
        tr.field_dims, 1, 2, embed_dim=8, bottom_dims=(16,), tower_dims=(8,), seed=0
    )
    wrapped = SignalledModel(model, at=3)
    with pytest.warns(UserWarning, match="interrupted"):
        hist = rmtl.Trainer(wrapped, batch_size=64, progress=False).fit(tr, epochs=1000)
    assert hist.interrupted and wrapped.chunks == 3  # no chunk started after the signal
    prob = model.predict(tr.sparse[:10], tr.dense[:10])
    assert np.isfinite(prob).all()
    rmtl.Trainer(model, batch_size=64, progress=False).fit(tr, epochs=1)  # still trainable


def test_trainer_rejects_mismatched_data():
    d = random_session_data()
    model = rmtl.models.SharedBottom((9, 9, 9), 2, 2, **SMALL)
    with pytest.raises(ValueError, match="field_dims"):
        rmtl.Trainer(model, progress=False).fit(d, epochs=1)
    with pytest.raises(TypeError, match="SessionData"):
        rmtl.Trainer(model, progress=False).fit(d.sparse, epochs=1)
    with pytest.raises(ValueError, match="batch_size"):
        rmtl.Trainer(model, batch_size=0)


def test_trainer_repr_names_its_settings():
    data = random_session_data(n_sessions=10)
    model = rmtl.models.create("esmm", data.field_dims, data.num_dense, data.num_tasks, embed_dim=4)
    assert repr(rmtl.Trainer(model, lr=0.01, batch_size=64, seed=3)) == (
        "Trainer(model=ESMM, lr=0.01, batch_size=64, seed=3, weight_decay=1e-06, shuffle=True)"
    )
    weighted = rmtl.Trainer(model, weighting="constant", lam=0.5)
    assert repr(weighted).endswith("weighting='constant', lam=0.5)")
