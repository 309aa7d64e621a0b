"""Progress output: epoch lines and bars when asked for, nothing (and no tqdm.auto) otherwise."""

import subprocess
import sys

import rmtl
from rmtl.datasets import synthetic

SMALL = dict(embed_dim=4, bottom_dims=(8,), tower_dims=(4,))


def test_epoch_lines_and_bars_only_when_shown(capsys):
    tr, va, _ = synthetic("retailrocket", n_users=300).split()
    model = rmtl.models.create("esmm", tr.field_dims, tr.num_dense, tr.num_tasks, **SMALL)
    rmtl.Trainer(model, batch_size=256, progress=True).fit(tr, va, epochs=2, patience=5)
    out, err = capsys.readouterr()
    assert "epoch=1 train_loss=" in out and "epoch=2 train_loss=" in out and "valid_auc=" in out
    assert "epoch 2/2" in err  # the bar
    rmtl.Trainer(model, batch_size=256, progress=False).fit(tr, va, epochs=1)
    assert capsys.readouterr() == ("", "")


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
