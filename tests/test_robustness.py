"""Issue 33's reproducers of the Python side: each wrong or unclear behaviour an adversarial
user found is a clear error naming what to change (or the right behaviour), one test each."""

import pytest

from rmtl.lab.cli import main
from rmtl.lab.settings import RunConfig
from rmtl.lab.sweep import load_sweep


def one_line_error(capsys):
    err = capsys.readouterr().err
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
