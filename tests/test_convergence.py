"""Convergence checks: an untrained, a diverged and a still-improving model are flagged, a
trained one passes, and a comparison with a flagged row is never starred."""

import numpy as np
import pytest
from test_agent import NET, session_data
from test_experiments import TINY

import rmtl
from rmtl.lab import convergence, report
from rmtl.lab.report import ExperimentResult
from rmtl.train import History


@pytest.fixture(scope="module")
def splits():
    return session_data(n_sessions=300, seed=2).split()


@pytest.fixture(scope="module")
def rare():
    """RetailRocket-like sessions: 5% clicks, 0.8% purchases."""
    return rmtl.datasets.synthetic("retailrocket", n_users=400, seed=0).split((0.6, 0.2, 0.2))


def model_for(data, seed=0):
    return rmtl.models.create(
        "esmm", data.field_dims, data.num_dense, data.num_tasks, seed=seed, **NET
    )


def history(aucs, losses=None):
    """A History as Trainer.fit leaves it stopping on the mean validation AUC."""
    losses = [0.5] * len(aucs) if losses is None else losses
    best = int(np.argmax(aucs))
    return History(
        epochs=[
            {"epoch": i + 1, "train_loss": loss, "valid_auc": a}
            for i, (a, loss) in enumerate(zip(aucs, losses))
        ],
        best_epoch=best + 1,
        best_score=aucs[best],
        early_stopping="auc",
    )


def test_untrained_model_on_its_plateau_is_flagged(rare):
    _, va, _ = rare
    flags = convergence.check(history([0.505, 0.50, 0.49]), model_for(va), va)
    assert flags == ["plateau", "calibration"]


def test_trained_model_passes(splits):
    tr, va, _ = splits
    model = model_for(tr)
    hist = rmtl.Trainer(model, lr=1e-2, batch_size=64, progress=False).fit(
        tr, va, epochs=30, patience=2
    )
    assert hist.stopped_early
    assert convergence.check(hist, model, va) == []


def test_nonfinite_and_epoch_limit(splits):
    tr, va, _ = splits
    model = model_for(tr)
    rmtl.Trainer(model, lr=1e-2, batch_size=64, progress=False).fit(tr, va, epochs=5)
    assert convergence.check(history([0.7, 0.8], [0.5, float("nan")]), model, va) == [
        "nonfinite",
        "epoch_limit",
    ]
    assert convergence.check(history([0.7, 0.75, 0.8]), model, va) == ["epoch_limit"]
    assert (
        convergence.check(history([0.7, 0.8, 0.8005]), model, va) == []
    )  # improving by less than the tolerance
    assert convergence.check(history([0.8]), model, va) == ["epoch_limit"]
    fixed = history([0.7, 0.75, 0.8])
    fixed.early_stopping = None  # a fixed budget ends at its limit by design
    assert convergence.check(fixed, model, va) == []


def test_overtrained_stage3_and_worse_than_prior_are_flagged(rare):
    """An untrained model (p about 0.5 on 4% clicks) is worse than predicting the training
    rate; a stage 3 forced through 60 epochs without early stopping has a validation logloss
    far above the pretrained model's: ``overfit``."""
    tr, va, te = rare
    rates = tr.labels.mean(0)
    net = dict(embed_dim=8, bottom_dims=(16,), tower_dims=(8,), dropout=0.0)
    model = rmtl.models.create("esmm", tr.field_dims, tr.num_dense, tr.num_tasks, seed=0, **net)
    assert "worse_than_prior" in convergence.check(History(), model, va, te, rates)
    assert "worse_than_prior" not in convergence.check(
        History(), model, va
    )  # only judged with the rates
    agent = rmtl.RMTL(model, progress=False, epochs=30, batch_size=256, init_output_bias="prior")
    pre = agent.pretrain(tr, va)
    assert "overfit" not in convergence.check(pre, agent.pretrained, va, te, rates)
    over = agent.finetune(tr, va, weighting="continued", epochs=60)
    assert len(over.epochs) == over.best_epoch == 60 and over.early_stopping is None
    mean, se = over.logloss_change["click"]
    assert mean > convergence.OVERFIT_Z * se > 0
    assert "overfit" in convergence.check(over, agent.backbone, va, te, rates)


def test_logloss_change_is_the_mean_change_of_row_bce(splits):
    """History.logloss_change against a hand computation from the two models' predictions."""
    tr, va, _ = splits
    model = model_for(tr)
    before = model.predict(va.sparse, va.dense).astype(np.float64)
    hist = rmtl.Trainer(model, lr=1e-2, batch_size=64, progress=False).fit(
        tr, va, epochs=3, patience=None
    )
    after = model.predict(va.sparse, va.dense).astype(np.float64)
    y = va.labels.astype(np.float64)

    def bce(p, k):
        return -(y[:, k] * np.log(p[:, k]) + (1 - y[:, k]) * np.log(1 - p[:, k]))

    for k, task in enumerate(va.task_names):
        d = bce(after, k) - bce(before, k)
        mean, se = hist.logloss_change[task]
        assert mean == pytest.approx(d.mean(), rel=1e-9) and se == pytest.approx(
            d.std(ddof=1) / np.sqrt(len(d))
        )


def shifted_records(control_flags):
    """Four seeds where RMTL beats Continued by a steady 0.1 AUC (a tiny p-value)."""
    out = []
    for seed in range(4):
        for variant, shift, flags in (
            ("baseline", 0.0, []),
            ("continued", 0.0, control_flags),
            ("rmtl", 0.1 + 0.001 * seed, []),
        ):
            out.append(
                {
                    "model": "mmoe",
                    "variant": variant,
                    "seed": seed,
                    "task": "click",
                    "auc": 0.5 + shift,
                    "logloss": 0.6 - shift,
                    "s_logloss": 0.6 - shift,
                    "flags": flags,
                }
            )
    return out


def test_flagged_control_gets_no_asterisk():
    clean = ExperimentResult(shifted_records([]), {}, {})
    flagged = ExperimentResult(shifted_records(["overfit", "worse_than_prior"]), {}, {})
    row = next(r for r in flagged.table() if r["variant"] == "rmtl")
    assert row["auc_effect_p_holm"] < 0.05 and not row["effect_checked"]
    control = next(r for r in flagged.table() if r["variant"] == "continued")
    assert control["flags"] == {"overfit": 4, "worse_than_prior": 4}
    assert next(r for r in clean.table() if r["variant"] == "rmtl")["effect_checked"]

    def effect_line(md):
        return next(line for line in md.splitlines() if "RMTL-MMoE − Continued-MMoE" in line)  # noqa: E731

    assert "*" in effect_line(report.to_markdown(clean))
    md = report.to_markdown(flagged)
    assert "*" not in effect_line(md)
    assert "| overfit 4/4, worse_than_prior 4/4 |" in md and convergence.ADVICE["overfit"] in md


def test_experiment_flags_a_baseline_that_never_trained(rare):
    tr, va, te = rare
    with pytest.warns(UserWarning, match="convergence checks failed.*esmm baseline.*calibration"):
        res = rmtl.experiment(
            tr,
            va,
            te,
            backbones=("esmm",),
            seeds=(0, 1),
            weightings=("continued",),
            transfer=(),
            backbone_kwargs=NET,
            rmtl_kwargs=dict(TINY, lr=1e-9, epochs=1),
        )
    base = next(r for r in res.table() if r["variant"] == "baseline")
    assert base["flags"]["calibration"] == 2
    assert all(r["flags"] for r in res.records)
    assert not next(r for r in res.table() if r["variant"] == "continued")["diff_checked"]
    assert all(
        r["epochs"] == 1 and r["steps"] == r["kept_epoch"] * -(-len(tr) // TINY["batch_size"])
        for r in res.records
    )
