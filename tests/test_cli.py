"""python -m rmtl prepare: raw files -> .npz, and clear errors with exit status 2."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import optional

import rmtl
from rmtl.lab.cli import main

optional("pyarrow", "data")  # prepare reads raw CSV files

DATA = Path(__file__).parent / "data"


def test_prepare_retailrocket(tmp_path, capsys):
    out = tmp_path / "rr.npz"
    assert (
        main(["prepare", "retailrocket", "--raw", str(DATA / "retailrocket"), "--out", str(out)])
        == 0
    )
    assert f"saved {out}" in capsys.readouterr().out
    d, ref = rmtl.SessionData.load(out), rmtl.datasets.load_retailrocket(DATA / "retailrocket")
    for k in ("session", "time", "sparse", "labels", "user", "item"):
        np.testing.assert_array_equal(getattr(d, k), getattr(ref, k))
    assert d.vocab == ref.vocab


def test_prepare_kuairand_with_options_and_vocab(tmp_path):
    train = tmp_path / "kr.npz"
    argv = [
        "prepare",
        "kuairand",
        "--raw",
        str(DATA / "kuairand"),
        "--out",
        str(train),
        "--session-gap-minutes",
        "60",
        "--variant",
        "pure",
    ]
    assert main(argv) == 0
    d = rmtl.SessionData.load(train)
    assert d.num_sessions == 2  # the 31-minute gap no longer splits user 1
    test = tmp_path / "kr_test.npz"
    assert main(argv[:5] + [str(test), "--vocab-from", str(train)]) == 0
    assert rmtl.SessionData.load(test).vocab == d.vocab


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--models", "esmm", "transformer"], "unknown backbone(s) ['transformer']"),
        (["run", "--dataset", "retailrocket"], "--dataset retailrocket needs --data"),
        (
            ["run", "--dataset", "kuairand", "--data", "/no/such/path"],
            "no such file or directory: /no/such/path",
        ),
        (["run", "--seeds", "0"], "seeds: expected a finite integer in [1, inf), got 0"),
        (
            ["run", "--min-steps", "-1"],
            "min_steps: expected a finite integer in [0, 100000000], got -1",
        ),
        (
            ["prepare", "retailrocket", "--raw", "/no/such/dir", "--out", "x.npz"],
            "/no/such/dir: no such directory",
        ),
        (
            ["prepare", "kuairand", "--raw", str(DATA / "retailrocket"), "--out", "x.npz"],
            "log_standard_4_08_to_4_21_pure.csv: no such file",
        ),
        (
            [
                "prepare",
                "retailrocket",
                "--raw",
                str(DATA / "retailrocket"),
                "--out",
                "/no/such/dir/x.npz",
            ],
            "--out: no such directory",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_malformed_file_names_file_line_and_column(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in (DATA / "retailrocket").iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    (raw / "events.csv").write_bytes(
        (raw / "events.csv").read_bytes().replace(b",view,12,", b",look,12,")
    )
    assert (
        main(["prepare", "retailrocket", "--raw", str(raw), "--out", str(tmp_path / "x.npz")]) == 2
    )
    assert (
        "events.csv, line 2, column 'event': unknown event type 'look'" in capsys.readouterr().err
    )


def test_unknown_dataset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["prepare", "movielens", "--raw", ".", "--out", "x.npz"])
    assert e.value.code == 2 and "invalid choice: 'movielens'" in capsys.readouterr().err


def test_python_dash_m_rmtl(tmp_path):
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "rmtl",
            "prepare",
            "retailrocket",
            "--raw",
            str(DATA / "retailrocket"),
            "--out",
            str(tmp_path / "rr.npz"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and (tmp_path / "rr.npz").is_file()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "rmtl",
            "prepare",
            "retailrocket",
            "--raw",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "x.npz"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 2 and "no such directory" in bad.stderr and "Traceback" not in bad.stderr
    )


def test_moved_modules_keep_their_old_paths_with_a_warning():
    """The experiment machinery moved into rmtl.lab; the documented old paths still import,
    as the same module objects, each with a DeprecationWarning naming the new path."""
    import importlib
    import sys
    import warnings

    import rmtl
    from rmtl import _moved

    for old, new in _moved.MOVED.items():
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)
        assert any(
            issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught
        ), old
    sys.modules.pop("rmtl.tune")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import rmtl.tune  # noqa: F401  (an import statement: the warning points at this line)
    assert [w.filename for w in caught] == [__file__]
    vars(rmtl).pop(
        "report", None
    )  # the imports above bound the old name as the package's attribute
    with pytest.warns(DeprecationWarning, match="rmtl.lab.report"):
        assert rmtl.report is importlib.import_module("rmtl.lab.report")
    with pytest.raises(AttributeError):
        rmtl.no_such_module  # noqa: B018


def test_jobs_option_and_key_still_mean_processes(tmp_path, capsys):
    from rmtl.lab.settings import RunConfig, load_config

    path = tmp_path / "run.toml"
    path.write_text("[run]\njobs = 2\n")
    with pytest.warns(DeprecationWarning, match="'jobs' is now 'processes'"):
        assert RunConfig(**load_config(str(path))).resolved().processes == 2
    assert main(["run", "--jobs", "0"]) == 2  # the old option reaches the same check
    err = capsys.readouterr().err
    assert "--jobs is now --processes" in err and "processes: expected 1 to 256 processes" in err


def test_version_and_program_name(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"rmtl {rmtl.__version__}"
    script = Path(sys.executable).parent / "rmtl"  # the installed command beside this Python
    installed = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert installed.returncode == 0 and installed.stdout.startswith("usage: rmtl ")
    module = subprocess.run(  # from elsewhere: the checkout would shadow the installed package
        [sys.executable, "-m", "rmtl", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert module.stdout.startswith("usage: python -m rmtl ")
