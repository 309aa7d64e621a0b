"""compat="authors" and its switches: batches in time order, critics in training mode in
stage 3 (the wrapped reward is tested with the environment), critic output bias at
PyTorch's default."""

import numpy as np
import pytest
from test_agent import make_agent, session_data

import rmtl
from rmtl.agent import AUTHORS


@pytest.fixture(scope="module")
def splits():
    return session_data(n_sessions=200, seed=3).split()


def weights_after(agent):
    return np.concatenate([p.ravel() for p in agent.backbone.parameters()])


def test_compat_authors_sets_every_switch_and_explicit_options_win(splits):
    tr = splits[0]
    agent = make_agent(tr, compat="authors")
    assert {k: getattr(agent.config, k) for k in AUTHORS} == AUTHORS
    assert make_agent(tr, compat="authors", reward="bce").config.reward == "bce"
    assert make_agent(tr).config.batch_order == "shuffled"
    with pytest.raises(ValueError, match="compat"):
        make_agent(tr, compat="paper")
    with pytest.raises(ValueError, match="batch_order"):
        make_agent(tr, batch_order="random")


def test_time_order_ignores_the_seed(splits):
    """In time order the batch order no longer depends on the seed (only dropout does, and
    this model has the same seed), so two Trainer seeds give the same weights; shuffled ones
    differ."""
    tr, va, _ = splits
    weights = {}
    for shuffle in (False, True):
        for seed in (0, 1):
            model = rmtl.models.create(
                "sharedbottom",
                tr.field_dims,
                tr.num_dense,
                tr.num_tasks,
                seed=5,
                embed_dim=8,
                bottom_dims=(16,),
                tower_dims=(8,),
            )
            rmtl.Trainer(model, seed=seed, batch_size=64, shuffle=shuffle, progress=False).fit(
                tr, epochs=2
            )
            weights[shuffle, seed] = np.concatenate([p.ravel() for p in model.parameters()])
    np.testing.assert_array_equal(weights[False, 0], weights[False, 1])
    assert not np.array_equal(weights[True, 0], weights[True, 1])


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_stage3_critic_mode(splits, dropout):
    """Training mode only adds the critics' dropout: without dropout the two modes give the
    same fine-tuned weights bit for bit, with it they differ. The critics end in eval mode."""
    tr, va, _ = splits
    out = {}
    for mode in ("eval", "train"):
        agent = make_agent(tr, critic_dropout=dropout, stage3_critic_mode=mode, epochs=2)
        agent.pretrain(tr, va)
        agent.fit_critics(tr)
        agent.finetune(tr, va)
        out[mode] = weights_after(agent)
        assert not any(c.training for c in agent.critics)
    assert np.array_equal(out["eval"], out["train"]) == (dropout == 0.0)


def test_authors_critic_output_bias_is_pytorch_default(splits):
    tr = splits[0]
    biases = {}
    for compat in (None, "authors"):
        agent = make_agent(tr, compat=compat)
        agent.fit_critics(tr, epochs=1)
        biases[compat] = agent.critics[0].config.output_bias
    assert biases == {None: 1.0, "authors": None}


def test_compat_authors_accepts_the_authors_modules_and_refuses_ple_paper(splits):
    """Every backbone is the authors' module except ple_paper, which create, RMTL (also for a
    transfer target), experiment and the run's config refuse under compat="authors", naming
    "ple"."""
    tr, va, te = splits
    for name in set(rmtl.models.BACKBONES) - {"ple_paper"}:
        model = rmtl.models.create(
            name,
            tr.field_dims,
            tr.num_dense,
            2,
            compat="authors",
            embed_dim=4,
            bottom_dims=(8,),
            tower_dims=(4,),
        )
        assert model.config.name == name
    with pytest.raises(ValueError, match="'ple_paper' is not the authors' module; use 'ple'"):
        rmtl.models.create("ple_paper", tr.field_dims, tr.num_dense, 2, compat="authors")
    with pytest.raises(ValueError, match="compat"):
        rmtl.models.create("ple", tr.field_dims, tr.num_dense, 2, compat="paper")
    with pytest.raises(ValueError, match="use 'ple'"):
        make_agent(tr, name="ple_paper", compat="authors")
    agent = make_agent(tr, name="ple", compat="authors")
    paper = rmtl.models.create("ple_paper", tr.field_dims, tr.num_dense, 2, bottom_dims=(8,))
    with pytest.raises(ValueError, match="use 'ple'"):
        agent.finetune(tr, va, backbone=paper, weighting="continued")
    assert make_agent(tr, name="ple_paper").compat is None
    with pytest.raises(ValueError, match="use 'ple'"):
        rmtl.experiment(
            tr,
            va,
            te,
            backbones=("esmm", "ple_paper"),
            seeds=[0],
            transfer=(),
            rmtl_kwargs={"compat": "authors"},
        )


def test_run_config_with_compat_authors_refuses_ple_paper():
    from rmtl.lab.settings import RunConfig

    with pytest.raises(ValueError, match="use 'ple'"):
        RunConfig(models=("esmm", "ple_paper"), rmtl_models=(), compat="authors").resolved()
    with pytest.raises(ValueError, match="use 'ple'"):
        RunConfig(models=("esmm",), rmtl_models=("PLE_paper",), compat="authors").resolved()
    assert RunConfig(models=("ple_paper",), rmtl_models=()).resolved().models == ("ple_paper",)
