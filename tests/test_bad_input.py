"""Bad input raises a clear error and never crashes or half-updates a model."""

import numpy as np
import pytest

import rmtl


def model():
    return rmtl.models.SharedBottom((4, 5), 1, 2, embed_dim=4, bottom_dims=(8,), tower_dims=(4,))


GOOD = (np.array([[0, 1], [3, 4]], np.int32), np.zeros((2, 1), np.float32))


@pytest.mark.parametrize(
    "sparse,dense,err,match",
    [
        (np.array([[0, 5], [0, 0]]), GOOD[1], ValueError, r"code 5 at row 0, field 1 .*\[0, 5\)"),
        (np.array([[-1, 0], [0, 0]]), GOOD[1], ValueError, "sparse"),
        (np.array([[0.0, 1.0], [0, 0]]), GOOD[1], TypeError, "integer"),
        (np.array([[0, 1, 2]]), np.zeros((1, 1)), ValueError, r"expected shape \(n, 2\)"),
        (GOOD[0], np.array([[np.nan], [0]]), ValueError, "NaN"),
        (GOOD[0], np.zeros((2, 3)), ValueError, r"dense: expected shape \(2, 1\)"),
        (GOOD[0], None, ValueError, "expects 1 dense"),
        (GOOD[0], np.array([["a"], ["b"]]), TypeError, "dense"),
    ],
)
def test_predict_rejects(sparse, dense, err, match):
    with pytest.raises(err, match=match):
        model().predict(sparse, dense)


def test_core_rejects_unchecked_arrays():
    m = model()
    core = m._core
    out = np.zeros((2, 2), np.float32)
    with pytest.raises(TypeError, match="int32"):
        core.predict(GOOD[0].astype(np.int64), GOOD[1], out, 16)
    with pytest.raises(ValueError, match="contiguous"):
        core.predict(np.asfortranarray(np.array([[0, 1], [2, 3]], np.int32)), GOOD[1], out, 16)
    ro = out.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        core.predict(GOOD[0], GOOD[1], ro, 16)
    with pytest.raises(ValueError, match="out: expected size 2"):
        core.predict(GOOD[0], GOOD[1], np.zeros((3, 2), np.float32), 16)
    bad = np.array([[0, 9], [0, 0]], np.int32)
    with pytest.raises(ValueError, match="field 1"):
        core.predict(bad, GOOD[1], out, 16)
    with pytest.raises(ValueError, match=r"code -1 at row 1, field 0 is outside \[0, 4\)"):
        core.predict(np.array([[3, 4], [-1, 0]], np.int32), GOOD[1], out, 16)
    with pytest.raises(ValueError, match="rows: index 5"):
        m.train_chunk(
            np.array([0, 5]), GOOD[0], GOOD[1], np.zeros((2, 2), np.float32), batch_size=2, lr=1e-3
        )
    with pytest.raises(ValueError, match="adam"):
        m.adam_step(lr=-1.0)


def test_bad_labels_leave_model_unchanged():
    m = model()
    before = m.state_dict()
    with pytest.raises(ValueError, match="0/1"):
        m.loss_and_grad(*GOOD, np.array([[0, 2], [1, 0]]))
    with pytest.raises(ValueError, match="weights"):
        m.loss_and_grad(*GOOD, np.zeros((2, 2)), -np.ones((2, 2)))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_checks_everything_first():
    m = model()
    sd = m.state_dict()
    before = {k: v.copy() for k, v in sd.items()}
    sd["bottom.mlp.0.weight"] = sd["bottom.mlp.0.weight"] + 1
    sd["tower.0.mlp.3.weight"] = np.zeros((2, 2))  # wrong shape, after a good change
    with pytest.raises(ValueError, match=r"tower.0.mlp.3.weight.*expected shape \(1, 4\)"):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="missing keys"):
        m.load_state_dict({k: v for k, v in before.items() if k != "numerical_layer.bias"})
    with pytest.raises(ValueError, match="unexpected keys"):
        m.load_state_dict(dict(before, extra=np.zeros(1)))
    m.load_state_dict({"numerical_layer.bias": np.ones(4)}, strict=False)
    np.testing.assert_array_equal(dict(m.named_parameters())["numerical_layer.bias"], 1)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(num_tasks=3, name="esmm"), "ESMM"),
        (dict(dropout=1.0), "dropout"),
        (dict(bottom_dims=()), "bottom_dims"),
        (dict(embed_dim=0), "embed_dim"),
        (dict(field_dims=(3, 0)), "field_dims"),
        (dict(name="nope"), "unknown backbone"),
    ],
)
def test_bad_configs(kw, match):
    args = dict(name="sharedbottom", field_dims=(3, 3), num_dense=1, num_tasks=2)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        rmtl.models.create(**args)


def test_the_backbone_base_class_is_refused():
    with pytest.raises(TypeError, match=r"Backbone: .*got name ''; build a subclass .*create"):
        rmtl.models.Backbone((3, 3), 1, 2)

    class Nameless(rmtl.models.Backbone):
        """A subclass that forgot its name."""

    with pytest.raises(TypeError, match="Nameless: expected a backbone class with a name"):
        Nameless((3, 3), 1, 2)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        rmtl.load(tmp_path / "nope.npz")


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: rmtl.metrics.logloss([0, 1], [0.2, 1.5]), r"y_prob: .*got 1\.5 at flat index 1"),
        (lambda: rmtl.metrics.oracle_auc([0.2, 1.5]), r"truth: .*got 1\.5 at flat index 1"),
        (lambda: model().adam_step(lr=-1.0), r"lr=-1 "),
        (
            lambda: model()._core.loss_backward(GOOD[0], GOOD[1], np.full((2, 2), 0.5, np.float32)),
            r"got 0\.5",
        ),
        (lambda: rmtl._core.soft_update(model()._core, model()._core, 2.0), r"got 2$"),
    ],
)
def test_error_messages_show_the_number(call, match):
    """These messages once used %g, which PyErr_Format does not support (a literal '%g' on
    3.11, SystemError on 3.12 and later)."""
    with pytest.raises(ValueError, match=match):
        call()


def test_non_finite_adam_settings_are_rejected():
    with pytest.raises(ValueError, match="lr=inf"):
        model().adam_step(lr=float("inf"))


def test_negative_int32_codes_are_rejected_by_name():
    sparse = np.array([[-1, 0], [1, 1]], np.int32)
    with pytest.raises(ValueError, match=r"sparse: .*-1"):
        rmtl.SessionData(
            [1, 1],
            [1, 2],
            sparse,
            np.zeros((2, 1), np.float32),
            np.zeros((2, 2), np.float32),
            (4, 5),
        )


def test_codes_beyond_int32_say_what_is_checked():
    """as_codes checks the sign and the int32 range; the C core checks each field's range."""
    sparse = np.array([[0, 1], [2**31, 1]], np.int64)
    with pytest.raises(ValueError, match=r"sparse: expected non-negative codes that fit in int32"):
        model().predict(sparse, GOOD[1])
    with pytest.raises(ValueError, match=r"sparse: .*int32 .*, got -3$"):
        model().predict(np.array([[0, 1], [-3, 1]], np.int64), GOOD[1])


def test_auc_ranks_float64_scores_exactly():
    """float64 scores that differ below float32 precision are not ties."""
    from sklearn.metrics import roc_auc_score

    y = np.array([0, 1, 0, 1])
    s = np.array([0.3, 0.3 + 1e-12, 0.3 + 2e-12, 0.3 + 3e-12])
    assert rmtl.metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s)) == pytest.approx(0.75)
    groups = np.zeros(4, np.int64)
    assert rmtl.metrics.gauc(y, s, groups) == pytest.approx(0.75)


def test_predict_workspace_is_sized_by_rows_not_batch_size():
    """10 rows with batch_size 2**26 once reserved 2**26 rows of workspace (tens of GB)."""
    import os

    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip(
            "AddressSanitizer reserves terabytes of address space; an address-space limit kills it"
        )
    import subprocess
    import sys
    from pathlib import Path

    root = (
        Path(rmtl.__file__).resolve().parents[1]
    )  # the rmtl under test: installed, or built in place
    code = f"""
import resource, sys
sys.path.insert(0, {str(root)!r})
import numpy as np
import rmtl
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.RLIM_INFINITY))
m = rmtl.models.SharedBottom((4, 5), 1, 2, embed_dim=16, bottom_dims=(64,), tower_dims=(16,))
c = rmtl.Critic((4, 5), 1, embed_dim=16, bottom_dims=(64,), tower_dims=(16,))
codes, dense = np.zeros((10, 2), np.int32), np.zeros((10, 1), np.float32)
assert m.predict(codes, dense, batch_size=2**26).shape == (10, 2)
assert c.predict(codes, dense, np.zeros(10, np.float32), batch_size=2**26).shape == (10,)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
