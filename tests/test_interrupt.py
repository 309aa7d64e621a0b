"""Ctrl-C stops rmtl.experiment and `rmtl run` at once, saves nothing of the unfinished stage,
and `rmtl run --resume DIR` continues to the result of an uninterrupted run; `--out`
problems are reported before any training."""

import json
import os
import sys

import pytest
from conftest import optional
from test_agent import FAST, NET, session_data

import rmtl
import rmtl.train
from rmtl.lab.cli import main

TINY = [
    "--models",
    "sharedbottom",
    "esmm",
    "--rmtl-models",
    "esmm",
    "--n-users",
    "300",
    "--seeds",
    "1",
    "--epochs",
    "2",
    "--critic-epochs",
    "2",
    "--no-progress",
]


def interrupt_epoch(monkeypatch, at):
    """Make the ``at``-th training epoch (over all Trainers) raise KeyboardInterrupt; returns
    the list of epochs started."""
    real, calls = rmtl.train.Trainer.train_epoch, []

    def epoch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(rmtl.train.Trainer, "train_epoch", epoch)
    return calls


def test_experiment_stops_at_once(monkeypatch, tmp_path):
    tr, va, te = session_data(n_sessions=120).split()
    calls = interrupt_epoch(monkeypatch, 2)
    kw = {k: v for k, v in FAST.items() if k != "progress"}
    with pytest.raises(KeyboardInterrupt):
        rmtl.experiment(
            tr,
            va,
            te,
            backbones=("esmm", "sharedbottom"),
            seeds=(0,),
            transfer=(),
            backbone_kwargs=NET,
            rmtl_kwargs=kw,
            checkpoint_dir=tmp_path,
        )
    assert len(calls) == 2  # nothing ran after the interrupted epoch
    assert os.listdir(tmp_path / "esmm-seed0") == ["pretrain"]  # the job of stage 1, unfinished:
    assert os.listdir(tmp_path / "esmm-seed0" / "pretrain") == [
        "agent.json"
    ]  # its settings, no model


def test_run_ctrl_c_exits_130_without_table_then_resume_equals_uninterrupted(
    monkeypatch, tmp_path, capsys
):
    optional("matplotlib", "plots")
    assert main(["run"] + TINY + ["--out", str(tmp_path / "full")]) == 0
    capsys.readouterr()
    for at in (3, 3):  # during stage 1 of esmm; on resume (stage 1 loaded), during its stage 3
        interrupt_epoch(monkeypatch, at)
        assert (
            main(
                ["run"]
                + TINY
                + ["--resume", str(tmp_path / "ckpt"), "--out", str(tmp_path / "part")]
            )
            == 130
        )
        out, err = capsys.readouterr()
        assert "|" not in out and err.strip() == "rmtl run: interrupted"
        assert not (tmp_path / "part" / "results.json").exists()
        monkeypatch.undo()
    assert (
        main(["run"] + TINY + ["--resume", str(tmp_path / "ckpt"), "--out", str(tmp_path / "part")])
        == 0
    )
    full, part = (json.load(open(tmp_path / n / "results.json")) for n in ("full", "part"))
    assert full["records"] == part["records"]


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    argv = ["run"] + TINY + ["--resume", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([a if a != "300" else "320" for a in argv]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "n_users" in err and err.count("\n") == 1


@pytest.mark.parametrize("problem", ["file", "blocked", "matplotlib"])
def test_out_problems_caught_before_training(problem, monkeypatch, tmp_path, capsys):
    out = tmp_path / "out"
    if problem != "matplotlib":
        optional("matplotlib", "plots")
    if problem == "file":
        out.write_text("x")
    elif problem == "blocked":
        (out / "results.md").mkdir(parents=True)
    else:
        monkeypatch.setitem(sys.modules, "matplotlib", None)
    calls = interrupt_epoch(monkeypatch, 10**9)
    assert main(["run"] + TINY + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rmtl run: error: --out") and err.count("\n") == 1
    assert calls == []
