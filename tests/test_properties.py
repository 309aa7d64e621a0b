"""Property-based tests (Hypothesis): random arrays, shapes, dtypes, hyperparameters, files and
CSV bytes thrown at the public API and the loaders. Every call gives a correct result or a
clear exception (ValueError or TypeError whose message names the argument); never a crash
or a raw internal exception. Deterministic (derandomize) and small (few examples)."""

import functools
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import optional

import rmtl

hypothesis = optional("hypothesis")
# these imports must follow optional(), which skips the module when hypothesis is missing
from hypothesis import HealthCheck, given, settings  # noqa: E402 - after optional()
from hypothesis import strategies as st  # noqa: E402 - after optional()
from hypothesis.extra import numpy as hnp  # noqa: E402 - after optional()

FAST = settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
DTYPES = st.sampled_from(
    ["int8", "int32", "int64", "uint16", "float32", "float64", "bool", "complex64", "<U2"]
)
FIELD_DIMS = (4, 3)


def arrays(shape=None, dtype=DTYPES, elements=None):
    """Arrays of any listed dtype; ``shape`` None = any small shape of 0-3 dimensions."""
    shapes = (
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6) if shape is None else shape
    )
    return dtype.flatmap(lambda d: hnp.arrays(np.dtype(d), shapes, elements=elements))


def clear(error, *names):
    """The error is a ValueError/TypeError whose message starts with one of ``names``."""
    assert isinstance(error, (ValueError, TypeError)), f"raw {type(error).__name__}: {error}"
    assert str(error).split(":")[0].strip() in names or any(
        str(error).startswith(n) for n in names
    ), str(error)


def call(fn, *names):
    """fn() or the checked clear exception; returns (result, error)."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - every exception is checked by clear()
        clear(e, *names)
        return None, e


# ------------------------------------------------------------------ SessionData
@FAST
@given(
    session=arrays(),
    time=arrays(),
    sparse=arrays(),
    dense=st.none() | arrays(),
    labels=arrays(),
    field_dims=st.lists(st.integers(-2, 6), min_size=0, max_size=3),
)
def test_session_data_random_arrays(session, time, sparse, dense, labels, field_dims):
    data, err = call(
        lambda: rmtl.SessionData(session, time, sparse, dense, labels, field_dims),
        "session",
        "time",
        "sparse",
        "dense",
        "labels",
        "field_dims",
    )
    if data is not None:
        n = len(data)
        assert data.offsets[0] == 0 and data.offsets[-1] == n and (np.diff(data.offsets) > 0).all()
        assert data.sparse.dtype == np.int32 and (data.sparse >= 0).all()
        assert (data.sparse < np.array(data.field_dims)).all() and np.isin(
            data.labels, (0, 1)
        ).all()


@st.composite
def session_data(draw, n_max=30):
    n = draw(st.integers(1, n_max))
    lengths = []
    while sum(lengths) < n:
        lengths.append(draw(st.integers(1, 5)))
    lengths[-1] -= sum(lengths) - n
    session = np.repeat(np.arange(len(lengths)), lengths)
    sparse = np.stack(
        [draw(hnp.arrays(np.int64, n, elements=st.integers(0, d - 1))) for d in FIELD_DIMS], 1
    )
    dense = draw(hnp.arrays(np.float32, (n, 1), elements=st.floats(-1e3, 1e3, width=32)))
    labels = draw(hnp.arrays(np.float32, (n, 2), elements=st.sampled_from([0.0, 1.0])))
    return rmtl.SessionData(session, np.arange(n), sparse, dense, labels, FIELD_DIMS)


SCALARS = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-3, 40)
    | st.booleans()
    | st.sampled_from(["0.5", None])
)


@FAST
@given(
    data=session_data(),
    fractions=SCALARS | st.lists(SCALARS, max_size=5) | arrays(),
    sessions=SCALARS | st.lists(SCALARS, max_size=6) | arrays(),
)
def test_split_and_subset_random_arguments(data, fractions, sessions):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clear refusal, never a RuntimeWarning
        parts, err = call(lambda: data.split(fractions), "fractions")
        part, err = call(lambda: data.subset(sessions), "sessions")
    if parts is not None:
        assert len(parts) >= 2 and sum(p.num_sessions for p in parts) == data.num_sessions
        assert np.isfinite(np.asarray(fractions, np.float64)).all()
    if part is not None:
        idx = np.asarray(sessions)
        assert idx.dtype.kind in "iu" and part.num_sessions == idx.size
        lengths = np.diff(data.offsets)[idx]
        assert len(part) == lengths.sum()


# ------------------------------------------------------------------ models
MODEL = rmtl.models.create(
    "mmoe", FIELD_DIMS, 1, 2, embed_dim=4, bottom_dims=(8,), tower_dims=(4,), num_experts=2
)


@FAST
@given(
    sparse=arrays(),
    dense=st.none() | arrays(),
    batch=st.integers(-3, 9),
    tables=st.sampled_from([None, True, False]),
)
def test_predict_random_inputs(sparse, dense, batch, tables):
    prob, err = call(
        lambda: MODEL.predict(sparse, dense, batch_size=batch, tables=tables),
        "sparse",
        "dense",
        "batch_size",
    )
    if prob is not None:
        assert prob.shape == (len(sparse), 2) and prob.dtype == np.float32
        assert np.isfinite(prob).all() and ((prob >= 0) & (prob <= 1)).all()
        np.testing.assert_allclose(
            prob, MODEL.predict(sparse.astype(np.int32), dense, tables=False), atol=1e-5
        )


# ------------------------------------------------------------------ Trainer
NUMBERS = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-5, 10**6)
    | st.booleans()
    | st.sampled_from(["1e-3", None])
)


@FAST
@given(
    data=session_data(),
    lr=NUMBERS,
    weight_decay=NUMBERS,
    batch_size=NUMBERS,
    eps=NUMBERS,
    seed=NUMBERS,
    beta=NUMBERS,
    epochs=NUMBERS,
)
def test_trainer_random_hyperparameters(
    data, lr, weight_decay, batch_size, eps, seed, beta, epochs
):
    model = rmtl.models.create(
        "sharedbottom", FIELD_DIMS, 1, 2, embed_dim=4, bottom_dims=(8,), tower_dims=(4,)
    )
    trainer, err = call(
        lambda: rmtl.Trainer(
            model,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            eps=eps,
            seed=seed,
            betas=(0.9, beta),
            progress=False,
        ),
        "lr",
        "weight_decay",
        "batch_size",
        "eps",
        "seed",
        "beta2",
    )
    if trainer is None:
        return
    if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and epochs > 3:
        epochs = 3  # keep it fast; larger valid counts only run longer
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hist = trainer.fit(data, data, epochs=epochs)
    except rmtl.NonFiniteLossError:  # a clear stop: huge lr may diverge
        return
    except Exception as e:  # noqa: BLE001
        clear(e, "epochs")
        return
    assert 1 <= len(hist.epochs) <= epochs
    assert all(np.isfinite(v).all() for v in model.state_dict().values())


# ------------------------------------------------------------------ metrics
@FAST
@given(y=arrays(), s=arrays(), g=arrays())
def test_metrics_random_arrays(y, s, g):
    for fn, args, names in (
        (rmtl.metrics.auc, (y, s), ("y_true", "y_score")),
        (rmtl.metrics.logloss, (y, s), ("y_true", "y_prob")),
        (rmtl.metrics.gauc, (y, s, g), ("y_true", "y_score", "groups")),
        (rmtl.metrics.session_logloss, (y, s, g), ("y_true", "y_prob", "sessions")),
    ):
        value, err = call(functools.partial(fn, *args), *names)
        if value is not None:
            assert math.isfinite(value) and value >= 0


@FAST
@given(y=hnp.arrays(np.int8, st.integers(2, 40), elements=st.sampled_from([0, 1])), s=st.data())
def test_auc_and_logloss_match_scikit_learn(y, s):
    skm = optional("sklearn.metrics")
    score = s.draw(hnp.arrays(np.float32, len(y), elements=st.floats(0, 1, width=32)))
    if 0 < y.sum() < len(y):
        assert rmtl.metrics.auc(y, score) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    else:
        with pytest.raises(ValueError, match="one class"):
            rmtl.metrics.auc(y, score)
    p = np.clip(score.astype(np.float64), 0, 1)
    with np.errstate(divide="ignore"):
        expected = -np.mean(np.maximum(np.log(np.where(y == 1, p, 1 - p)), -100))
    assert rmtl.metrics.logloss(y, score) == pytest.approx(expected, rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------ files and loaders
@FAST
@given(raw=st.binary(max_size=400), keep=st.integers(0, 4000))
def test_loaders_on_damaged_files(tmp_path_factory, raw, keep):
    tmp = tmp_path_factory.mktemp("files")
    model_file = tmp / "m.npz"
    rmtl.save(MODEL, model_file)
    good = model_file.read_bytes()
    for name, content in (("random.npz", raw), ("cut.npz", good[:keep])):
        path = tmp / name
        path.write_bytes(content)
        for load in (rmtl.load, rmtl.SessionData.load, rmtl.ReplayBuffer.load, rmtl.Critic.load):
            try:
                load(path)
            except rmtl.CorruptFileError as e:
                assert e.path == str(path)
            except Exception as e:  # noqa: BLE001
                raise AssertionError(
                    f"{load.__qualname__} on {name}: raw {type(e).__name__}: {e}"
                ) from e


EVENTS_HEADER = b"timestamp,visitorid,event,itemid,transactionid\n"


@FAST
@given(
    rows=st.lists(
        st.tuples(
            st.integers(-5, 10**13),
            st.integers(-2, 50),
            st.sampled_from([b"view", b"addtocart", b"transaction", b"look", b"", b"\xff"]),
            st.integers(-1, 20),
            st.sampled_from([b"", b"7", b"x"]),
        ),
        max_size=12,
    ),
    junk=st.binary(max_size=30),
    at=st.integers(0, 200),
)
def test_retailrocket_loader_on_random_csv_bytes(tmp_path_factory, rows, junk, at):
    optional("pyarrow", "data")
    from rmtl.datasets import DataFormatError, load_retailrocket

    raw = tmp_path_factory.mktemp("rr")
    fixture = Path(__file__).parent / "data" / "retailrocket"
    for f in fixture.iterdir():
        shutil.copy(f, raw / f.name)
    body = b"".join(b"%d,%d,%s,%d,%s\n" % r for r in rows)
    body = body[:at] + junk + body[at:]
    (raw / "events.csv").write_bytes(EVENTS_HEADER + body)
    try:
        data = load_retailrocket(raw)
    except DataFormatError as e:
        assert "events.csv" in str(e) or "item_properties" in str(e) or "category_tree" in str(e), (
            str(e)
        )
    except (ValueError, TypeError) as e:
        clear(e, str(raw), "events", "sessions", "sparse", "session", "time")
    else:
        assert len(data) > 0 and np.isin(data.labels, (0, 1)).all()
