"""Checkpoints: one atomic file per committed stage state, a fingerprint of data and
configuration checked on resume, interrupted stages never saved, diverging losses stopped."""

import math
import os

import numpy as np
import pytest
from test_agent import make_agent, session_data

import rmtl
import rmtl._io
from rmtl._checkpoint import fingerprint


@pytest.fixture(scope="module")
def splits():
    return session_data(n_sessions=150).split()


def predictions(agent, te):
    return [agent.backbone.predict(te.sparse, te.dense)] + [
        c.predict(te.sparse, te.dense, te.labels[:, 0]) for c in agent.critics
    ]


def timeless(history):
    """A history without its wall times."""
    return {
        k: {**h, "epochs": [{f: v for f, v in e.items() if f != "seconds"} for e in h["epochs"]]}
        for k, h in history.items()
    }


def test_resume_with_other_training_data_is_refused(splits, tmp_path):
    tr, va, _ = splits
    make_agent(tr, checkpoint_dir=tmp_path).pretrain(tr, va)
    other = session_data(n_sessions=150, seed=1).split()
    with pytest.raises(ValueError, match="train: differs from the train data"):
        make_agent(tr, checkpoint_dir=tmp_path).pretrain(other[0], va)
    with pytest.raises(ValueError, match="valid: differs"):
        make_agent(tr, checkpoint_dir=tmp_path).pretrain(tr, other[1])
    with pytest.raises(ValueError, match="train: differs"):
        make_agent(tr, checkpoint_dir=tmp_path).fit_critics(other[0])


def stage_files(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".npz"))


def test_stage_file_of_other_data_is_refused_naming_it(splits, tmp_path):
    """issue 33: every stage file records the fingerprints of the data it was trained on; one
    copied into another run's directory (or left beside a rewritten agent.json) is refused."""
    tr, va, _ = splits
    theirs = tmp_path / "theirs"
    make_agent(tr, checkpoint_dir=theirs).fit(tr, va)
    names = stage_files(theirs)
    assert {"pretrained.npz", "replay.npz", "critics.npz"} <= set(names) and len(names) == 4
    other_tr, other_va, _ = session_data(n_sessions=150, seed=1).split()
    for name in names:
        mine = tmp_path / f"mine-{name}"
        mine.mkdir()
        (mine / name).write_bytes((theirs / name).read_bytes())
        with pytest.raises(ValueError) as e:
            make_agent(other_tr, checkpoint_dir=mine).fit(other_tr, other_va)
        assert str(e.value).startswith(f"{mine / name}: trained on other train and valid data")
        assert "delete the file, or use a fresh checkpoint directory" in str(e.value)
    os.remove(theirs / "agent.json")  # a new manifest for other data: the files still refuse
    with pytest.raises(ValueError, match="pretrained.npz: trained on other"):
        make_agent(other_tr, checkpoint_dir=theirs).fit(other_tr, other_va)


def test_stage_file_without_fingerprints_is_resumed_with_a_warning(splits, tmp_path):
    tr, va, te = splits
    expected = predictions(make_agent(tr, checkpoint_dir=tmp_path).fit(tr, va), te)
    for name in stage_files(tmp_path):  # as an older rmtl wrote them: no "data" member
        with np.load(tmp_path / name) as z:
            members = {k: z[k] for k in z.files if k != "data"}
        assert len(members) == len(z.files) - 1, name
        with open(tmp_path / name, "wb") as f:
            np.savez(f, **members)
    with pytest.warns(UserWarning, match="records no fingerprint") as seen:
        agent = make_agent(tr, checkpoint_dir=tmp_path).fit(tr, va)
    warned = {str(w.message).split(":")[0] for w in seen if "fingerprint" in str(w.message)}
    # every stage file the resume reads (stage 2 finished: its replay buffer is not reopened)
    assert warned == {str(tmp_path / n) for n in stage_files(tmp_path) if n != "replay.npz"}
    assert all(np.array_equal(a, b) for a, b in zip(predictions(agent, te), expected))


def test_fingerprint_sees_every_array(splits):
    tr = splits[0]
    base = fingerprint(tr)
    for name in ("sparse", "dense", "labels", "time"):
        changed = getattr(tr, name).copy()
        changed.flat[0] = changed.flat[0] + 1
        clone = rmtl.SessionData(tr.session, tr.time, tr.sparse, tr.dense, tr.labels, (7, 4, 4))
        setattr(clone, name, changed)
        assert fingerprint(clone) != base


def test_stage2_epoch_is_one_file(splits, tmp_path):
    tr, va, _ = splits
    agent = make_agent(tr, checkpoint_dir=tmp_path)
    agent.pretrain(tr, va)
    agent.fit_critics(tr, epochs=2)
    assert sorted(os.listdir(tmp_path)) == [
        "agent.json",
        "critics.npz",
        "pretrained.npz",
        "replay.npz",
    ]


def test_kill_during_stage2_commit_resumes_into_the_same_model(splits, tmp_path, monkeypatch):
    """A failure while epoch 2's state is written leaves epoch 1's state whole; the resumed
    run equals an uninterrupted one bit for bit."""
    tr, va, te = splits
    full = make_agent(tr, checkpoint_dir=tmp_path / "full").fit(tr, va)
    real, calls = rmtl._io.atomic_write, []

    def dying(path, write):
        calls.append(os.path.basename(path))
        if calls.count("critics.npz") == 2:

            def half(f):
                f.write(b"PK\x03\x04")
                raise KeyboardInterrupt

            return real(path, half)
        return real(path, write)

    monkeypatch.setattr(rmtl._io, "atomic_write", dying)
    with pytest.raises(KeyboardInterrupt):
        make_agent(tr, checkpoint_dir=tmp_path / "part").fit(tr, va)
    monkeypatch.setattr(rmtl._io, "atomic_write", real)
    resumed = make_agent(tr, checkpoint_dir=tmp_path / "part")
    resumed.fit(tr, va)
    for a, b in zip(predictions(resumed, te), predictions(full, te)):
        np.testing.assert_array_equal(a, b)
    assert timeless(resumed.history) == timeless(full.history)


@pytest.mark.parametrize("stage", ["pretrain", "critics", "finetune"])
def test_ctrl_c_stops_fit_and_saves_nothing_of_the_stage(splits, tmp_path, monkeypatch, stage):
    tr, va, te = splits
    import rmtl._stages
    import rmtl.train

    target, method = {
        "pretrain": (rmtl.train.Trainer, "train_epoch"),
        "critics": (rmtl._stages.CriticStage, "run"),
        "finetune": (rmtl.models.Backbone, "train_chunk"),
    }[stage]
    real, calls = getattr(target, method), []

    def interrupting(self, *args, **kwargs):
        if (
            stage != "finetune" or kwargs.get("weighting") is not None
        ):  # stage 3's weighted chunks only
            calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(target, method, interrupting)
    agent = make_agent(tr, checkpoint_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        agent.fit(tr, va)
    files = set(os.listdir(tmp_path))
    assert ("pretrained.npz" in files) == (stage != "pretrain")
    assert ("critics.npz" in files) == (
        stage == "finetune" or (stage == "critics" and agent.history["critics"]["epochs"] != [])
    )
    assert "finetuned-rmtl.npz" not in files
    if stage == "critics":
        assert (
            len(agent.history["critics"]["epochs"]) < 3 and not agent.history["critics"]["complete"]
        )
    monkeypatch.setattr(target, method, real)
    resumed = make_agent(tr, checkpoint_dir=tmp_path).fit(tr, va)
    full = make_agent(tr, checkpoint_dir=tmp_path / "full").fit(tr, va)
    for a, b in zip(predictions(resumed, te), predictions(full, te)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "key",
    [
        "lr",
        "weight_decay",
        "critic_lr",
        "actor_lr",
        "gamma",
        "tau",
        "lam",
        "target_noise",
        "behaviour_noise",
    ],
)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_hyperparameters_are_rejected_naming_them(splits, key, value):
    with pytest.raises(ValueError, match=f"^{key}: expected a finite"):
        make_agent(splits[0], **{key: value})


@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(lr=math.inf), "lr"),
        (dict(weight_decay=math.nan), "weight_decay"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(eps=0.0), "eps"),
        (dict(betas=(0.9, 1.0)), "beta2"),
        (dict(seed=1.5), "seed"),
    ],
)
def test_trainer_rejects_bad_hyperparameters(splits, kwargs, key):
    m = rmtl.models.create(
        "esmm", splits[0].field_dims, 1, 2, embed_dim=4, bottom_dims=(8,), tower_dims=(4,)
    )
    with pytest.raises((ValueError, TypeError), match=f"^{key}: expected"):
        rmtl.Trainer(m, **kwargs)


class Diverging:
    """A model whose training loss turns NaN from the ``after``-th chunk on."""

    def __init__(self, model, after):
        self._m, self._core, self.config, self.calls, self.after = (
            model,
            self,
            model.config,
            0,
            after,
        )

    def train_chunk(self, *args, **kwargs):
        self.calls += 1
        loss, wsum = self._m.train_chunk(*args, **kwargs)
        return (float("nan") if self.calls >= self.after else loss), wsum

    def __getattr__(self, name):
        return getattr(self._m, name)


def test_non_finite_loss_stops_training_with_best_weights(splits):
    tr, va, _ = splits
    m = rmtl.models.create(
        "esmm", tr.field_dims, 1, 2, embed_dim=4, bottom_dims=(8,), tower_dims=(4,)
    )
    trainer = rmtl.Trainer(m, lr=1e-2, batch_size=len(tr), progress=False)
    trainer.fit(tr, va, epochs=1)
    best = m.state_dict()
    with pytest.raises(rmtl.NonFiniteLossError, match="nan in epoch 2"):
        rmtl.Trainer(Diverging(m, after=2), lr=1e-2, batch_size=len(tr), progress=False).fit(
            tr, va, epochs=5
        )
    for _, v in m.state_dict().items():  # epoch 1 of the second fit was its best; then NaN
        assert np.isfinite(v).all()
    start = m.state_dict()
    with pytest.raises(rmtl.NonFiniteLossError):
        rmtl.Trainer(m, lr=1e30, batch_size=16, progress=False).fit(tr, va, epochs=3)
    for k, v in m.state_dict().items():  # no best epoch yet: the starting weights
        np.testing.assert_array_equal(v, start[k])
    assert best


def test_non_finite_td_loss_stops_stage2_at_the_last_epoch(splits, tmp_path):
    tr, va, te = splits
    agent = make_agent(tr, checkpoint_dir=tmp_path, critic_lr=1e30)
    agent.pretrain(tr, va)
    before = [c.state_dict() for c in agent._stage2.critics] if agent._stage2 else None
    with pytest.raises(rmtl.NonFiniteLossError, match="critic TD loss"):
        agent.fit_critics(tr)
    assert before is None and agent.history["critics"]["epochs"] == []
    for c in agent.critics:
        assert all(np.isfinite(v).all() for v in c.state_dict().values())
    assert "critics.npz" not in os.listdir(tmp_path)
