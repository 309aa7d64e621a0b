"""Issue 33's reproducers of the Python side: each wrong or unclear behaviour an adversarial
user found is a clear error naming what to change (or the right behaviour), one test each."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import threadpoolctl

import rmtl
from rmtl.config import MOST_STEPS
from rmtl.lab import cli
from rmtl.lab import run as run_module
from rmtl.lab.cli import main
from rmtl.lab.executors import MAX_PROCESSES
from rmtl.lab.settings import RunConfig
from rmtl.lab.sweep import load_sweep


def splits(n_users=60, seed=0):
    return rmtl.datasets.synthetic("retailrocket", n_users=n_users, seed=seed).split(
        (0.6, 0.2, 0.2)
    )


def one_line_error(capsys):
    err = capsys.readouterr().err.replace(
        "rmtl run: --jobs is now --processes (--jobs goes in the next release)\n", ""
    )
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "line, message",
    [
        ('seeds = "3"', "seeds: expected an integer, got '3'"),
        ("seeds = true", "seeds: expected an integer, got True"),
        ('lam = "0.5"', "lam: expected a number, got '0.5'"),
        ('jobs = "2"', "jobs: expected a number of processes (an integer), got '2'"),
        ("resume = true", "resume: expected a directory path (a string), got True"),
        ("out = 5", "out: expected a directory path (a string), got 5"),
        ('models = [["esmm"]]', "models: expected a list of backbone names"),
        ('models = "esmm"', "models: expected a list of backbone names"),
        ("progress = 1", "progress: expected true or false, got 1"),
    ],
)
def test_config_value_of_the_wrong_type_is_one_line_naming_key_and_file(
    tmp_path, capsys, line, message
):
    path = tmp_path / "run.toml"
    path.write_text(f"[run]\n{line}\n")
    assert main(["run", "--config", str(path)]) == 2
    err = one_line_error(capsys)
    assert f"{path}: {message}" in err


def test_models_given_as_one_string_are_not_split_into_letters():
    with pytest.raises(TypeError, match="models: expected a list of backbone names"):
        RunConfig(models="esmm").resolved()


def test_toml_syntax_error_names_the_file(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("[run]\nseeds = [\n")
    assert main(["run", "--config", str(path)]) == 2
    assert f"{path}: not valid TOML" in one_line_error(capsys)


def test_sweep_out_that_is_a_file_is_refused_before_ray_starts(tmp_path, capsys):
    """issue 33: --out errors name the path, for `rmtl sweep` as for `rmtl run`, before any
    trial runs."""
    path = tmp_path / "sweep.toml"
    path.write_text('[run]\nmodels = ["esmm"]\n[search]\nlr = {uniform = [0.001, 0.01]}\n')
    (tmp_path / "taken").write_text("")
    assert main(["sweep", str(path), "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert f"--out: {tmp_path / 'taken'} exists and is not a directory" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "text, message",
    [
        ('[tune]\ntrials = "many"\n', "[tune] trials: expected a number of trials"),
        ("search = 5\n", "search: expected a table [search], got 5"),
        ("run = 5\n", "run: expected a table [run], got 5"),
        ("[run]\nseeds = true\n", "seeds: expected an integer, got True"),
        ("[tune\n", "not valid TOML"),
    ],
)
def test_sweep_file_value_of_the_wrong_type_names_key_and_file(tmp_path, capsys, text, message):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        load_sweep(str(path))
    assert f"{path}: {message}" in str(e.value)
    assert main(["sweep", str(path)]) == 2
    assert message in one_line_error(capsys)


# a run of seconds: one baseline, no RMTL stages
TINY = ["run", "--models", "sharedbottom", "--rmtl-models", "--no-progress", "--n-users", "300"]
TINY += ["--seeds", "1", "--epochs", "1", "--min-steps", "0"]


@pytest.mark.parametrize("text", ["{", '["not", "settings"]', "\xff"])
def test_damaged_job_json_in_resume_dir_names_the_file(tmp_path, capsys, text):
    (tmp_path / "job.json").write_bytes(text.encode("latin-1"))
    assert main(TINY + ["--resume", str(tmp_path)]) == 2
    err = one_line_error(capsys)
    assert f"{tmp_path / 'job.json'}: not a" in err


def test_refused_run_does_not_lock_the_resume_dir_to_its_settings(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an archive")
    ckpt = tmp_path / "ckpt"
    assert main(TINY + ["--data", str(bad), "--resume", str(ckpt)]) == 2
    assert str(bad) in one_line_error(capsys)
    assert not (ckpt / "job.json").exists()
    assert main(TINY + ["--resume", str(ckpt)]) == 0  # the directory takes the corrected run
    assert (ckpt / "job.json").exists()


def test_resume_with_another_executor_gives_the_same_table(tmp_path, capsys):
    ckpt = str(tmp_path / "ckpt")
    assert main(TINY + ["--resume", ckpt]) == 0
    first = capsys.readouterr().out.split("\n", 1)[1]
    assert main(TINY + ["--resume", ckpt, "--processes", "2"]) == 0
    assert capsys.readouterr().out.split("\n", 1)[1] == first
    assert main(TINY + ["--resume", ckpt, "--seeds", "2"]) == 2  # settings that decide records
    assert "holds a run with other settings (seeds" in one_line_error(capsys)


@pytest.mark.parametrize("option", ["--processes", "--jobs"])
def test_absurd_number_of_processes_is_a_clear_error(capsys, option):
    assert main(["run", option, str(10**12)]) == 2
    assert f"processes: expected 1 to {MAX_PROCESSES} processes" in one_line_error(capsys)
    with pytest.raises(ValueError, match=f"expected 1 to {MAX_PROCESSES} worker processes"):
        rmtl.experiment(*splits(), executor=10**12)


def test_absurd_min_steps_is_refused_with_its_bound(capsys):
    assert main(["run", "--min-steps", str(10**12)]) == 2
    assert (
        f"min_steps: expected a finite integer in [0, {MOST_STEPS}], got {10**12}"
        in one_line_error(capsys)
    )
    with pytest.raises(ValueError, match="min_steps"):
        rmtl.RMTLConfig(min_steps=10**400)


def test_memory_error_in_run_is_one_line_exit_2(monkeypatch, capsys):
    def no_memory(c):
        raise MemoryError("cannot allocate the training workspace")

    monkeypatch.setattr(run_module, "load_dataset", no_memory)
    assert main(TINY) == 2
    err = one_line_error(capsys)
    assert "rmtl run: error: out of memory (cannot allocate the training workspace)" in err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seeds": [0, 0]}, r"seeds: expected distinct values, got \[0\] more than once"),
        (
            {"backbones": ("mmoe", "mmoe")},
            r"backbones: expected distinct values, got \['mmoe'\] more than once",
        ),
        ({"backbones": ("esmm", "ESMM")}, "backbones: expected distinct values"),
        (
            {"backbones": ("esmm",), "rmtl_backbones": ("esmm", "esmm")},
            "rmtl_backbones: expected distinct values",
        ),
        ({"weightings": ("rmtl", "rmtl")}, "weightings: expected distinct values"),
        (
            {"backbones": ("esmm",), "transfer": (("esmm", "esmm"),)},
            "transfer: expected distinct pairs of two different backbones",
        ),
        (
            {"backbones": ("esmm", "mmoe"), "transfer": (("esmm", "mmoe"), ("esmm", "mmoe"))},
            "transfer: expected distinct pairs",
        ),
    ],
)
def test_experiment_refuses_duplicates_instead_of_running_them_twice(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rmtl.experiment(*splits(), **kwargs)


def test_one_class_task_says_why_its_auc_is_nan():
    train, valid, test = splits()  # 60 users: no purchase in the test set
    assert test.labels[:, 1].sum() == 0 < test.labels[:, 0].sum()
    model = rmtl.models.create(
        "esmm", train.field_dims, train.num_dense, train.num_tasks, seed=0, embed_dim=4
    )
    with pytest.warns(rmtl.metrics.UndefinedMetricWarning) as w:
        res = rmtl.evaluate(model, test)
    assert np.isnan(res["pay"]["auc"]) and not np.isnan(res["click"]["auc"])
    assert [str(x.message) for x in w] == [
        f"{m} of task 'pay' is undefined (NaN): only one class in {len(test)} rows (0 positive)"
        for m in ("AUC", "GAUC")
    ]
    result = rmtl.experiment(
        train, valid, test, backbones=("esmm",), rmtl_backbones=(), seeds=[0],
        rmtl_kwargs={"epochs": 1}, backbone_kwargs={"embed_dim": 4},
    )  # fmt: skip
    table = rmtl.lab.report.to_markdown(result)
    assert table.endswith(
        f"AUC undefined (nan): task pay has only one class in the test set (0 positive of "
        f"{len(test)} rows)."
    )
    assert "click has" not in table


def test_collect_rechecks_labels_changed_after_construction():
    data = rmtl.datasets.synthetic("retailrocket", n_users=20, seed=0)
    data.labels[3, 0] = 0.5  # the SessionData checked its labels when it was built
    buffer = rmtl.ReplayBuffer(1000, data.num_tasks)
    with pytest.raises(ValueError, match="labels: expected 0/1 labels, got 0.5"):
        rmtl.collect(data, buffer)
    assert len(buffer) == 0
    data.labels[3, 0] = 1.0
    assert rmtl.collect(data, buffer) == len(data) == len(buffer)


def test_huge_batch_size_reserves_a_workspace_of_the_data_rows_only():
    """Under a 2 GB address-space limit: a workspace of 2**28 rows would not fit."""
    script = """
import resource
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import rmtl
train, valid, test = rmtl.datasets.synthetic("retailrocket", n_users=8, seed=0).split(
    (0.6, 0.2, 0.2)
)
def make():
    return rmtl.models.create(
        "sharedbottom", train.field_dims, train.num_dense, train.num_tasks, seed=0, embed_dim=4
    )
huge, small = make(), make()
rmtl.Trainer(huge, batch_size=2**28, progress=False).fit(train, valid, epochs=2)
rmtl.Trainer(small, batch_size=len(train), progress=False).fit(train, valid, epochs=2)
a = huge.predict(test.sparse, test.dense, batch_size=2**28)
assert np.array_equal(a, small.predict(test.sparse, test.dense)), "not the same training"
print("ok", len(train))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tempfile.gettempdir(),  # from the checkout's root its unbuilt rmtl/ would shadow
    )
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]


def test_prepare_into_an_existing_directory_fails_at_once_naming_it(tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("loaded the raw files before checking --out")

    monkeypatch.setattr(cli, "load_retailrocket", never)
    argv = ["prepare", "retailrocket", "--raw", str(tmp_path), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert f"--out: {tmp_path} is a directory" in one_line_error(capsys)


def test_overlapping_jobs_restore_the_process_count_of_cores():
    """Two jobs on a thread pool: A limits, B limits, A ends, B ends; the count from before A
    comes back (each restoring what it found left B's limit, 1, in place)."""
    from rmtl.lab import _threads

    before = rmtl.get_num_threads()
    rmtl.set_num_threads(2)
    try:
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

        def job_a():
            with _threads.limit(1):
                a_in.set()
                b_in.wait(10)
            a_out.set()

        def job_b():
            a_in.wait(10)
            with _threads.limit(1):
                b_in.set()
                a_out.wait(10)

        threads = [threading.Thread(target=job_a), threading.Thread(target=job_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert rmtl.get_num_threads() == 2
        with ThreadPoolExecutor(2) as pool:
            rmtl.experiment(
                *splits(), backbones=("esmm", "mmoe"), rmtl_backbones=(), seeds=[0, 1],
                rmtl_kwargs={"epochs": 1}, backbone_kwargs={"embed_dim": 4},
                executor=pool, threads_per_job=1,
            )  # fmt: skip
        assert rmtl.get_num_threads() == 2
    finally:
        rmtl.set_num_threads(before)


def test_successful_resume_removes_the_temporaries_kills_left(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert main(TINY + ["--resume", str(ckpt)]) == 0
    (job,) = [d for d in ckpt.iterdir() if d.is_dir()]
    stale = [
        job / "pretrain" / ".baseline.npz.k3_9x0ab.tmp",  # what atomic_write names them
        ckpt / ".job.json.abcdefgh.tmp",
    ]
    kept = [
        ckpt / "notes.tmp",  # not the project's pattern
        job / "pretrain" / ".baseline.npz.toolong123.tmp",
    ]
    for path in stale + kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a file")
        os.utime(path, (time.time() - 3600,) * 2)
    assert main(TINY + ["--resume", str(ckpt)]) == 0
    assert [p.exists() for p in stale + kept] == [False, False, True, True]


def test_successful_fit_removes_the_temporaries_of_its_checkpoint_dir(tmp_path):
    train, valid, _ = splits()
    stale = tmp_path / ".critics.npz.q1w2e3r4.tmp"
    stale.write_bytes(b"half a file")
    os.utime(stale, (time.time() - 3600,) * 2)
    backbone = rmtl.models.create(
        "esmm", train.field_dims, train.num_dense, train.num_tasks, seed=0, embed_dim=4
    )
    config = rmtl.RMTLConfig(epochs=1, critic_epochs=1)
    rmtl.RMTL.from_config(backbone, config, checkpoint_dir=tmp_path).fit(train, valid)
    assert not stale.exists() and (tmp_path / "agent.json").exists()


def test_address_space_limit_makes_the_builtin_kernel_the_default(tmp_path):
    """issue 33: under ulimit -v, OpenBLAS retries a buffer it cannot map forever (a hang);
    the built-in kernel raises MemoryError instead, so it is the default there."""
    code = "import rmtl, json; print(json.dumps(rmtl.blas_info()))"
    limited = subprocess.run(
        ["bash", "-c", f"ulimit -v 8000000; exec {sys.executable} -c '{code}'"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert limited.returncode == 0, limited.stderr
    info = json.loads(limited.stdout)
    assert info["address_space_limited"] is True and info["backend"] == "builtin"
    free = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
        ).stdout
    )
    assert free["address_space_limited"] is False
    assert free["backend"] == ("blas" if free["blas_available"] else "builtin")


_FILL_THEN_MULTIPLY = """
import sys
import numpy as np
if sys.argv[1] == "rmtl":
    import rmtl
hold = []
try:
    while True:
        hold.append(np.ones(1 << 17))
except MemoryError:
    pass
del hold[-2:]
b = np.ones((300, 300))
print("ok", (b @ b)[0, 0])
"""


def test_numpy_blas_buffers_are_reserved_under_an_address_space_limit(tmp_path):
    """issue 33: NumPy's own OpenBLAS (matplotlib's transforms in `rmtl run`) ends the process
    with status 1 when it cannot map its work buffers once memory has run out; importing
    rmtl under ulimit -v maps them first, so the product after the fill succeeds."""
    script = tmp_path / "fill.py"
    script.write_text(_FILL_THEN_MULTIPLY)

    def fill(mode, seconds):
        return subprocess.run(
            ["bash", "-c", f"ulimit -v 1500000; exec {sys.executable} {script} {mode}"],
            capture_output=True, text=True, timeout=seconds, cwd=tmp_path,
        )  # fmt: skip

    done = fill("rmtl", 120)
    assert done.returncode == 0 and done.stdout.startswith("ok 300.0"), done.stderr[-2000:]
    blas = [c for c in threadpoolctl.threadpool_info() if "numpy" in c["filepath"]]
    if blas and blas[0]["internal_api"] == "openblas":
        # the control: without the reservation NumPy's OpenBLAS gives up (exit status 1), or,
        # in older releases, retries forever (the fill itself takes a second)
        try:
            control = fill("numpy", 20)
        except subprocess.TimeoutExpired:
            return
        assert control.returncode == 1 and "OpenBLAS" in control.stderr, control.stderr


@pytest.mark.parametrize("kilobytes", [400_000, 450_000])
def test_run_under_ulimit_v_ends_instead_of_hanging(tmp_path, kilobytes):
    """`rmtl run` under ulimit -v 400000 hung in scipy_sgemm_ (OpenBLAS's allocation retry
    loop) until killed; now it finishes or stops with the one-line out-of-memory error."""
    args = "run --models esmm --rmtl-models esmm --n-users 250 --seeds 1 --epochs 1 "
    args += "--critic-epochs 1 --no-progress --out out"
    p = subprocess.run(
        ["bash", "-c", f"ulimit -v {kilobytes}; exec {sys.executable} -m rmtl {args}"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode in (0, 2), p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    if p.returncode == 2:
        assert "rmtl run: error: " in p.stderr and "memory" in p.stderr
        assert not (tmp_path / "out" / "results.md").exists()
    elif p.returncode == 0:
        assert (tmp_path / "out" / "results.md").exists()
