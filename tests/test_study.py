"""The critic-effect study (rmtl.study): the table builder on hand-made results (paired
differences, Holm across the whole study, verdicts) and a tiny real grid end to end."""
import numpy as np
import pytest
from scipy import stats

from rmtl.experiments import ExperimentResult, holm
from rmtl.study import Setting, run_study, study_markdown, study_rows

SEEDS = range(4)


def result(effect, flags=()):
    """ESMM baseline, continued and rmtl over 4 seeds; rmtl = continued + effect (per seed)."""
    records = []
    for seed in SEEDS:
        for variant, shift in (("baseline", -0.02), ("continued", 0.0), ("rmtl", effect[seed])):
            for task in ("click", "pay"):
                records.append({"model": "esmm", "variant": variant, "seed": seed, "task": task,
                                "auc": 0.7 + 0.001 * seed + shift, "logloss": 0.2 - 0.001 * seed - shift,
                                "s_logloss": 0.2, "flags": list(flags) if variant == "rmtl" else []})
    return ExperimentResult(records, {}, {})


def test_rows_pair_by_seed_and_adjust_across_the_whole_study():
    up = [0.010, 0.011, 0.012, 0.010]
    cells = [("s1", None, result([0.0, 0.001, -0.001, 0.0])), ("s1", "critic", result(up))]
    rows = study_rows(cells)
    assert [(r["setting"], r["context"], r["task"]) for r in rows] == [
        ("s1", "none", "click"), ("s1", "none", "pay"), ("s1", "critic", "click"), ("s1", "critic", "pay")]
    r = rows[2]
    assert r["auc_effect"] == pytest.approx(np.mean(up)) and r["logloss_effect"] == pytest.approx(-np.mean(up))
    assert r["auc_diff"] == pytest.approx(np.mean(up) + 0.02)
    cont = [0.7 + 0.001 * s for s in SEEDS]
    assert r["auc_effect_p"] == pytest.approx(stats.ttest_rel([c + u for c, u in zip(cont, up)], cont).pvalue)
    keys = [(i, k) for i, row in enumerate(rows) for k in row if k.endswith("_p")]
    assert [rows[i][k + "_holm"] for i, k in keys] == holm([rows[i][k] for i, k in keys])
    table = study_markdown(rows)
    assert table.count("\n| s1 |") == 4 and "Holm-adjusted over all 16 paired t-tests" in table
    assert table.splitlines()[4].endswith("| ok | + |") and table.splitlines()[2].endswith("| ok | 0 |")


def test_a_flagged_cell_is_never_called_a_change():
    rows = study_rows([("s", "both", result([0.02, 0.021, 0.022, 0.02], flags=["calibration"]))])
    assert not rows[0]["checked"] and rows[0]["auc_effect_p_holm"] < 0.05
    assert study_markdown(rows).splitlines()[2].endswith("| flagged | 0 |")


@pytest.mark.filterwarnings("ignore:convergence checks failed")
def test_tiny_grid_end_to_end():
    seen = []
    cells = run_study([Setting("tiny", {"momentum": 0.5}, {"bottom_dims": (8,), "tower_dims": (4,)})],
                      contexts=(None, "critic"), n_users=40, seeds=2,
                      rmtl_kwargs={"epochs": 1, "critic_epochs": 1, "min_steps": 0, "critic_batch_size": 64},
                      on_cell=lambda s, c, r: seen.append((s, c)))
    assert seen == [("tiny", None), ("tiny", "critic")]
    rows = study_rows(cells)
    assert len(rows) == 4 and all(r["n"] == 2 for r in rows)
    # the baselines do not depend on where the critics' context goes: same backbone input
    base = [[r for r in res.records if r["variant"] == "baseline"] for _, _, res in cells]
    np.testing.assert_array_equal([r["auc"] for r in base[0]], [r["auc"] for r in base[1]])
    with pytest.raises(ValueError, match="contexts"):
        run_study(contexts=("actor",))
