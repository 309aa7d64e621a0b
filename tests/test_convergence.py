"""Convergence checks: an untrained, a diverged and a still-improving model are flagged, a
trained one passes, and a comparison with a flagged row is never starred."""
import numpy as np
import pytest

import rmtl
from rmtl import convergence, report
from rmtl.experiments import ExperimentResult
from rmtl.train import History
from test_agent import NET, session_data
from test_experiments import TINY


@pytest.fixture(scope="module")
def splits():
    return session_data(n_sessions=300, seed=2).split()


@pytest.fixture(scope="module")
def rare():
    """RetailRocket-like sessions: 5% clicks, 0.8% purchases."""
    return rmtl.datasets.synthetic("retailrocket", n_users=400, seed=0).split((0.6, 0.2, 0.2))


def model_for(data, seed=0):
    return rmtl.models.create("esmm", data.field_dims, data.num_dense, data.num_tasks, seed=seed, **NET)


def history(aucs, losses=None):
    """A History as Trainer.fit leaves it: the best epoch by mean validation AUC."""
    losses = [0.5] * len(aucs) if losses is None else losses
    best = int(np.argmax(aucs))
    return History(epochs=[{"epoch": i + 1, "train_loss": l, "valid_auc": a} for i, (a, l) in
                           enumerate(zip(aucs, losses))], best_epoch=best + 1, best_score=aucs[best])


def test_untrained_model_on_its_plateau_is_flagged(rare):
    _, va, _ = rare
    flags = convergence.check(history([0.505, 0.50, 0.49]), model_for(va), va)
    assert flags == ["plateau", "calibration"]


def test_trained_model_passes(splits):
    tr, va, _ = splits
    model = model_for(tr)
    hist = rmtl.Trainer(model, lr=1e-2, batch_size=64, progress=False).fit(tr, va, epochs=30, patience=2)
    assert hist.stopped_early
    assert convergence.check(hist, model, va) == []


def test_nonfinite_and_epoch_limit(splits):
    tr, va, _ = splits
    model = model_for(tr)
    rmtl.Trainer(model, lr=1e-2, batch_size=64, progress=False).fit(tr, va, epochs=5)
    assert convergence.check(history([0.7, 0.8], [0.5, float("nan")]), model, va) == ["nonfinite", "epoch_limit"]
    assert convergence.check(history([0.7, 0.75, 0.8]), model, va) == ["epoch_limit"]
    assert convergence.check(history([0.7, 0.8, 0.8005]), model, va) == []  # improving by less than the tolerance
    assert convergence.check(history([0.8]), model, va) == ["epoch_limit"]


def shifted_records(baseline_flags):
    """Four seeds where RMTL beats the baseline by a steady 0.1 AUC (a tiny p-value)."""
    out = []
    for seed in range(4):
        for variant, shift, flags in (("baseline", 0.0, baseline_flags), ("rmtl", 0.1 + 0.001 * seed, [])):
            out.append({"model": "mmoe", "variant": variant, "seed": seed, "task": "click", "auc": 0.5 + shift,
                        "logloss": 0.6 - shift, "s_logloss": 0.6 - shift, "flags": flags})
    return out


def test_flagged_baseline_gets_no_asterisk():
    clean = ExperimentResult(shifted_records([]), {}, {})
    flagged = ExperimentResult(shifted_records(["plateau", "calibration"]), {}, {})
    row = next(r for r in flagged.table() if r["variant"] == "rmtl")
    assert row["auc_p_holm"] < 0.05 and not row["diff_checked"]
    assert next(r for r in flagged.table() if r["variant"] == "baseline")["flags"] == {"plateau": 4, "calibration": 4}
    assert next(r for r in clean.table() if r["variant"] == "rmtl")["diff_checked"]
    diff_line = lambda md: next(line for line in md.splitlines() if "RMTL-MMoE − MMoE" in line)  # noqa: E731
    assert "*" in diff_line(report.to_markdown(clean))
    md = report.to_markdown(flagged)
    assert "*" not in diff_line(md)
    assert "| plateau 4/4, calibration 4/4 |" in md and convergence.ADVICE["plateau"] in md


def test_experiment_flags_a_baseline_that_never_trained(rare):
    tr, va, te = rare
    with pytest.warns(UserWarning, match="convergence checks failed.*esmm baseline.*calibration"):
        res = rmtl.experiment(tr, va, te, backbones=("esmm",), seeds=(0, 1), weightings=("continued",),
                              transfer=(), backbone_kwargs=NET, rmtl_kwargs=dict(TINY, lr=1e-9, epochs=1))
    base = next(r for r in res.table() if r["variant"] == "baseline")
    assert base["flags"]["calibration"] == 2
    assert all(r["flags"] for r in res.records)
    assert not next(r for r in res.table() if r["variant"] == "continued")["diff_checked"]
