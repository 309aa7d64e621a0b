"""python -m rmtl run: the main job end to end at a tiny size, its files, config handling and
user errors (one line, exit status 2)."""
import csv
import json

import pytest

from rmtl.cli import main
from rmtl.job import AUTO_MIN_STEPS, PRESETS, JobConfig, load_config

from conftest import optional

optional("matplotlib", "plots")  # --out writes plots

TINY = ["--n-users", "400", "--seeds", "2", "--epochs", "2", "--critic-epochs", "1", "--min-steps", "8",
        "--no-progress"]


def test_run_prints_paper_table_and_writes_every_file(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--models", "singletask", "esmm", "--rmtl-models", "esmm", "--out", str(out)] + TINY
    assert main(argv) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| Model | Seeds | click AUC | click Logloss | click s-Logloss | pay AUC")
    names = [line.split("|")[1].strip() for line in lines[1:]]
    assert names == ["SingleTask", "ESMM", "Continued-ESMM", "RMTL-ESMM", "Oracle (true p)", "Comparison",
                     "Continued-ESMM − ESMM", "RMTL-ESMM − ESMM", "RMTL-ESMM − Continued-ESMM (critic effect)"]
    assert "±" in lines[4].split("|")[3]  # mean ± std
    effect = lines[-1].split("|")[3]
    assert effect.strip()[0] in "+-" and "(" in effect  # paired difference (adjusted p)
    assert "Holm-adjusted over all" in text
    for name in ("results.md", "results.csv", "results.json", "config.json", "training_curves.png",
                 "critic_curves.png", "stage3_weights.png", "q_by_position.png"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["name"] for r in rows} == {"SingleTask", "ESMM", "Continued-ESMM", "RMTL-ESMM", "Oracle (true p)"}
    assert len([r for r in rows if r["name"] == "ESMM"]) == 6  # 2 tasks x 3 metrics
    config = json.load(open(out / "config.json"))
    assert config["job"]["seeds"] == 2 and config["job"]["n_users"] == 400 and config["job"]["min_steps"] == 8
    assert config["experiment"]["seeds"] == [0, 1] and "numpy" in config["environment"]
    results = json.load(open(out / "results.json"))
    assert len(results["records"]) == 4 * 2 * 2  # (2 baselines + continued + RMTL) x 2 seeds x 2 tasks
    assert results["correction"].startswith("p-values Holm-adjusted")
    rmtl_row = next(r for r in results["rows"] if r["name"] == "RMTL-ESMM")
    assert {"diff", "p", "p_holm", "effect", "effect_p", "effect_p_holm"} <= set(rmtl_row["click/auc"])


def test_run_is_reproducible(tmp_path):
    argv = ["run", "--models", "sharedbottom", "--rmtl-models", "--no-progress", "--n-users", "300",
            "--seeds", "1", "--epochs", "1", "--min-steps", "0", "--init-output-bias", "prior"]
    for name in ("a", "b"):
        assert main(argv + ["--out", str(tmp_path / name)]) == 0
    a, b = (json.load(open(tmp_path / n / "results.json"))["records"] for n in ("a", "b"))
    assert a == b


def test_config_file_and_options(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\nmodels = ["esmm"]\nrmtl_models = []\nlam = 0.5\nseeds = 4\n')
    c = JobConfig(**load_config(str(path))).resolved()
    assert c.models == ("esmm",) and c.lam == 0.5 and c.seeds == 4 and c.n_users == PRESETS["quick"]["n_users"]
    assert c.min_steps == AUTO_MIN_STEPS and c.init_output_bias is None
    kw = JobConfig(min_steps=0, init_output_bias="prior", compat="authors").resolved().rmtl_kwargs()
    assert kw["min_steps"] == 0 and kw["init_output_bias"] == "prior" and kw["compat"] == "authors"
    with pytest.raises(ValueError, match="init_output_bias"):
        JobConfig(init_output_bias="zero").resolved()
    paper = JobConfig(preset="paper").resolved()
    assert paper.epochs == 100 and paper.critic_epochs == 96 and paper.seeds == 5


def test_bad_config_key_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("modles = ['esmm']\n")
    assert main(["run", "--config", str(path)]) == 2
    assert "unknown key(s) ['modles']" in capsys.readouterr().err


def test_unknown_dataset_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--dataset", "movielens"])
    assert e.value.code == 2 and "invalid choice: 'movielens'" in capsys.readouterr().err
