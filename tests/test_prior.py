"""init_output_bias="prior": every task's output starts at the logit of its training rate."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from test_agent import FAST, NET

import rmtl
from rmtl.lab import convergence
from rmtl.prior import output_bias_keys, set_output_prior


@pytest.fixture(scope="module")
def rare():
    """RetailRocket-like sessions: 5% clicks, 0.8% purchases."""
    return rmtl.datasets.synthetic("retailrocket", n_users=400, seed=0).split((0.6, 0.2, 0.2))


def logit(p):
    return np.float32(np.log(p / (1 - p)))


@pytest.mark.parametrize("name", sorted(rmtl.models.BACKBONES))
def test_output_biases_start_at_label_logits(rare, name):
    tr = rare[0]
    model = rmtl.models.create(name, tr.field_dims, tr.num_dense, tr.num_tasks, **NET)
    set_output_prior(model, tr.labels)
    state, keys = model.state_dict(), output_bias_keys(model)
    assert sorted(keys) == [0, 1]
    rate = tr.labels.astype(np.float64).mean(0)
    assert state[keys[0]][0] == pytest.approx(logit(rate[0]), rel=1e-6)
    assert state[keys[1]][0] == pytest.approx(
        logit(rate[1] / rate[0] if name == "esmm" else rate[1]), rel=1e-6
    )
    prob = model.eval().predict(tr.sparse, tr.dense).mean(0)
    np.testing.assert_allclose(prob, rate, rtol=0.5)  # the other weights move it a little
    with pytest.raises(ValueError, match=r"labels: expected shape \(n > 0, 2\), got \(\d+, 1\)"):
        set_output_prior(model, tr.labels[:, :1])


def test_a_model_without_an_output_bias_per_task_is_named(rare):
    tr = rare[0]
    model = rmtl.models.create("mmoe", tr.field_dims, tr.num_dense, tr.num_tasks, **NET)
    three = SimpleNamespace(  # a model claiming a task it has no output bias for
        config=dataclasses.replace(model.config, num_tasks=3),
        named_parameters=model.named_parameters,
    )
    with pytest.raises(ValueError, match=r"^model: .* for each task 0..2, got .* \[0, 1\]"):
        set_output_prior(three, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="labels: expected a numeric array"):
        set_output_prior(model, [["a", "b"]])


def test_agent_with_prior_starts_calibrated(rare):
    """With a learning rate too small to move anything, the default start is uncalibrated
    (p about 0.5) and the prior start is not."""
    tr, va, _ = rare
    flags = {}
    for prior in (None, "prior"):
        model = rmtl.models.create("mmoe", tr.field_dims, tr.num_dense, tr.num_tasks, **NET)
        agent = rmtl.RMTL(model, **dict(FAST, lr=1e-9, epochs=2, init_output_bias=prior))
        flags[prior] = convergence.check(agent.pretrain(tr, va), agent.pretrained, va)
    assert "calibration" in flags[None] and "calibration" not in flags["prior"]
    with pytest.raises(ValueError, match="init_output_bias"):
        rmtl.RMTL(model, init_output_bias="zero")
