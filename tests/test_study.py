"""The critic-effect study (rmtl.lab.study): rows built from hand-made results (pairing by seed,
CIs and p-values against scipy, Holm over the primary family only), the config's checks, the
JSON round trip, the heat maps, the command line and a tiny real grid end to end."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from rmtl import CorruptFileError
from rmtl.lab.report import ExperimentResult
from rmtl.lab.stats import holm
from rmtl.lab.study import (
    COMPARISONS,
    Axis,
    Cell,
    SavedStudy,
    StudyConfig,
    load_study,
    run_study,
    save_study,
    study_markdown,
    study_rows,
)

SEEDS = (3, 1, 2, 0)  # records out of seed order: rows must pair by seed, not by position
SHIFT = {"baseline": -0.02, "continued": 0.0, "static": 0.001, "permuted": -0.001}
NOISE = {
    "baseline": (0, 3, 1, 2),
    "continued": (1, 0, 2, 4),
    "static": (2, 2, 0, 1),
    "permuted": (0, 1, 3, 3),
}


def result(effect, flags=()):
    """ESMM baseline and the four stage-3 variants over 4 seeds; rmtl = continued + effect[seed]."""
    records = []
    for variant in ("baseline", "continued", "static", "permuted", "rmtl"):
        for seed in SEEDS:
            own = "continued" if variant == "rmtl" else variant
            shift = (
                SHIFT[own]
                + 0.0002 * NOISE[own][seed]
                + (effect[seed] if variant == "rmtl" else 0.0)
            )
            for task in ("click", "pay"):
                records.append(
                    {
                        "model": "esmm",
                        "variant": variant,
                        "seed": seed,
                        "task": task,
                        "auc": 0.7 + 0.001 * seed + shift,
                        "logloss": 0.2 - 0.001 * seed - shift,
                        "s_logloss": 0.2,
                        "epochs": 3,
                        "kept_epoch": 1,
                        "steps": 30,
                        "flags": list(flags) if variant == "rmtl" else [],
                    }
                )
    return ExperimentResult(records, {}, {})


def metric(res, variant, task, key):
    """``key`` of ``variant`` and ``task`` in ``res``, in seed order 0..3."""
    by_seed = {
        r["seed"]: r[key] for r in res.records if r["variant"] == variant and r["task"] == task
    }
    return [by_seed[s] for s in sorted(by_seed)]


UP = [0.010, 0.011, 0.012, 0.010]
FLAT = [0.0, 0.001, -0.001, 0.0005]


def test_rows_pair_by_seed_with_cis_and_p_values_as_scipy_computes_them():
    res = result(UP)
    rows = study_rows([Cell({"momentum": 0.0, "click_rate": 0.3}, "critic", res)])
    assert [(r["axes"], r["context"], r["task"], r["n"]) for r in rows] == [
        ({"momentum": 0.0, "click_rate": 0.3}, "critic", t, 4) for t in ("click", "pay")
    ]
    r = rows[0]
    for c in COMPARISONS:
        other = {
            "effect": "continued",
            "static_effect": "continued",
            "permuted_effect": "continued",
            "vs_static": "static",
            "vs_permuted": "permuted",
        }[c.name]
        for m in ("auc", "logloss"):
            a, b = metric(res, c.variant, "click", m), metric(res, other, "click", m)
            d = np.subtract(a, b)
            low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
            assert r[f"{m}_{c.name}"] == pytest.approx(d.mean(), abs=1e-12)
            assert (r[f"{m}_{c.name}_low"], r[f"{m}_{c.name}_high"]) == pytest.approx(
                (low, high), abs=1e-12
            )
            assert r[f"{m}_{c.name}_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
            assert r[f"{c.name}_checked"]
    assert r["auc_effect"] == pytest.approx(np.mean(UP))


def test_holm_covers_only_the_primary_family_across_cells():
    cells = [
        Cell({"momentum": m, "click_rate": 0.3}, "critic", result(e))
        for m, e in ((0.0, FLAT), (0.6, UP))
    ]
    rows = study_rows(cells)
    family = [(r, f"{m}_effect_p") for r in rows for m in ("auc", "logloss")]
    assert len(family) == 8
    assert [r[k + "_holm"] for r, k in family] == holm([r[k] for r, k in family])
    assert sorted({k for r in rows for k in r if k.endswith("_holm")}) == [
        "auc_effect_p_holm",
        "logloss_effect_p_holm",
    ]
    table = study_markdown(rows)
    assert "8 paired t-tests" in table and "exploratory" in table
    click_auc = [
        line for line in table.splitlines() if line.startswith("| 0.6 | 0.3 | critic | click")
    ][0]
    assert f"{np.mean(UP):+.4f}* [" in click_auc  # significant after Holm, both sides checked


def test_a_flagged_comparison_is_never_starred():
    rows = study_rows(
        [Cell({"momentum": 0.0, "click_rate": 0.3}, "none", result(UP, flags=["overfit"]))]
    )
    assert not rows[0]["effect_checked"] and rows[0]["auc_effect_p_holm"] < 0.05
    lines = [
        line.split(" | ") for line in study_markdown(rows).splitlines() if line.startswith("| 0 |")
    ]
    assert len(lines) == 4 and not any(
        "*" in cell for line in lines for cell in line[6:9]
    )  # the rmtl sides
    assert (
        rows[0]["flags"] == {"rmtl": {"overfit": 4}}
        and study_markdown(rows).count("| rmtl overfit 4/4 |") == 4
    )


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"context": "actor"}, "context: expected one of"),
        ({"x": Axis("momentum", (0.0,)), "y": Axis("momentum", (0.3,))}, "two different knobs"),
        ({"synth": {"momentum": 0.5}}, "'momentum' is set by an axis"),
        ({"synth": {"n_users": 5}}, "set by the field n_users"),
        ({"synth": {"target_rates": (0.1, 0.2)}}, "expected pay < click"),
        ({"synth": {"fields": ()}}, "numeric fields of rmtl.datasets.synth.SyntheticConfig"),
        ({"synth": {"fatigue": math.inf}}, "synth fatigue: expected a finite number, got inf"),
        ({"seeds": 1}, "seeds .*got 1"),
        ({"n_users": 0}, "n_users: expected a finite integer"),
        ({"lam": -1.0}, "lam: expected a finite value"),
        ({"critic_epochs": 0}, "critic_epochs: expected"),
        ({"budget": "long"}, "budget: expected one of"),
        ({"backbone": "resnet"}, "backbone: expected one of"),
        ({"backbone_kwargs": {"embed_dim": 0}}, "backbone_kwargs of esmm: embed_dim"),
        ({"backbone_kwargs": {"seed": 1}}, "remove 'seed'"),
        ({"rmtl_kwargs": {"lam": 0.5}}, "'lam' is a field of StudyConfig"),
        ({"rmtl_kwargs": {"colour": 1}}, "expected fields of rmtl.RMTLConfig, got 'colour'"),
    ],
)
def test_config_checks_name_the_field_and_the_value(kwargs, error):
    with pytest.raises((ValueError, TypeError), match=error):
        StudyConfig(**kwargs)


@pytest.mark.parametrize(
    "knob, values, error",
    [
        ("colour", (1.0,), "knob: expected one of"),
        ("momentum", (), "momentum values: expected a non-empty sequence"),
        ("momentum", "0.3", "expected a non-empty sequence"),
        ("momentum", (0.3, 0.3), "expected distinct values"),
        ("momentum", (0.3, "a"), r"momentum values\[1\]: expected a number"),
        ("click_rate", (0.1, 1.0), r"click_rate values\[1\]: expected a finite value in \(0, 1\)"),
        ("context", ("none", "actor"), r"context values\[1\]: expected one of"),
    ],
)
def test_axis_checks(knob, values, error):
    with pytest.raises((ValueError, TypeError), match=error):
        Axis(knob, values)


def test_cells_of_the_grid():
    config = StudyConfig(
        x=Axis("context", ("none", "both")),
        y=Axis("click_rate", (0.06, 0.3)),
        context="critic",
        synth={"target_rates": (0.3, 0.1)},
    )
    assert config.grid() == [
        {"context": c, "click_rate": r} for c in ("none", "both") for r in (0.06, 0.3)
    ]
    at = config.grid()[0]
    assert config.context_of(at) == "none" and config.context_of({"momentum": 0.3}) == "critic"
    assert config.synthetic_overrides(at)["target_rates"] == pytest.approx((0.06, 0.02))
    assert (
        config.rmtl_settings()["critic_epochs"] == 96
        and "finetune_epochs" not in config.rmtl_settings()
    )


def test_json_round_trip(tmp_path):
    rows = study_rows([Cell({"momentum": 0.3, "click_rate": 0.1}, "critic", result(FLAT))])
    rows[0]["auc_vs_static_p"] = math.nan
    config = StudyConfig(
        synth={"fatigue": 0.1, "target_rates": (0.3, 0.1)}, backbone_kwargs={"bottom_dims": (8,)}
    )
    save_study(
        tmp_path / "s.json", SavedStudy(config, rows, {"command": "python x", "seconds": 1.5})
    )
    back = load_study(tmp_path / "s.json")
    assert back.config == config and back.run == {"command": "python x", "seconds": 1.5}
    assert "NaN" not in (tmp_path / "s.json").read_text()
    assert len(back.rows) == len(rows)
    for a, b in zip(back.rows, rows):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])), k
    (tmp_path / "other.json").write_text('{"rows": []}')
    with pytest.raises(CorruptFileError, match="other.json: not a study"):
        load_study(tmp_path / "other.json")


def test_heat_maps_draw_every_cell_with_its_annotation():
    pytest.importorskip("matplotlib")
    from rmtl.lab.study import effect_maps

    cells = [
        Cell(
            {"momentum": m, "context": c},
            c,
            result(UP if m else FLAT, flags=["overfit"] * (c == "both")),
        )
        for m in (0.0, 0.6)
        for c in ("none", "critic", "both")
    ]
    rows = study_rows(cells)
    fig = effect_maps(rows, "click", "auc")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [c.label for c in COMPARISONS]
    for ax in panels:
        assert len(ax.images) == 1 and ax.images[0].get_array().shape == (3, 2)
        assert len(ax.texts) == 6 and all("[" in t.get_text() for t in ax.texts)
    effect = {t.get_position(): t.get_text() for t in panels[0].texts}
    assert effect[(1, 1)].startswith(f"{np.mean(UP):+.4f}*")  # momentum 0.6, critic: significant
    assert "*" not in effect[(1, 2)] and effect[(1, 2)].endswith("flagged")  # context both: flagged
    assert "*" not in effect[(0, 0)]  # momentum 0: no effect
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["0", "0.6"]
    two = effect_maps(rows, "pay", "logloss", comparisons=("effect", "vs_static"))
    assert len([ax for ax in two.axes if ax.get_title()]) == 2
    with pytest.raises(ValueError, match="task"):
        effect_maps(rows, "watch")


def test_heat_maps_take_known_comparison_names_only():
    """A plain string is one name (not a substring of names); an unknown name is refused."""
    pytest.importorskip("matplotlib")
    from rmtl.lab.study import effect_maps

    rows = study_rows(
        [Cell({"momentum": m, "context": "critic"}, "critic", result(UP)) for m in (0.0, 0.6)]
    )
    one = effect_maps(rows, "click", comparisons="static_effect")
    assert [ax.get_title() for ax in one.axes if ax.get_title()] == ["static - continued"]
    known = str([c.name for c in COMPARISONS]).replace("[", r"\[").replace("]", r"\]")
    for bad, given in (
        (("effect", "nosuch"), r"\['effect', 'nosuch'\] \(unknown: \['nosuch'\]\)"),
        ("static", r"\['static'\] \(unknown: \['static'\]\)"),
        ((), r"\[\]$"),
    ):
        with pytest.raises(
            ValueError, match=rf"comparisons: expected names from {known}, got {given}"
        ):
            effect_maps(rows, "click", comparisons=bad)


def test_grid_values_needs_every_row_over_the_same_two_axes():
    from rmtl.lab.study import grid_values

    rows = [
        {"axes": {"momentum": 0.0, "context": "none"}},
        {"axes": {"context": "both", "momentum": 0.6}},
    ]
    assert grid_values(rows) == (("momentum", [0.0, 0.6]), ("context", ["none", "both"]))
    rows.append({"axes": {"momentum": 0.3, "click_rate": 0.1}})
    with pytest.raises(
        ValueError,
        match=r"rows: expected every row over the first row's axes \['momentum', 'context'\], "
        r"got a row over \['momentum', 'click_rate'\]",
    ):
        grid_values(rows)


def test_the_command_line_sets_every_field(monkeypatch):
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))  # as `python benchmarks/...` sees its neighbours
    spec = importlib.util.spec_from_file_location("study_cli", bench / "study_critic_effect.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    d = StudyConfig()
    args = cli.parser(d).parse_args(
        [
            "--x",
            "leave_base",
            "-3",
            "-1.8",
            "--y",
            "context",
            "none",
            "both",
            "--synth",
            "momentum=0.6",
            "--n-users",
            "300",
            "--seeds",
            "3",
            "--critic-epochs",
            "8",
            "--lam",
            "0.5",
            "--gamma",
            "0.8",
            "--batch-size",
            "256",
            "--critic-batch-size",
            "128",
            "--budget",
            "fixed",
            "--finetune-epochs",
            "2",
            "--net",
            "bottom_dims=(8,)",
            "--rmtl",
            "patience=3",
            "--backbone",
            "mmoe",
            "--data-seed",
            "4",
        ]
    )
    c = cli.config_from(args, d)
    assert c.x == Axis("leave_base", (-3.0, -1.8)) and c.y == Axis("context", ("none", "both"))
    assert c.synth == {**d.synth, "momentum": 0.6} and c.backbone_kwargs["bottom_dims"] == (8,)
    assert (
        c.n_users,
        c.seeds,
        c.critic_epochs,
        c.lam,
        c.gamma,
        c.batch_size,
        c.critic_batch_size,
        c.budget,
        c.finetune_epochs,
        c.backbone,
        c.data_seed,
        c.rmtl_kwargs["patience"],
    ) == (300, 3, 8, 0.5, 0.8, 256, 128, "fixed", 2, "mmoe", 4, 3)
    assert cli.config_from(cli.parser(d).parse_args([]), d) == d


@pytest.mark.filterwarnings("ignore:convergence checks failed")
def test_tiny_grid_end_to_end():
    config = StudyConfig(
        x=Axis("momentum", (0.5,)),
        y=Axis("context", ("none", "critic")),
        synth={"fatigue": 0.1, "calibration_users": 200},
        n_users=40,
        seeds=2,
        critic_epochs=1,
        critic_batch_size=64,
        backbone_kwargs={"bottom_dims": (8,), "tower_dims": (4,)},
        rmtl_kwargs={"epochs": 1, "min_steps": 0},
    )
    seen = []
    cells = run_study(config, on_cell=lambda cell: seen.append((cell.at, cell.context)))
    assert seen == [
        ({"momentum": 0.5, "context": "none"}, "none"),
        ({"momentum": 0.5, "context": "critic"}, "critic"),
    ]
    rows = study_rows(cells)
    assert len(rows) == 4 and all(r["n"] == 2 for r in rows)
    assert {r["variant"] for r in cells[0].result.records} == {
        "baseline",
        "rmtl",
        "continued",
        "static",
        "permuted",
    }
    # the baselines do not depend on where the critics' context goes: same backbone input
    base = [[r["auc"] for r in cell.result.records if r["variant"] == "baseline"] for cell in cells]
    np.testing.assert_array_equal(base[0], base[1])
    with pytest.raises(TypeError, match="StudyConfig"):
        run_study({"seeds": 2})
