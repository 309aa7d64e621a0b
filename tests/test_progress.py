"""Progress output: bars and epoch log records when asked for, nothing (and no tqdm.auto)
otherwise; nothing on stdout."""

import logging
import subprocess
import sys

import pytest

import rmtl
from rmtl.datasets import synthetic
from rmtl.lab.cli import main

SMALL = dict(embed_dim=4, bottom_dims=(8,), tower_dims=(4,))


def test_epoch_lines_are_log_records_and_bars_only_when_shown(capsys, caplog):
    # issue 32: per-epoch lines go to the "rmtl" loggers (INFO with progress), never stdout
    tr, va, _ = synthetic("retailrocket", n_users=300).split()
    model = rmtl.models.create("esmm", tr.field_dims, tr.num_dense, tr.num_tasks, **SMALL)
    with caplog.at_level(logging.INFO, logger="rmtl"):
        rmtl.Trainer(model, batch_size=256, progress=True).fit(tr, va, epochs=2, patience=5)
    out, err = capsys.readouterr()
    assert out == "" and "epoch=" not in err
    assert "epoch 2/2" in err  # the bar
    lines = [r for r in caplog.records if r.name == "rmtl.train"]
    assert [r.levelno for r in lines] == [logging.INFO] * 2
    assert lines[0].getMessage().startswith("epoch=1 train_loss=")
    assert lines[1].getMessage().startswith("epoch=2 train_loss=")
    assert "valid_auc=" in lines[1].getMessage() and lines[1].record["epoch"] == 2
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="rmtl"):
        rmtl.Trainer(model, batch_size=256, progress=False).fit(tr, va, epochs=1)
    assert capsys.readouterr() == ("", "")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]  # quiet at INFO


def test_agent_stages_log_their_epochs(capsys, caplog):
    tr, va, _ = synthetic("retailrocket", n_users=200).split()
    model = rmtl.models.create("esmm", tr.field_dims, tr.num_dense, tr.num_tasks, **SMALL)
    with caplog.at_level(logging.INFO, logger="rmtl"):
        rmtl.RMTL(model, epochs=1, critic_epochs=1, progress=True).fit(tr, va)
    assert capsys.readouterr().out == ""
    names = {r.name for r in caplog.records if r.getMessage().startswith("epoch=1 ")}
    assert {"rmtl.train", "rmtl._stages"} <= names


def test_nothing_shows_unless_logging_is_configured(tmp_path):
    code = (
        "import logging, sys, rmtl\n"
        "tr, va, _ = rmtl.datasets.synthetic('retailrocket', n_users=200).split()\n"
        "m = rmtl.models.create('esmm', tr.field_dims, tr.num_dense, tr.num_tasks, embed_dim=4, "
        "bottom_dims=(8,), tower_dims=(4,))\n"
        "rmtl.Trainer(m, progress=True).fit(tr, va, epochs=1)\n"
        "if sys.argv[1:]:\n"
        "    logging.basicConfig(level=logging.INFO, format='%(name)s %(message)s')\n"
        "    rmtl.Trainer(m, progress=True).fit(tr, va, epochs=1)\n"
    )
    quiet = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and "epoch=" not in quiet.stderr
    shown = subprocess.run(
        [sys.executable, "-c", code, "on"], capture_output=True, text=True, cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "" and "rmtl.train epoch=1 train_loss=" in shown.stderr


@pytest.mark.filterwarnings("ignore:convergence checks failed")
def test_the_command_keeps_stdout_for_its_results(capsys):
    # rmtl run shows one bar over its runs (its jobs train without per-epoch lines, as before)
    argv = ["run", "--models", "esmm", "--rmtl-models", "--seeds", "1", "--n-users", "300"]
    assert main(argv + ["--epochs", "1", "--min-steps", "1", "--processes", "1"]) == 0
    out, err = capsys.readouterr()
    assert "epoch=" not in out + err and "| ESMM |" in out and "rmtl run: 100%" in err


def test_silent_runs_do_not_import_the_notebook_bars(tmp_path):
    # tqdm.auto warns in a Jupyter kernel without ipywidgets even when every bar is disabled
    code = (
        "import sys, rmtl\n"
        "tr, va, _ = rmtl.datasets.synthetic('retailrocket', n_users=200).split()\n"
        "m = rmtl.models.create('esmm', tr.field_dims, tr.num_dense, tr.num_tasks, embed_dim=4, "
        "bottom_dims=(8,), tower_dims=(4,))\n"
        "agent = rmtl.RMTL(m, epochs=1, critic_epochs=1, progress=False)\n"
        "agent.fit(tr, va)\n"
        "print('tqdm.auto' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
