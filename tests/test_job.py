"""python -m rmtl run: the main job end to end at a tiny size, its files, config handling and
user errors (one line, exit status 2)."""

import csv
import json

import pytest
from conftest import optional

import rmtl
from rmtl import RMTLConfig
from rmtl.lab.cli import main
from rmtl.lab.run import run
from rmtl.lab.settings import (
    AUTO_MIN_STEPS,
    PRESETS,
    RunConfig,
    describe_budgets,
    describe_gemm,
    load_config,
)

optional("matplotlib", "plots")  # --out writes plots

TINY = [
    "--n-users",
    "400",
    "--seeds",
    "2",
    "--epochs",
    "2",
    "--critic-epochs",
    "1",
    "--min-steps",
    "8",
    "--no-progress",
]


def test_run_prints_paper_table_and_writes_every_file(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "run",
        "--models",
        "singletask",
        "esmm",
        "--rmtl-models",
        "esmm",
        "--out",
        str(out),
    ] + TINY
    assert main(argv) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].startswith(
        "| Model | Seeds | Epochs | click AUC | click Logloss | click s-Logloss | pay AUC"
    )
    names = [line.split("|")[1].strip() for line in lines[1:]]
    arms = ["SingleTask", "ESMM", "Continued-ESMM", "Permuted-ESMM", "RMTL-ESMM", "Static-ESMM"]
    assert names[:7] == arms + ["Oracle (true p)"]
    assert names[7:10] == ["Critic effect (primary)", "RMTL-ESMM − Continued-ESMM", "Detectable"]
    assert names[10] == "RMTL-ESMM − Continued-ESMM" and names[11] == "Comparison"
    assert sorted(names[12:]) == sorted(
        [f"{a} − ESMM" for a in arms[2:]]
        + [
            "Permuted-ESMM − Continued-ESMM",
            "RMTL-ESMM − Static-ESMM",
            "RMTL-ESMM − Permuted-ESMM",
            "Static-ESMM − Continued-ESMM",
        ]
    )
    assert "±" in lines[4].split("|")[4]  # mean ± std
    effect = lines[9].split("|")[3]
    assert (
        effect.strip()[0] in "+-" and "[" in effect and "(" in effect
    )  # mean [95% CI] (adjusted p)
    assert "primary family" in text and "budgets: stage 1: up to 2 epochs" in text
    assert f"matrix products: {describe_gemm(rmtl.blas_info())}" in text
    # every control trained exactly the epochs RMTL kept (the Epochs column: kept/run (steps))
    epochs = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in lines[1:7]}
    assert epochs["Continued-ESMM"] == epochs["Static-ESMM"] == epochs["Permuted-ESMM"]
    for name in (
        "results.md",
        "results.csv",
        "results.json",
        "config.json",
        "training_curves.png",
        "critic_curves.png",
        "stage3_weights.png",
        "q_by_position.png",
    ):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["name"] for r in rows} == {
        "SingleTask",
        "ESMM",
        "Continued-ESMM",
        "RMTL-ESMM",
        "Static-ESMM",
        "Permuted-ESMM",
        "Oracle (true p)",
    }
    assert len([r for r in rows if r["name"] == "ESMM"]) == 6  # 2 tasks x 3 metrics
    config = json.load(open(out / "config.json"))
    assert (
        config["job"]["seeds"] == 2
        and config["job"]["n_users"] == 400
        and config["job"]["min_steps"] == 8
    )
    assert config["experiment"]["seeds"] == [0, 1] and "numpy" in config["environment"]
    # 2 steps per epoch: the explicit 8-step floor raises stage 1 to 4 epochs, and says so
    assert (
        config["budgets"]["stage1"]["most_epochs"] == 4
        and config["budgets"]["stage3"]["budget"] == "matched"
    )
    assert "8-step floor raising them to 4" in text
    results = json.load(open(out / "results.json"))
    assert (
        len(results["records"]) == 6 * 2 * 2
    )  # (2 baselines + RMTL + 3 controls) x 2 seeds x 2 tasks
    assert results["correction"].startswith("primary family")
    rmtl_row = next(r for r in results["rows"] if r["name"] == "RMTL-ESMM")
    assert {
        "diff",
        "diff_low",
        "diff_high",
        "diff_p",
        "effect",
        "effect_p",
        "effect_p_holm",
        "effect_mde",
        "vs_static",
        "vs_permuted_p",
    } <= set(rmtl_row["click/auc"])


def test_run_is_reproducible(tmp_path):
    argv = [
        "run",
        "--models",
        "sharedbottom",
        "--rmtl-models",
        "--no-progress",
        "--n-users",
        "300",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--min-steps",
        "0",
        "--init-output-bias",
        "prior",
    ]
    for name in ("a", "b"):
        assert main(argv + ["--out", str(tmp_path / name)]) == 0
    a, b = (json.load(open(tmp_path / n / "results.json"))["records"] for n in ("a", "b"))
    assert a == b


def test_config_file_and_options(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\nmodels = ["esmm"]\nrmtl_models = []\nlam = 0.5\nseeds = 4\n')
    c = RunConfig(**load_config(str(path))).resolved()
    assert (
        c.models == ("esmm",)
        and c.lam == 0.5
        and c.seeds == 4
        and c.n_users == PRESETS["quick"]["n_users"]
    )
    assert c.min_steps == AUTO_MIN_STEPS and c.init_output_bias is None
    authors = RunConfig(min_steps=0, init_output_bias="prior", compat="authors").resolved()
    agents = authors.rmtl_config()
    assert agents.min_steps == 0 and agents.init_output_bias == "prior"
    assert agents.batch_order == "time" and agents.early_stopping == "auc"  # the authors' switches
    with pytest.raises(ValueError, match="init_output_bias"):
        RunConfig(init_output_bias="zero").resolved()
    paper = RunConfig(preset="paper").resolved()
    assert paper.epochs == 100 and paper.critic_epochs == 96 and paper.seeds == 5


def test_explicit_epochs_are_never_raised_by_the_floor():
    """The automatic step floor applies to stage 1 only, and only when neither --epochs nor
    --min-steps is given; the budgets say what each stage runs."""
    auto = RunConfig().resolved()
    assert auto.min_steps == AUTO_MIN_STEPS and auto.early_stopping == "logloss"
    b = auto.budgets(2000)  # one step per epoch at batch 2048: the floor raises 12 epochs to 500
    assert b["stage1"]["most_epochs"] == 500 and b["stage3"]["epochs"] == 12
    assert "500-step floor raising them to 500" in describe_budgets(b)
    four = RunConfig(epochs=4).resolved()
    assert four.min_steps == 0 and four.budgets(2000)["stage1"]["most_epochs"] == 4
    assert four.rmtl_config().epochs == 4 and four.budgets(2000)["stage3"]["epochs"] == 4
    both = RunConfig(epochs=4, min_steps=10).resolved()  # both explicit: the header says so
    assert "10-step floor raising them to 10" in describe_budgets(both.budgets(2000))
    authors = RunConfig(compat="authors", models=("esmm",), rmtl_models=("esmm",)).resolved()
    assert authors.min_steps == 0 and authors.early_stopping == "auc"
    fixed = RunConfig(budget="fixed", finetune_epochs=3).resolved()
    assert "every arm exactly 3 epochs" in describe_budgets(fixed.budgets(2000))
    with pytest.raises(ValueError, match="controls"):
        RunConfig(controls=("continued", "shuffled")).resolved()


def test_bad_config_key_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("modles = ['esmm']\n")
    assert main(["run", "--config", str(path)]) == 2
    assert "unknown key(s) ['modles']" in capsys.readouterr().err


def test_unknown_dataset_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--dataset", "movielens"])
    assert e.value.code == 2 and "invalid choice: 'movielens'" in capsys.readouterr().err


def test_fixed_budget_run_writes_every_file(tmp_path):
    out = tmp_path / "fixed"
    argv = [
        "run",
        "--models",
        "esmm",
        "--rmtl-models",
        "esmm",
        "--budget",
        "fixed",
        "--finetune-epochs",
        "2",
        "--controls",
        "continued",
        "--out",
        str(out),
    ] + TINY
    assert main(argv) == 0
    records = json.load(open(out / "results.json"))["records"]
    assert {
        (r["variant"], r["epochs"], r["kept_epoch"]) for r in records if r["variant"] != "baseline"
    } == {("rmtl", 2, 2), ("continued", 2, 2)}
    assert (out / "training_curves.png").stat().st_size > 0


@pytest.mark.filterwarnings("ignore:convergence checks failed")
def test_an_agent_setting_is_checked_once_where_it_enters(monkeypatch, capsys):
    """A run's lam is checked by building the agents' RMTLConfig, once for the whole run
    (no job, stage or Trainer checks it again), and a bad one fails with RMTLConfig's own
    message, once."""
    with pytest.raises(ValueError) as own:
        RMTLConfig(lam=-1.0)
    with pytest.raises(ValueError) as run_config:
        RunConfig(lam=-1.0).resolved()
    assert str(run_config.value) == str(own.value)
    assert str(own.value) == "lam: expected a finite value in [0, inf), got -1.0"
    assert main(["run", "--lam", "-1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("lam: expected") == 1 and err.count("\n") == 1

    real, checked = rmtl.config.RANGES["lam"], []

    class Counting:
        def check(self, name, value):
            checked.append(value)
            return real.check(name, value)

    monkeypatch.setitem(rmtl.config.RANGES, "lam", Counting())
    job = run(
        RunConfig(
            models=("esmm",),
            rmtl_models=("esmm",),
            controls=("continued",),
            lam=0.5,
            n_users=300,
            seeds=1,
            epochs=1,
            critic_epochs=1,
            progress=False,
        )
    )
    assert checked == [0.5] and job.config.rmtl_config().lam == 0.5
    assert {r["variant"] for r in job.result.records} == {"baseline", "rmtl", "continued"}


@pytest.mark.parametrize(
    "info, expected",
    [
        (dict(backend="blas", blas_per_thread=True), "SciPy's BLAS sgemm, one thread per call"),
        (dict(backend="blas", blas_per_thread=False), "SciPy's BLAS sgemm"),
        (dict(backend="builtin", forced_builtin=True), "(RMTL_BLAS=builtin)"),
        (dict(backend="builtin", blas_available=False), "could not be loaded"),
        (dict(backend="builtin", address_space_limited=True), "address-space limit (ulimit -v)"),
        (dict(backend="builtin"), "set with rmtl.set_gemm_backend"),
    ],
)
def test_the_run_header_says_which_gemm_ran_and_why(info, expected):
    """issue 33: under ulimit -v the built-in kernel is the default; the header says so."""
    full = dict(
        blas_per_thread=True, forced_builtin=False, blas_available=True, address_space_limited=False
    )
    assert expected in describe_gemm({**full, **info})
