"""experiment(): records, the summary table (means, stds, paired t-tests), Markdown, resume."""

import sys

import numpy as np
import pytest
from scipy import stats
from test_agent import FAST, NET, session_data

import rmtl
from rmtl.lab.report import ExperimentResult
from rmtl.lab.stats import holm

TINY = dict(FAST, critic_epochs=2, epochs=2)
TINY.pop("progress")


@pytest.fixture(scope="module")
def splits():
    return session_data(n_sessions=200, seed=1).split()


def hand_records():
    rng = np.random.default_rng(0)
    out = []
    for seed in range(4):
        for variant, shift in (("baseline", 0.0), ("rmtl", 0.01)):
            out.append(
                {
                    "model": "esmm",
                    "variant": variant,
                    "seed": seed,
                    "task": "ctr",
                    "auc": 0.7 + shift + 0.02 * rng.random(),
                    "logloss": 0.2 - shift + 0.01 * rng.random(),
                    "s_logloss": 0.21 + 0.01 * rng.random(),
                }
            )
    return out


def test_table_means_stds_and_paired_tests():
    records = hand_records()
    rows = {r["variant"]: r for r in ExperimentResult(records, {}, {}).table()}
    base = np.array([r["auc"] for r in records if r["variant"] == "baseline"])
    var = np.array([r["auc"] for r in records if r["variant"] == "rmtl"])
    assert rows["rmtl"]["n"] == 4
    assert rows["rmtl"]["auc_mean"] == pytest.approx(var.mean())
    assert rows["rmtl"]["auc_std"] == pytest.approx(var.std(ddof=1))
    assert rows["rmtl"]["auc_diff"] == pytest.approx((var - base).mean())
    assert rows["rmtl"]["auc_diff_p"] == pytest.approx(stats.ttest_rel(var, base).pvalue)
    half = (
        3.182446 * (var - base).std(ddof=1) / 2
    )  # t_{0.975} on 3 degrees of freedom, sqrt(4) seeds
    assert rows["rmtl"]["auc_diff_low"] == pytest.approx((var - base).mean() - half, rel=1e-6)
    assert rows["rmtl"]["auc_diff_high"] == pytest.approx((var - base).mean() + half, rel=1e-6)
    assert "auc_diff" not in rows["baseline"]
    one = ExperimentResult([r for r in records if r["seed"] == 0], {}, {}).table()
    assert all(np.isnan(r["auc_std"]) for r in one)
    assert np.isnan(next(r for r in one if r["variant"] == "rmtl")["auc_diff_p"])


def control_records():
    """Three seeds of a baseline, a control and RMTL whose paired differences are known."""
    out = []
    for seed in range(3):
        for variant, shift in (
            ("baseline", 0.0),
            ("continued", 0.05 + 0.01 * seed),
            ("rmtl", 0.06 + 0.01 * seed**2),
        ):
            out.append(
                {
                    "model": "mmoe",
                    "variant": variant,
                    "seed": seed,
                    "task": "click",
                    "auc": 0.6 + shift,
                    "logloss": 0.3 - shift,
                    "s_logloss": 0.3,
                }
            )
    return out


def test_table_reports_critic_effect_against_continued_with_holm():
    rows = {r["variant"]: r for r in ExperimentResult(control_records(), {}, {}).table()}
    rmtl_row, control = rows["rmtl"], rows["continued"]
    effect = np.array([0.06 - 0.05, 0.07 - 0.06, 0.10 - 0.07])
    assert rmtl_row["auc_effect"] == pytest.approx(effect.mean())
    rmtl_auc, control_auc = 0.6 + np.array([0.06, 0.07, 0.10]), 0.6 + np.array([0.05, 0.06, 0.07])
    assert rmtl_row["auc_effect_p"] == pytest.approx(stats.ttest_rel(rmtl_auc, control_auc).pvalue)
    assert rmtl_row["auc_diff"] == pytest.approx(np.mean([0.06, 0.07, 0.10]))
    assert "auc_effect" not in control and "auc_effect" not in rows["baseline"]
    assert control["auc_diff"] == pytest.approx(0.06)
    # s_logloss never moves: a NaN p-value; it is not in the primary family anyway
    assert np.isnan(rmtl_row["s_logloss_diff_p"]) and "s_logloss_effect_p_holm" not in rmtl_row
    # the primary family: the critic effect on AUC and logloss, nothing else
    family = [rmtl_row["auc_effect_p"], rmtl_row["logloss_effect_p"]]
    assert rmtl_row["auc_effect_p_holm"] == pytest.approx(holm_by_hand(family)[0])
    assert rmtl_row["logloss_effect_p_holm"] == pytest.approx(holm_by_hand(family)[1])
    assert not any(k.endswith("_holm") for r in (control, rows["baseline"]) for k in r)
    assert not any(k.startswith("auc_diff") and k.endswith("_holm") for k in rmtl_row)


def test_primary_family_detectable_effect_by_hand():
    """The detectable effect and the seeds for 0.001 use the spread of the paired critic
    effect and the strictest Holm level, 0.05 / 2 here (AUC and logloss of one task)."""
    from rmtl.lab import stats as rstats

    rows = {r["variant"]: r for r in ExperimentResult(control_records(), {}, {}).table()}
    sd = np.std([0.06 - 0.05, 0.07 - 0.06, 0.10 - 0.07], ddof=1)
    mde = rows["rmtl"]["auc_effect_mde"]
    assert mde == pytest.approx(rstats.detectable_effect(sd, 3, 0.025))
    assert rstats.power(mde, sd, 3, 0.025) == pytest.approx(0.8)
    assert rows["rmtl"]["auc_effect_seeds_for"] == rstats.seeds_needed(0.001, sd, 0.025)


def holm_by_hand(p):
    m, order, out, running = len(p), sorted(range(len(p)), key=lambda i: p[i]), [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_holm_matches_the_step_down_rule():
    p = [0.01, 0.04, 0.03, 0.005, float("nan"), 0.5]
    got = holm(p)
    assert np.isnan(got[4])
    np.testing.assert_allclose(
        [g for g in got if not np.isnan(g)], holm_by_hand([x for x in p if not np.isnan(x)])
    )
    assert (
        got[3] == pytest.approx(0.025)
        and got[0] == pytest.approx(0.04)
        and got[1] == pytest.approx(0.09)
    )
    assert got[5] == pytest.approx(0.5) and holm([0.6, 0.7]) == [1.0, 1.0]


def test_markdown_lists_every_row_and_the_oracle():
    res = ExperimentResult(hand_records(), {"ctr": {"auc": 0.81, "logloss": 0.18}}, {})
    md = res.to_markdown()
    lines = md.splitlines()
    assert lines[0].startswith(
        "| Model | Seeds | Epochs | ctr AUC | ctr Logloss | ctr s-Logloss | Checks |"
    )
    assert "primary family" in md and "exploratory" in md
    assert sum(line.startswith(("| ESMM |", "| RMTL-ESMM |")) for line in lines) == 2
    assert "| Oracle (true p) |  |  | 0.8100 | 0.1800 |" in md
    diff_line = next(line for line in lines if line.startswith("| RMTL-ESMM − ESMM |"))
    assert (
        "[" in diff_line and "*" not in diff_line
    )  # a confidence interval; exploratory: never starred


def test_experiment_runs_baselines_variants_and_transfer(splits, tmp_path):
    tr, va, te = splits
    kwargs = dict(
        backbones=("esmm", "sharedbottom"),
        seeds=(0, 1),
        weightings=("rmtl", "constant"),
        transfer=(("esmm", "sharedbottom"),),
        backbone_kwargs=NET,
        rmtl_kwargs=TINY,
    )
    res = rmtl.experiment(tr, va, te, checkpoint_dir=tmp_path, **kwargs)
    variants = {(r["model"], r["variant"]) for r in res.records}
    assert variants == {
        ("esmm", "baseline"),
        ("esmm", "rmtl"),
        ("esmm", "constant"),
        ("sharedbottom", "baseline"),
        ("sharedbottom", "rmtl"),
        ("sharedbottom", "constant"),
        ("sharedbottom", "rmtl[critics of esmm]"),
    }
    assert len(res.records) == 2 * 7 * 2
    table = res.table()
    assert len(table) == 7 * 2 and all(r["n"] == 2 for r in table)
    for r in table:
        if r["variant"] != "baseline":
            assert np.isnan(r["auc_diff_p"]) or 0 <= r["auc_diff_p"] <= 1
    assert res.config["rows"] == {"train": len(tr), "valid": len(va), "test": len(te)}
    # everything was checkpointed: a second run reloads and reproduces the records
    again = rmtl.experiment(tr, va, te, checkpoint_dir=tmp_path, **kwargs)
    assert again.records == res.records


def test_a_typed_config_reaches_the_agents_as_its_keywords_do(splits):
    """rmtl_kwargs as an RMTLConfig: the same records as the equivalent dict, and every
    job's agent holds that config with its own seed."""
    tr, va, te = splits
    kwargs = dict(
        backbones=("esmm",),
        seeds=(0, 1),
        weightings=("rmtl", "continued"),
        transfer=(),
        backbone_kwargs=NET,
    )
    config, agents = rmtl.RMTLConfig(**dict(TINY, lam=0.5)), {}
    typed = rmtl.experiment(
        tr,
        va,
        te,
        rmtl_kwargs=config,
        on_agent=lambda name, seed, agent: agents.update({seed: agent.config}),
        **kwargs,
    )
    plain = rmtl.experiment(tr, va, te, rmtl_kwargs=dict(TINY, lam=0.5), **kwargs)
    assert typed.records == plain.records
    assert agents == {0: config.replace(seed=0), 1: config.replace(seed=1)}
    assert typed.config["rmtl_kwargs"] == plain.config["rmtl_kwargs"] == config.to_dict()
    with pytest.raises(ValueError, match="'ple_paper' is not the authors' module"):
        rmtl.experiment(
            tr,
            va,
            te,
            **dict(kwargs, backbones=("ple_paper",)),
            rmtl_kwargs=config,
            compat="authors",
        )
    with pytest.raises(ValueError, match="give it once"):
        rmtl.experiment(tr, va, te, **kwargs, rmtl_kwargs={"compat": "authors"}, compat="x")
    with pytest.raises(TypeError, match="rmtl_kwargs: expected a mapping"):
        rmtl.experiment(tr, va, te, **kwargs, rmtl_kwargs=[("lam", 0.5)])


def test_oracle_from_true_probabilities(splits):
    tr, va, te = splits
    res = rmtl.experiment(
        tr,
        va,
        te,
        backbones=("esmm",),
        seeds=(0,),
        weightings=("constant",),
        transfer=(),
        backbone_kwargs=NET,
        rmtl_kwargs=TINY,
    )
    assert set(res.oracle) == set(te.task_names)
    for k, task in enumerate(te.task_names):
        assert res.oracle[task]["auc"] == pytest.approx(rmtl.metrics.oracle_auc(te.truth[:, k]))
        assert res.oracle[task]["logloss"] == pytest.approx(
            rmtl.metrics.logloss(te.labels[:, k], te.truth[:, k])
        )
    assert "Oracle (true p)" in res.to_markdown()


def test_bad_arguments(splits):
    tr, va, te = splits
    with pytest.raises(ValueError, match="transfer"):
        rmtl.experiment(tr, va, te, backbones=("esmm",), transfer=(("esmm", "mmoe"),))
    with pytest.raises(ValueError, match="weightings"):
        rmtl.experiment(tr, va, te, backbones=("esmm",), weightings=("cubic",), transfer=())
    with pytest.raises(ValueError, match="seed"):
        rmtl.experiment(tr, va, te, backbones=("esmm",), seeds=(), transfer=())


def test_the_default_transfer_runs_only_when_its_backbones_are_there(splits, monkeypatch):
    """transfer=None: ESMM's critics to MMoE when both run (ESMM with RMTL), else nothing, so
    one backbone runs as it reads; explicit pairs are checked as given."""
    tr, va, te = splits
    res = rmtl.experiment(
        tr,
        va,
        te,
        backbones=("esmm",),
        seeds=(0,),
        weightings=("constant",),
        backbone_kwargs=NET,
        rmtl_kwargs=TINY,
    )
    assert res.config["transfer"] == []
    assert {r["variant"] for r in res.records} == {"baseline", "constant"}

    class Planned(Exception):
        pass

    def planned(backbones, with_rmtl, seeds, weightings, transfer, *rest):
        raise Planned(transfer)

    monkeypatch.setattr(sys.modules["rmtl.lab.experiment"], "graph", planned)
    for kwargs, expected in (
        ({}, [("esmm", "mmoe")]),
        ({"backbones": ("mmoe", "esmm")}, [("esmm", "mmoe")]),
        ({"backbones": ("esmm", "ple")}, []),
        ({"rmtl_backbones": ("mmoe",)}, []),
        ({"transfer": ()}, []),
        ({"transfer": [["mmoe", "ple"]]}, [("mmoe", "ple")]),
    ):
        with pytest.raises(Planned) as e:
            rmtl.experiment(tr, va, te, **kwargs)
        assert e.value.args[0] == expected, kwargs
    with pytest.raises(ValueError, match=r"transfer: expected \(source, target\) pairs"):
        rmtl.experiment(tr, va, te, transfer=("esmm", "mmoe"))


def test_backbone_names_are_checked_up_front_and_compare_in_any_case(splits, monkeypatch):
    """An unknown backbone is refused before any job (with or without balancers); names in
    rmtl_backbones and transfer match backbones in any case and reach the graph as spelled
    there."""
    tr, va, te = splits

    class Planned(Exception):
        pass

    def planned(backbones, with_rmtl, seeds, weightings, transfer, *rest):
        raise Planned(list(backbones), with_rmtl, transfer)

    monkeypatch.setattr(sys.modules["rmtl.lab.experiment"], "graph", planned)
    for balancers in ((), ("uw",)):
        with pytest.raises(ValueError, match=r"backbones: expected names .*'esmm'.*\['nosuch'\]"):
            rmtl.experiment(tr, va, te, backbones=("esmm", "nosuch"), balancers=balancers)
    with pytest.raises(Planned) as e:
        rmtl.experiment(tr, va, te, backbones=("ESMM", "MMoE"), rmtl_backbones=("esmm",))
    assert e.value.args == (["ESMM", "MMoE"], ["ESMM"], [("ESMM", "MMoE")])
    with pytest.raises(Planned) as e:
        rmtl.experiment(tr, va, te, backbones=("ESMM", "mmoe"), transfer=[("esmm", "MMOE")])
    assert e.value.args == (["ESMM", "mmoe"], ["ESMM", "mmoe"], [("ESMM", "mmoe")])
    with pytest.raises(ValueError, match=r"backbones \['Ple'\] are not in"):
        rmtl.experiment(tr, va, te, backbones=("ESMM",), rmtl_backbones=("Ple",))


def test_controls_train_exactly_the_steps_rmtl_kept(splits):
    """budget="matched": in every seed, Continued, Static and Permuted train as many epochs
    (so Adam steps) as RMTL kept, without early stopping; Static's per-task weights are the
    means of RMTL's weights over those epochs."""
    tr, va, te = splits
    histories = {}
    res = rmtl.experiment(
        tr,
        va,
        te,
        backbones=("esmm",),
        seeds=(0, 1),
        weightings=("continued", "static", "permuted", "rmtl"),
        transfer=(),
        backbone_kwargs=NET,
        rmtl_kwargs=dict(TINY, epochs=6, patience=1),
        on_agent=lambda name, seed, agent: histories.__setitem__(seed, agent.history),
    )
    steps = {
        (r["variant"], r["seed"]): (r["steps"], r["kept_epoch"], r["epochs"]) for r in res.records
    }
    for seed in (0, 1):
        kept = steps["rmtl", seed][1]
        for control in ("continued", "static", "permuted"):
            assert steps[control, seed] == (steps["rmtl", seed][0], kept, kept)
        h = histories[seed]
        ref = rmtl.History.from_dict(h["finetuned-rmtl"])
        (static_key,) = [k for k in h if k.startswith("finetuned-static")]
        assert static_key.endswith(f"-epochs{kept}")
        for task in tr.task_names:
            want = np.mean([e[f"mean_weight_{task}"] for e in ref.epochs[:kept]])
            assert h[static_key]["epochs"][0][f"mean_weight_{task}"] == pytest.approx(
                want, rel=1e-6
            )
    table = {r["variant"]: r for r in res.table() if r["task"] == tr.task_names[0]}
    assert table["continued"]["steps_by_seed"] == table["rmtl"]["steps_by_seed"]
    assert "auc_vs_static" in table["rmtl"] and "auc_vs_permuted" in table["rmtl"]


def test_fixed_budget_trains_every_arm_the_same_epochs(splits):
    tr, va, te = splits
    res = rmtl.experiment(
        tr,
        va,
        te,
        backbones=("esmm",),
        seeds=(0,),
        weightings=("rmtl", "continued"),
        transfer=(),
        backbone_kwargs=NET,
        rmtl_kwargs=dict(TINY, finetune_epochs=3),
        budget="fixed",
    )
    assert {
        (r["variant"], r["epochs"], r["kept_epoch"])
        for r in res.records
        if r["variant"] != "baseline"
    } == {("rmtl", 3, 3), ("continued", 3, 3)}
    with pytest.raises(ValueError, match="add 'rmtl'"):
        rmtl.experiment(
            tr, va, te, backbones=("esmm",), seeds=(0,), weightings=("static",), transfer=()
        )
    with pytest.raises(ValueError, match="budget"):
        rmtl.experiment(tr, va, te, backbones=("esmm",), seeds=(0,), transfer=(), budget="own")


def test_per_seed_table_shows_each_arms_epochs_and_change():
    from rmtl.lab import report

    records = [dict(r, kept_epoch=2 + r["seed"], epochs=4) for r in control_records()]
    md = report.per_seed(ExperimentResult(records, {}, {}))
    lines = md.splitlines()
    assert lines[2] == "| Model | Seed | Baseline | continued | rmtl |"
    assert lines[4] == "| MMoE | 0 | 2/4 | 2/4: +0.0500 | 2/4: +0.0600 |"
    assert lines[6].startswith("| MMoE | 2 | 4/4 | 4/4: +0.0700 |")
