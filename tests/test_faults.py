"""Fault tests: a RMTL.fit and a `rmtl run --resume` in a subprocess are killed with SIGKILL
or interrupted with SIGINT at many points (inside a file write, right after a rename, in
the middle of training chunks of every stage), resumed after each, and must end bit for bit
where an uninterrupted run ends."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import optional

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
        before = set(os.listdir(ckpt)) if ckpt.exists() else set()
        p = drive(tmp_path, mode, ckpt, out, spec)
        want = -signal.SIGKILL if spec.startswith("SIGKILL") else 130
        assert p.returncode == want, (spec, p.returncode, p.stderr[-2000:])
        if want == 130:
            assert "Traceback" not in p.stderr
        if want == 130:  # an interrupted writer removes its temporary file
            assert [n for n in set(os.listdir(ckpt)) - before if n.endswith(".tmp")] == [], spec
    final = drive(tmp_path, mode, ckpt, out, "none")
    assert final.returncode == 0, final.stderr
    assert result(mode, out) == expected
