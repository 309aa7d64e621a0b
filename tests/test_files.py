"""Every writer is atomic and writes exactly the path given; every reader names a damaged file."""

import os

import numpy as np
import pytest
from conftest import optional, random_session_data

import rmtl
from rmtl._io import CorruptFileError, atomic_write
from rmtl.lab.cli import main


def small_model():
    return rmtl.models.SharedBottom((5, 7, 3), 2, 2, embed_dim=4, bottom_dims=(8,), tower_dims=(4,))


def writers(data):
    """(name, save(path), load(path)) for every public file format."""
    model, critic = small_model(), rmtl.Critic((5, 7, 3), 2, 4, (8,), (4,), 0.0)
    buf = rmtl.ReplayBuffer(100, 2)
    rmtl.collect(data, buf)
    return [
        ("model", lambda p: rmtl.save(model, p), rmtl.load),
        ("critic", critic.save, rmtl.Critic.load),
        ("data", data.save, rmtl.SessionData.load),
        ("replay", buf.save, rmtl.ReplayBuffer.load),
    ]


@pytest.mark.parametrize("which", range(4))
def test_save_writes_exactly_the_path_given(tmp_path, which):
    name, save, load = writers(random_session_data())[which]
    path = tmp_path / f"{name}.ckpt"
    save(path)
    assert sorted(os.listdir(tmp_path)) == [f"{name}.ckpt"]  # no .npz appended, no temporary left
    load(path)


@pytest.mark.parametrize("which", range(4))
def test_interrupted_save_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, which):
    name, save, load = writers(random_session_data())[which]
    path = tmp_path / f"{name}.npz"
    save(path)
    before = path.read_bytes()

    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]


def test_concurrent_writers_use_distinct_temporaries(tmp_path):
    seen = []

    def first(f):
        seen.append(f.name)
        atomic_write(tmp_path / "x", lambda g: (seen.append(g.name), g.write(b"inner")))
        f.write(b"outer")

    atomic_write(tmp_path / "x", first)
    assert len(set(seen)) == 2 and (tmp_path / "x").read_bytes() == b"outer"
    assert os.listdir(tmp_path) == ["x"]


@pytest.mark.parametrize("which", range(4))
@pytest.mark.parametrize("damage", ["truncate", "garbage", "member"])
def test_damaged_file_raises_corrupt_file_error_naming_it(tmp_path, which, damage):
    name, save, load = writers(random_session_data())[which]
    path = tmp_path / f"{name}.npz"
    save(path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a zip" * 50)
    else:  # a member's compressed bytes damaged behind an intact directory: flip data bytes
        body = bytearray(raw)
        for i in range(60, min(len(body) - 200, 400)):
            body[i] ^= 0xFF
        path.write_bytes(bytes(body))
    with pytest.raises(CorruptFileError) as e:
        load(path)
    assert e.value.path == str(path) and str(path) in str(e.value)


def test_cli_prepare_writes_exactly_out(tmp_path, capsys):
    optional("pyarrow", "data")
    out = tmp_path / "o"
    raw = os.path.join(os.path.dirname(__file__), "data", "retailrocket")
    assert main(["prepare", "retailrocket", "--raw", raw, "--out", str(out)]) == 0
    assert f"saved {out}" in capsys.readouterr().out
    assert os.listdir(tmp_path) == ["o"]
    assert len(rmtl.SessionData.load(out)) > 0


def test_cli_corrupt_npz_is_one_line_exit_2(tmp_path, capsys):
    optional("pyarrow", "data")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    raw = os.path.join(os.path.dirname(__file__), "data", "retailrocket")
    assert (
        main(
            [
                "prepare",
                "retailrocket",
                "--raw",
                raw,
                "--out",
                str(tmp_path / "x"),
                "--vocab-from",
                str(bad),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert str(bad) in err and err.count("\n") == 1 and "Traceback" not in err
    assert (
        main(["run", "--data", str(bad), "--models", "esmm", "--rmtl-models", "--no-progress"]) == 2
    )
    err = capsys.readouterr().err
    assert str(bad) in err and err.count("\n") == 1
