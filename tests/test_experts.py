"""Expert and attention backbones beyond the shared parity tests of test_models.py: layout,
the reference's unused parameters, dropout, configuration errors, save/load."""

import json

import numpy as np
import pytest
from test_models import FIELDS, batch, make

import rmtl


def offsets(model):
    return {name: off for name, off, _ in model._core.param_table()}


def test_reference_shapes_at_default_hyperparameters():
    mmoe = rmtl.models.MMoE(FIELDS, 1, 2)
    s = mmoe.state_dict()
    assert mmoe.config.num_experts == 8
    assert s["expert.7.mlp.3.weight"].shape == (256, 512)
    assert s["gate.1.0.weight"].shape == (8, 512)  # 3 fields + 1 dense, 128 wide
    ple = rmtl.models.create("ple", FIELDS, 1, 2)
    s = ple.state_dict()
    assert s["expert.1.11.mlp.0.weight"].shape == (256, 512)  # 4 per task + 4 shared
    assert s["gate.0.1.0.weight"].shape == (8, 512)
    assert s["gate.1.2.0.weight"].shape == (12, 512)  # the shared stream's gate
    ple = rmtl.models.create("ple_paper", FIELDS, 1, 2)
    s = ple.state_dict()
    assert s["task_experts.1.1.3.mlp.0.weight"].shape == (256, 512)
    assert s["share_experts.0.3.mlp.0.weight"].shape == (512, 512)
    assert s["task_gates.0.1.0.weight"].shape == (8, 512)
    assert s["share_gates.0.0.weight"].shape == (12, 512)
    assert s["share_gates.1.0.weight"].shape == (12, 512)
    aitm = rmtl.models.AITM(FIELDS, 1, 3)
    assert aitm.state_dict()["g.1.weight"].shape == (256, 256)
    assert aitm.config.num_experts is None


def test_first_layers_that_share_an_input_are_one_matrix():
    """Every expert's first layer and every gate over the embedding sit side by side, so the
    core multiplies the embedding once by one (sum of widths, in) matrix."""
    model = make("mmoe", 2)
    off = offsets(model)
    names = [f"expert.{e}.mlp.0" for e in range(8)] + ["gate.0.0", "gate.1.0"]
    widths = [12] * 8 + [8, 8]
    for kind, size in (("weight", lambda w: w * 24), ("bias", lambda w: w)):
        pos = off[f"{names[0]}.{kind}"]
        for n, w in zip(names, widths):
            assert off[f"{n}.{kind}"] == pos
            pos += size(w)
    ple = offsets(make("ple", 2))
    first = ["expert.0.0.mlp.0", "expert.0.11.mlp.0", "gate.0.0.0", "gate.0.1.0"]
    got = [ple[f"{n}.weight"] for n in first]
    assert got == [
        got[0],
        got[0] + 11 * 12 * 24,
        got[0] + 12 * 12 * 24,
        got[0] + 12 * 12 * 24 + 8 * 24,
    ]
    ple = offsets(make("ple_paper", 2))
    first = [
        "task_experts.0.0.0.mlp.0",
        "task_experts.0.1.3.mlp.0",
        "share_experts.0.0.mlp.0",
        "task_gates.0.0.0",
        "share_gates.0.0",
    ]
    got = [ple[f"{n}.weight"] for n in first]
    assert got == [
        got[0],
        got[0] + 7 * 12 * 24,
        got[0] + 8 * 12 * 24,
        got[0] + 12 * 12 * 24,
        got[0] + 12 * 12 * 24 + 2 * 8 * 24,
    ]


@pytest.mark.parametrize(
    "name,T,unused",
    [
        ("ple", 2, "gate.0.2.0"),
        ("ple", 3, "gate.1.3.0"),
        ("ple_paper", 2, "share_gates.1.0"),
        ("aitm", 1, "h2"),
    ],
)
def test_parameters_the_reference_never_uses_stay_fixed(name, T, unused):
    model = make(name, T)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    data = batch(num_tasks=T)
    for _ in range(3):
        model.loss_and_grad(*data)
        for suffix in ("weight", "bias"):
            assert not dict(model.named_grads())[f"{unused}.{suffix}"].any()
        model.adam_step(lr=0.1, weight_decay=0.5)
    after = model.state_dict()
    for suffix in ("weight", "bias"):
        np.testing.assert_array_equal(after[f"{unused}.{suffix}"], before[f"{unused}.{suffix}"])
    assert not np.array_equal(after["tower.0.mlp.0.weight"], before["tower.0.mlp.0.weight"])


@pytest.mark.parametrize(
    "name,key,bottom",
    [
        ("mmoe", "expert.3.mlp.0.weight", (6,)),
        ("ple_paper", "task_experts.0.1.2.mlp.0.weight", (6,)),
        ("ple", "expert.0.5.mlp.0.weight", (6,)),
        ("ple", "expert.1.9.mlp.0.weight", (6, 5)),
        ("ple", "expert.0.2.mlp.0.weight", (6, 5)),
        ("aitm", "bottom.1.mlp.0.weight", (6,)),
        ("omoe", "gate.0.weight", (6,)),
    ],
)
def test_dropout_backward_matches_finite_differences(name, key, bottom):
    """With a fixed mask (same dropout counter) the analytic gradient is exact (the authors'
    PLE: a shared expert of level 1 runs on both task streams, with two masks)."""
    model = make(
        name, 2, num_dense=1, embed_dim=3, bottom_dims=bottom, tower_dims=(5,), dropout=0.3, seed=4
    )
    sparse, dense, labels = batch(n=8, num_dense=1, seed=2)
    steps = model._core.steps
    model.loss_and_grad(sparse, dense, labels)
    g = dict(model.named_grads())[key].copy()
    p = dict(model.named_parameters())[key]
    h, checked = 1e-2, 0
    for idx in [(0, 0), (2, 5), (5, 11), (1, 7)]:
        idx = (idx[0] % p.shape[0], idx[1] % p.shape[1])
        old = p[idx]
        losses = []
        for x in (old + h, old - h, old + h / 2, old - h / 2):
            p[idx] = x
            model._core.steps = steps
            losses.append(model.loss_and_grad(sparse, dense, labels))
        p[idx] = old
        wide, narrow = (losses[0] - losses[1]) / (2 * h), (losses[2] - losses[3]) / h
        if abs(wide - narrow) > 1e-3 + 0.05 * abs(narrow):
            continue  # a ReLU kink inside [-h, h]
        checked += 1
        assert g[idx] == pytest.approx(narrow, abs=2e-3, rel=2e-2), idx
    assert checked >= 2


def test_dropout_masks_differ_per_expert_and_step():
    model = make("mmoe", 2, dropout=0.5, seed=9)
    sparse, dense, _ = batch(n=200)
    a, b = model.train()(sparse, dense), model(sparse, dense)
    assert not np.allclose(a, b)
    twin = make("mmoe", 2, dropout=0.5, seed=9)
    np.testing.assert_array_equal(twin.train()(sparse, dense), a)
    np.testing.assert_array_equal(model.eval()(sparse, dense), model(sparse, dense))


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("ple", dict(num_experts=3), "even"),
        ("ple", dict(num_experts=0), "even"),
        ("omoe", dict(num_experts=0), "1..64"),
        ("mmoe", dict(num_experts=65), "1..64"),
        ("sharedbottom", dict(num_experts=4), "no experts"),
        ("aitm", dict(num_experts=8), "no experts"),
        ("ple", dict(num_experts=44), "<= 64"),
        ("ple_paper", dict(num_experts=3), "even"),
        ("ple_paper", dict(num_experts=44), "<= 64"),
    ],
)
def test_bad_expert_counts_are_rejected(name, kw, match):
    with pytest.raises(ValueError, match=match):
        make(name, 2, **kw)


@pytest.mark.parametrize(
    "name,cls", [("ple", rmtl.models.PLE), ("ple_paper", rmtl.models.PLEPaper)]
)
def test_save_load_keeps_the_expert_count(tmp_path, name, cls):
    model = make(name, 3, num_experts=4, bottom_dims=(12, 10, 8), dropout=0.2)
    sparse, dense, labels = batch(num_tasks=3)
    model.loss_and_grad(sparse, dense, labels)
    model.adam_step()
    rmtl.save(model, tmp_path / "ple.npz")
    back = rmtl.load(tmp_path / "ple.npz")
    assert type(back) is cls and back.config == model.config
    np.testing.assert_array_equal(back.predict(sparse, dense), model.predict(sparse, dense))


def test_a_ple_file_of_the_paper_layout_loads_as_ple_paper(tmp_path):
    """A "ple" file written before "ple" became the authors' module (no tensor names in it)
    holds the PLE paper's layout: it loads as ple_paper with a warning saying so. A file
    whose tensor names are not the rebuilt network's is refused."""
    model = make("ple_paper", 2, num_experts=4)
    sparse, dense, labels = batch()
    model.loss_and_grad(sparse, dense, labels)
    model.adam_step()
    rmtl.save(model, tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as z:
        members = {k: z[k] for k in z.files}
    config = json.loads(bytes(members["config"]).decode())
    old = {k: v for k, v in members.items() if k != "keys"}
    old["config"] = np.frombuffer(json.dumps({**config, "name": "ple"}).encode(), np.uint8)
    np.savez(tmp_path / "old.npz", **old)
    with pytest.warns(UserWarning, match="now named 'ple_paper'"):
        back = rmtl.load(tmp_path / "old.npz")
    assert type(back) is rmtl.models.PLEPaper and back.config == model.config
    np.testing.assert_array_equal(back.predict(sparse, dense), model.predict(sparse, dense))
    renamed = dict(members, config=old["config"])  # the paper's tensor names under "ple"
    np.savez(tmp_path / "renamed.npz", **renamed)
    with pytest.raises(ValueError, match="not this network's"):
        rmtl.load(tmp_path / "renamed.npz")


def test_the_authors_module_leaves_its_shared_gates_without_gradient(torch):
    """What rmtl's freezing of gate.<i>.<T> rests on: in the authors' module no task stream
    reads the shared stream, so every level's shared gate gets no gradient (None, which
    torch's Adam skips, weight decay included), not only the last level's."""
    from torch_reference import twin_of, weighted_bce

    net = twin_of(make("ple", 3, bottom_dims=(12, 10, 8), num_experts=4))
    sparse, dense, labels = batch(num_tasks=3)
    weighted_bce(
        net(torch.from_numpy(sparse).long(), torch.from_numpy(dense)), torch.from_numpy(labels)
    ).backward()
    none = {k for k, p in net.named_parameters() if p.grad is None}
    assert none == {f"gate.{i}.3.0.{s}" for i in range(3) for s in ("weight", "bias")}


def test_shared_experts_draw_their_own_dropout_mask_on_every_task_stream():
    """Both task streams made equal (own experts zero, equal gates and towers): the outputs
    agree in evaluation mode and differ in training mode only through the dropout masks of
    the level-1 shared experts, which must differ between the two streams."""
    model = make("ple", 2, num_experts=4, bottom_dims=(12, 10), tower_dims=(), dropout=0.5, seed=2)
    p = dict(model.named_parameters())
    for i in (0, 1):
        for e in range(4):  # task 0's 2 experts, task 1's 2
            p[f"expert.{i}.{e}.mlp.0.weight"][...] = 0
            p[f"expert.{i}.{e}.mlp.0.bias"][...] = 0
        for s in ("weight", "bias"):
            p[f"gate.{i}.1.0.{s}"][...] = p[f"gate.{i}.0.0.{s}"]
    for s in ("weight", "bias"):
        p[f"tower.1.mlp.0.{s}"][...] = p[f"tower.0.mlp.0.{s}"]
    p["expert.0.4.mlp.0.weight"][...] = (
        0  # level 0 without dropout noise: a constant positive output
    )
    p["expert.0.4.mlp.0.bias"][...] = 1
    p["expert.0.5.mlp.0.weight"][...] = 0
    p["expert.0.5.mlp.0.bias"][...] = 1
    sparse, dense, _ = batch(n=64)
    out = model.eval()(sparse, dense)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    out = model.train()(sparse, dense)
    assert (out[:, 0] != out[:, 1]).mean() > 0.5
