"""Fault tests: a RMTL.fit and a `rmtl run --resume` in a subprocess are killed with SIGKILL
or interrupted with SIGINT at many points (inside a file write, right after a rename, in
the middle of training chunks of every stage), resumed after each, and must end bit for bit
where an uninterrupted run ends."""

import os
import pathlib
import re
import resource
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import optional

from rmtl.lab.run import OUTPUTS as OUTPUTS_OF_RUN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import rmtl, rmtl._io, rmtl._stages, rmtl.train

    mode, ckpt, out, spec = sys.argv[1:5]
    # spec "<signal>:<point>:<k>": send the signal at the k-th time the point is reached
    if spec != "none":
        sig, point, k = spec.split(":")
        sig, k, seen = getattr(signal, sig), int(k), [0]

        def hit():
            seen[0] += 1
            if seen[0] == k:
                os.kill(os.getpid(), sig)

        def wrap(owner, name, before=True):
            real = getattr(owner, name)
            def hooked(*a, **kw):
                if before:
                    hit()
                r = real(*a, **kw)
                if not before:
                    hit()
                return r
            setattr(owner, name, hooked)

        if point == "write":  # inside the write: the temporary file written, not yet renamed
            real_write = rmtl._io.atomic_write
            def atomic_write(path, write):
                def written(f):
                    write(f)
                    f.flush()
                    hit()
                return real_write(path, written)
            rmtl._io.atomic_write = atomic_write
        elif point == "renamed":  # after the rename, before the directory is synced
            wrap(rmtl._io, "_fsync_dir")
        elif point == "chunk":  # between training chunks of stages 1 and 3 and of stage 2
            wrap(rmtl.train.Trainer, "train_epoch")
            wrap(rmtl._stages.CriticStage, "run")
    try:
        if mode == "fit":
            from test_agent import make_agent, session_data
            tr, va, te = session_data(n_sessions=150).split()
            agent = make_agent(tr, checkpoint_dir=ckpt).fit(tr, va)
            preds = [agent.backbone.predict(te.sparse, te.dense)]
            preds += [c.predict(te.sparse, te.dense, te.labels[:, 0]) for c in agent.critics]
            np.save(out, np.concatenate([p.ravel() for p in preds]))
        else:
            from rmtl.lab.cli import main
            sys.exit(main(["run", "--models", "esmm", "--rmtl-models", "esmm", "--n-users", "250",
                           "--seeds", "1", "--epochs", "2", "--critic-epochs", "2", "--no-progress",
                           "--resume", ckpt, "--out", out]))
    except KeyboardInterrupt:
        sys.exit(130)
""")

# each sequence runs its kills one after another on the same checkpoint directory, then a
# clean resume; k counts within one process
SEQUENCES = {
    "fit": [
        [
            "SIGKILL:write:1",
            "SIGINT:chunk:2",
            "SIGKILL:renamed:2",
            "SIGINT:write:2",
            "SIGKILL:chunk:3",
        ],
        [
            "SIGINT:renamed:1",
            "SIGKILL:write:3",
            "SIGINT:chunk:4",
            "SIGKILL:chunk:2",
            "SIGKILL:write:1",
        ],
    ],
    "run": [["SIGKILL:chunk:2", "SIGINT:write:2", "SIGKILL:renamed:3", "SIGINT:chunk:1"]],
}


def drive(tmp_path, mode, ckpt, out, spec):
    script = tmp_path / "driver.py"
    if not script.exists():
        script.write_text(DRIVER.format(tests=os.path.join(ROOT, "tests")))
    return subprocess.run(
        [sys.executable, str(script), mode, str(ckpt), str(out), spec],
        capture_output=True,
        text=True,
        timeout=300,
    )  # the rmtl this test imports


def temporaries(root):
    """Every temporary file or directory (``*.tmp``) at any depth under ``root``."""
    return {
        os.path.join(parent, name)
        for parent, dirs, files in os.walk(root)
        for name in dirs + files
        if name.endswith(".tmp")
    }


def test_temporaries_finds_them_at_any_depth(tmp_path):
    (tmp_path / "job" / "pretrain").mkdir(parents=True)
    (tmp_path / "top.npz").write_bytes(b"")
    assert temporaries(tmp_path) == set() and temporaries(tmp_path / "missing") == set()
    planted = [
        tmp_path / ".top.npz.abcdefgh.tmp",
        tmp_path / "job" / "pretrain" / ".baseline.npz.k3_9x0ab.tmp",
        tmp_path / ".outputs.q1w2e3r4.tmp",  # a staging directory
    ]
    planted[0].write_bytes(b"")
    planted[1].write_bytes(b"")
    planted[2].mkdir()
    assert temporaries(tmp_path) == {str(p) for p in planted}


def result(mode, out):
    if mode == "fit":
        return np.load(str(out) + ".npy").tobytes()
    with open(os.path.join(out, "results.json"), "rb") as f:
        return f.read()


@pytest.mark.parametrize(
    "mode,sequence", [(m, i) for m, seqs in SEQUENCES.items() for i in range(len(seqs))]
)
def test_killed_and_resumed_run_is_bit_identical(tmp_path, mode, sequence):
    if mode == "run":
        optional("matplotlib", "plots")
    ref = drive(tmp_path, mode, tmp_path / "ref-ckpt", tmp_path / "ref", "none")
    assert ref.returncode == 0, ref.stderr
    expected = result(mode, tmp_path / "ref")
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    for spec in SEQUENCES[mode][sequence]:
        before = temporaries(ckpt) | temporaries(out)
        p = drive(tmp_path, mode, ckpt, out, spec)
        want = -signal.SIGKILL if spec.startswith("SIGKILL") else 130
        assert p.returncode == want, (spec, p.returncode, p.stderr[-2000:])
        if want == 130:
            assert "Traceback" not in p.stderr
        if want == 130:  # an interrupted writer removes its temporary file, at any depth
            assert (temporaries(ckpt) | temporaries(out)) - before == set(), spec
    final = drive(tmp_path, mode, ckpt, out, "none")
    assert final.returncode == 0, final.stderr
    assert result(mode, out) == expected


# `rmtl run --out`: what a full disk, a Ctrl-C while the outputs are written and a kill
# leave in the output directory
OUTPUTS_DRIVER = textwrap.dedent("""
    import os, signal, sys

    out, spec, epochs = sys.argv[1:4]
    out = os.path.abspath(out)
    written = []
    if spec == "audit":  # every file and directory the run creates, Python's opens included
        def audit(event, args):
            if event == "open" and isinstance(args[0], (str, bytes)):
                mode, flags = args[1], args[2]
                if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
                ):
                    written.append(os.path.abspath(os.fsdecode(args[0])))
            elif event == "os.mkdir":
                written.append(os.path.abspath(os.fsdecode(args[0])))
        sys.addaudithook(audit)
    elif spec != "none":  # "<point>:<k>": SIGINT at the k-th time the point is reached
        point, k = spec.split(":")
        k, seen = int(k), [0]

        def hit():
            seen[0] += 1
            if seen[0] == k:
                os.kill(os.getpid(), signal.SIGINT)

        if point == "stage":  # inside the write of an output file into the staging directory
            import rmtl._io
            real_write = rmtl._io.atomic_write
            def atomic_write(path, write):
                if not (isinstance(path, str) and ".outputs." in os.path.dirname(path)):
                    return real_write(path, write)
                def written_(f):
                    write(f)
                    f.flush()
                    hit()
                return real_write(path, written_)
            rmtl._io.atomic_write = atomic_write
        elif point == "publish":  # right after the first output is renamed into place
            real_replace = os.replace
            def replace(src, dst):
                real_replace(src, dst)
                if os.path.dirname(os.path.abspath(dst)) == out:
                    hit()
            os.replace = replace
    from rmtl.lab.cli import main
    try:
        status = main(["run", "--models", "esmm", "--rmtl-models", "esmm", "--n-users", "250",
                       "--seeds", "1", "--epochs", epochs, "--critic-epochs", "1",
                       "--no-progress", "--out", out])
    except KeyboardInterrupt:
        status = 130
    if spec == "audit":  # leaving out matplotlib's own directories
        import matplotlib
        theirs = (matplotlib.get_configdir(), matplotlib.get_cachedir())
        written = [w for w in written if not w.startswith(theirs) and w != os.devnull]
        print("\\n".join(["WRITTEN"] + written))
    sys.exit(status)
""")


def run_outputs(tmp_path, out, spec, epochs=1, limit=None):
    """``rmtl run --out out`` in a subprocess from an empty directory with its own TMPDIR;
    ``limit``: the largest file it may write (RLIMIT_FSIZE, as a full disk: EFBIG)."""
    script = tmp_path / "outputs_driver.py"
    script.write_text(OUTPUTS_DRIVER)
    cwd, tmp = tmp_path / "cwd", tmp_path / "systmp"
    cwd.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, str(script), str(out), spec, str(epochs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1"},
        preexec_fn=None if limit is None else limited,
    )


def snapshot(out):
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(out).iterdir())}


def test_full_disk_keeps_the_table_and_names_the_file(tmp_path):
    optional("matplotlib", "plots")
    p = run_outputs(tmp_path, tmp_path / "out", "none", limit=1000)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "| RMTL-ESMM |" in p.stdout and "wrote" not in p.stdout  # the table, printed first
    assert f"cannot write {tmp_path / 'out' / 'results.md'}: File too large" in p.stderr
    assert "Traceback" not in p.stderr
    assert list((tmp_path / "out").rglob("*")) == []  # no part of a set, no temporary


@pytest.mark.parametrize("spec", ["stage:1", "stage:5", "publish:1", "publish:4"])
def test_interrupted_outputs_are_the_old_set_or_the_new(tmp_path, spec):
    optional("matplotlib", "plots")
    out = tmp_path / "out"
    assert run_outputs(tmp_path, out, "none", epochs=1).returncode == 0
    old = snapshot(out)
    assert sorted(old) == sorted(OUTPUTS_OF_RUN)
    p = run_outputs(tmp_path, out, spec, epochs=2)
    assert p.returncode == 130, p.stderr[-2000:]
    assert "| RMTL-ESMM |" in p.stdout
    now = snapshot(out)
    assert sorted(now) == sorted(old), spec  # no temporary, no file missing
    same = {name for name in now if now[name] == old[name]}
    texts = {"results.md", "results.csv", "results.json", "config.json"}
    if spec.startswith("stage"):  # interrupted before the first rename: all old
        assert same == set(old), spec
    else:  # interrupted among the renames: they all finish first
        assert same & texts == set(), spec


def test_run_writes_temporaries_only_under_out_and_removes_stale_ones(tmp_path):
    optional("matplotlib", "plots")
    out = tmp_path / "out"
    (out / "sub" / "deeper").mkdir(parents=True)
    stale = [
        out / ".results.md.abcd1234.tmp",
        out / "sub" / "deeper" / ".critic0.npz.x_y_z_12.tmp",
        out / ".outputs.k3j4h5g6.tmp" / "results.md",  # a killed run's staging directory
    ]
    stale[2].parent.mkdir()
    for path in stale:
        path.write_text("left by a kill")
        os.utime(path, (1, 1))
    os.utime(stale[2].parent, (1, 1))
    keep = out / "sub" / "notes.tmp"  # not a name of the project's temporaries
    keep.write_text("mine")
    p = run_outputs(tmp_path, out, "audit")
    assert p.returncode == 0, p.stderr[-2000:]
    written = p.stdout.split("WRITTEN\n", 1)[1].split()
    # some libraries make temporaries of their own in TMPDIR (on Python 3.9: SciPy's
    # "scipy-*" and an unprefixed directory): outside --out, what counts is a name rmtl gives
    # its temporaries (".<name>.XXXXXXXX.tmp") or tempfile's default one ("tmpXXXXXXXX")
    ours = re.compile(r"(\..+\.[a-z0-9_]{8}\.tmp|tmp[a-z0-9_]{8})")
    outside = [w for w in written if not w.startswith(str(out))]
    assert written and [w for w in outside if ours.fullmatch(os.path.basename(w))] == []
    assert any(os.path.basename(os.path.dirname(w)).startswith(".outputs.") for w in written)
    assert not any(path.exists() for path in stale) and not stale[2].parent.exists()
    assert keep.exists()
    assert sorted(os.listdir(out)) == sorted([*OUTPUTS_OF_RUN, "sub"])
