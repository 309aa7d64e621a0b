"""Python conventions and neighbours: pickling and copying networks, PyTorch both ways
(rmtl.torch), one save/load convention, the package's metadata."""

import copy
import pickle

import numpy as np
import pytest
from conftest import random_session_data

import rmtl
from rmtl.models import BACKBONES

SMALL = dict(embed_dim=6, bottom_dims=(12, 8), tower_dims=(7, 5), dropout=0.3)
FIELDS = (5, 7, 3)


def make(name, seed=3, **kw):
    tasks = 2 if name == "esmm" else 3
    return rmtl.models.create(name, FIELDS, 2, tasks, seed=seed, **dict(SMALL, **kw))


def make_critic(seed=4):
    return rmtl.Critic(FIELDS, 2, seed=seed, **SMALL)


def batch(n=70, tasks=3, seed=0):
    rng = np.random.default_rng(seed)
    sparse = np.stack([rng.integers(0, d, n) for d in FIELDS], 1).astype(np.int32)
    dense = rng.normal(size=(n, 2)).astype(np.float32)
    labels = (rng.random((n, tasks)) < 0.4).astype(np.float32)
    return sparse, dense, labels


def trained(name):
    """A backbone part-way through training (Adam moments, step and dropout counters set),
    in training mode, with the plain first layer and an attribute of the user's."""
    model = make(name).train()
    sparse, dense, labels = batch(tasks=model.config.num_tasks)
    model.train_chunk(np.arange(70, dtype=np.int64), sparse, dense, labels, batch_size=16, lr=1e-2)
    model.first_layer = "plain"
    model.note = {"epoch": 3}
    return model


COPIES = {
    "pickle": lambda x: pickle.loads(pickle.dumps(x)),
    "pickle-protocol-2": lambda x: pickle.loads(pickle.dumps(x, protocol=2)),
    "deepcopy": copy.deepcopy,
    "copy": copy.copy,
}


def same_net(a, b):
    assert type(a) is type(b) and a.config == b.config and a is not b
    assert a.training == b.training and a.first_layer == b.first_layer
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[key], value)
    sa, sb = a.optimizer_state(), b.optimizer_state()
    assert (sa["steps"], sa["counter"]) == (sb["steps"], sb["counter"])
    np.testing.assert_array_equal(sa["adam_m"], sb["adam_m"])
    np.testing.assert_array_equal(sa["adam_v"], sb["adam_v"])


@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbones_pickle_and_copy_bit_for_bit(name, how):
    model = trained(name)
    other = COPIES[how](model)
    same_net(model, other)
    assert other.note == {"epoch": 3}
    assert (other.note is model.note) == (how == "copy")  # copy.copy: attributes shallow
    sparse, dense, labels = batch(tasks=model.config.num_tasks, seed=1)
    np.testing.assert_array_equal(other.predict(sparse, dense), model.predict(sparse, dense))
    # training goes on as the original's would (dropout masks from the restored counter)
    rows = np.arange(70, dtype=np.int64)
    losses = [
        net.train_chunk(rows, sparse, dense, labels, batch_size=16, lr=1e-2)
        for net in (model, other)
    ]
    assert losses[0] == losses[1]
    same_net(model, other)
    # the copy is independent: its buffers are its own
    next(iter(other.parameters()))[...] = 0.0
    assert np.any(next(iter(model.parameters())) != 0.0)


@pytest.mark.parametrize("how", sorted(COPIES))
def test_critics_pickle_and_copy_bit_for_bit(how):
    critic = make_critic().train()
    sparse, dense, _ = batch()
    action = np.random.default_rng(2).random(70).astype(np.float32)
    critic.backward(sparse, dense, action)
    critic.adam_step(1e-2)
    other = COPIES[how](critic)
    same_net(critic, other)
    np.testing.assert_array_equal(
        other.predict(sparse, dense, action), critic.predict(sparse, dense, action)
    )
    for net in (critic, other):  # a training-mode forward draws dropout masks
        net.backward(sparse, dense, action)
        net.adam_step(1e-2)
    same_net(critic, other)


def test_eval_mode_and_default_first_layer_survive_pickling():
    model = make("mmoe").eval()
    other = pickle.loads(pickle.dumps(model))
    assert not other.training and other.first_layer == "auto"


def test_a_pickle_of_another_layout_is_refused():
    state = make("mmoe").__getstate__()
    state["keys"] = list(reversed(state["keys"]))
    other = rmtl.models.MMoE.__new__(rmtl.models.MMoE)
    with pytest.raises(ValueError, match="pickled tensors are not this network's"):
        other.__setstate__(state)


def test_joblib_dumps_and_loads_a_model(tmp_path):
    joblib = pytest.importorskip("joblib")
    model = trained("ple")
    joblib.dump({"best": model}, tmp_path / "best.joblib")
    same_net(model, joblib.load(tmp_path / "best.joblib")["best"])


def test_a_trained_model_deepcopies_as_the_best_model_habit():
    data = random_session_data(n_sessions=40)
    train, valid = data.split((0.7, 0.3))
    model = rmtl.models.create("esmm", train.field_dims, train.num_dense, train.num_tasks, **SMALL)
    best = None
    trainer = rmtl.Trainer(model, lr=1e-2, batch_size=64, progress=False)
    for _ in range(2):
        trainer.fit(train, epochs=1)
        best = copy.deepcopy(model)
    np.testing.assert_array_equal(
        best.predict(valid.sparse, valid.dense), model.predict(valid.sparse, valid.dense)
    )


# ---------------------------------------------------------------------- one save/load convention
@pytest.mark.parametrize("kind", ["model", "critic"])
def test_save_and_load_in_both_forms(tmp_path, kind):
    net = trained("mmoe") if kind == "model" else make_critic()
    cls = rmtl.models.Backbone if kind == "model" else rmtl.Critic
    rmtl.save(net, tmp_path / "a.npz")
    net.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    for loaded in (rmtl.load(tmp_path / "a.npz"), cls.load(tmp_path / "b.npz")):
        assert type(loaded) is type(net) and not loaded.training
        for key, value in net.state_dict().items():
            np.testing.assert_array_equal(loaded.state_dict()[key], value)
        assert loaded.optimizer_state()["steps"] == net.optimizer_state()["steps"]


def test_load_refuses_the_wrong_kind(tmp_path):
    trained("mmoe").save(tmp_path / "m.npz")
    make_critic().save(tmp_path / "c.npz")
    assert type(rmtl.models.MMoE.load(tmp_path / "m.npz")) is rmtl.models.MMoE
    with pytest.raises(TypeError, match="holds a MMoE; use rmtl.load"):
        rmtl.models.ESMM.load(tmp_path / "m.npz")
    with pytest.raises(rmtl.CorruptFileError, match="not an rmtl critic file"):
        rmtl.Critic.load(tmp_path / "m.npz")
    with pytest.raises(rmtl.CorruptFileError, match="not an rmtl model file"):
        rmtl.models.Backbone.load(tmp_path / "c.npz")
    np.save(tmp_path / "other.npy", np.zeros(3))
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(rmtl.CorruptFileError, match="not an rmtl model or critic file"):
        rmtl.load(tmp_path / "other.npz")
    with pytest.raises(TypeError, match="expected an rmtl backbone or rmtl.Critic"):
        rmtl.save(random_session_data(n_sessions=5), tmp_path / "d.npz")


# ---------------------------------------------------------------------- PyTorch both ways
def inputs(torch, net, seed=5):
    sparse, dense, _ = batch(seed=seed)
    out = (torch.from_numpy(sparse.astype(np.int64)), torch.from_numpy(dense))
    action = np.random.default_rng(seed).random(len(sparse)).astype(np.float32)
    if isinstance(net, rmtl.Critic):
        return (sparse, dense, action), (*out, torch.from_numpy(action))
    return (sparse, dense), out


NETS = sorted(BACKBONES) + ["critic"]


def build(name):
    return make_critic() if name == "critic" else make(name)


def test_import_rmtl_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = "import sys, rmtl; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_rmtl_torch_is_there_on_first_use(torch, tmp_path):
    import subprocess
    import sys

    code = "import sys, rmtl; rmtl.torch.to_torch; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


@pytest.mark.parametrize("name", NETS)
def test_to_torch_and_back_predict_the_same(name, torch):
    import rmtl.torch as rt

    net = build(name).eval()
    module = rt.to_torch(net)
    assert isinstance(module, torch.nn.Module) and not module.training
    assert module.rmtl_config == net.config.to_dict()
    assert sorted(module.state_dict()) == sorted(net.state_dict())
    ours, theirs = inputs(torch, net)
    with torch.no_grad():
        np.testing.assert_allclose(module(*theirs).numpy(), net.predict(*ours), atol=1e-5)
    back = rt.from_torch(module)
    assert type(back) is type(net) and back.config == net.config and not back.training
    np.testing.assert_array_equal(back.predict(*ours), net.predict(*ours))
    assert rt.to_torch(net.train()).training and rt.from_torch(module.train()).training


@pytest.mark.parametrize("name", ["mmoe", "critic"])
def test_weights_trained_in_torch_come_back(name, torch):
    import rmtl.torch as rt

    net = build(name)
    module = rt.to_torch(net).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ours, theirs = inputs(torch, net)
    back = rt.from_torch(module, like=net)
    with torch.no_grad():
        np.testing.assert_allclose(back.predict(*ours), module(*theirs).numpy(), atol=1e-5)
    # the other way needs no helper: rmtl takes tensors as they are
    net.load_state_dict(module.state_dict())
    np.testing.assert_array_equal(net.predict(*ours), back.predict(*ours))


def test_state_dicts_load_into_torch_modules(torch):
    import rmtl.torch as rt

    model = make("ple")
    fresh = rt.module_for(model.config)  # PyTorch's own initialisation
    fresh.load_state_dict(rt.state_dict(model))  # the README's line
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key].numpy(), value)
    converted = rt.state_dict_to_torch(model.state_dict())
    assert all(t.dtype == torch.float32 for t in converted.values())
    converted["tower.0.mlp.0.bias"][0] = 9.0  # copies, not views of the model
    assert model.state_dict()["tower.0.mlp.0.bias"][0] != 9.0
    with pytest.raises(TypeError, match="expected an rmtl backbone or rmtl.Critic"):
        rt.to_torch(fresh)


def test_module_for_reads_backbone_names_as_create_does(torch):
    import rmtl.torch as rt

    config = dict(make("mmoe").config.to_dict(), name="MMoE")
    module = rt.module_for(config)
    assert isinstance(module, rt.MMoE) and module.rmtl_config["name"] == "mmoe"
    assert rmtl.models.create("MMoE", FIELDS, 2, 3, **SMALL).config.name == "mmoe"
    with pytest.raises(ValueError, match="config: unknown backbone 'nope'"):
        rt.module_for(dict(config, name="nope"))


def test_from_torch_needs_a_configuration(torch):
    import rmtl.torch as rt

    model = make("esmm")
    # a module of the reference architecture without rmtl's record, as the authors' code
    foreign = rt.ESMM([5, 7, 3], 2, 2, 6, [12, 8], [7, 5], 0.3)
    del foreign.rmtl_config
    with pytest.raises(ValueError, match="carries no rmtl_config; pass like="):
        rt.from_torch(foreign)
    back = rt.from_torch(foreign, like=model)
    assert back.config == model.config
    with pytest.raises(ValueError, match="missing keys"):
        rt.from_torch(torch.nn.Linear(2, 2), like=model)
    # a twin built by hand records its configuration (seed 0)
    built = rt.from_torch(rt.MMoE([5, 7, 3], 2, 3, 6, [12, 8], [7, 5], 0.3, num_experts=4))
    assert built.config == make("mmoe", seed=0, num_experts=4).config


@pytest.mark.parametrize("name", NETS)
def test_onnx_export_predicts_as_rmtl(name, torch, tmp_path):
    import os

    from conftest import require

    required = os.environ.get("RMTL_REQUIRE_TORCH") == "1"
    require("onnx", required, "pip install 'rmtl[onnx]'")
    ort = require("onnxruntime", required, "pip install 'rmtl[onnx]'")
    import rmtl.torch as rt

    net = build(name)
    rt.export_onnx(net, tmp_path / "net.onnx")
    ours, _ = inputs(torch, net)
    feed = dict(zip(["sparse", "dense", "action"], ours))
    feed["sparse"] = feed["sparse"].astype(np.int64)
    out = ort.InferenceSession(str(tmp_path / "net.onnx")).run(None, feed)[0]
    np.testing.assert_allclose(out, net.predict(*ours), atol=1e-5)
    assert net.training  # the export leaves the network as it was


# ---------------------------------------------------------------------- the package's metadata
def test_metadata_classifiers_urls_and_py_typed():
    import sys
    from pathlib import Path

    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = pytest.importorskip("tomli")
    root = Path(__file__).resolve().parents[1]
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    project = meta["project"]
    assert "Typing :: Typed" in project["classifiers"]
    versions = [c.rsplit(" ", 1)[1] for c in project["classifiers"] if ":: Python :: 3." in c]
    assert versions[0] == project["requires-python"].lstrip(">=")
    assert project["urls"]["Paper"] == "https://dl.acm.org/doi/10.1145/3543507.3583467"
    assert "Applied-Machine-Learning-Lab/RMTL" in project["urls"]["Authors' code"]
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["rmtl"]
    assert (root / "rmtl" / "py.typed").is_file()
    assert {"torch", "onnx"} <= set(project["optional-dependencies"])


def test_readme_links_work_on_a_package_index():
    """the README is the package's page on an index, where a link relative to the repository
    leads nowhere: every link and image is absolute (files of the checkout are named in code)"""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets and all(t.startswith(("https://", "http://")) for t in targets), [
        t for t in targets if not t.startswith(("https://", "http://"))
    ]
