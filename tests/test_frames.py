"""pandas / Parquet in and out: SessionData.from_frame, from_parquet, to_frame and
ExperimentResult.to_frame."""

import sys

import numpy as np
import pytest
from conftest import optional, random_session_data

import rmtl
from rmtl.lab.report import ExperimentResult

pd = optional("pandas", "data")

FIELDS = ("session", "time", "sparse", "dense", "labels", "user", "item", "truth")


def assert_same(a, b):
    for k in FIELDS + ("critic_only",):
        x, y = getattr(a, k), getattr(b, k)
        assert (x is None) == (y is None), k
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=k)
            assert x.dtype == y.dtype, k
    assert a.field_dims == b.field_dims
    assert a.task_names == b.task_names
    assert a.vocab == b.vocab
    assert a.backbone_only == b.backbone_only
    np.testing.assert_array_equal(a.offsets, b.offsets)


def impressions():
    """2 sessions ("b" first, then "a"), 5 impressions, shuffled inside the sessions."""
    return pd.DataFrame(
        {
            "sid": ["b", "a", "a", "b", "a"],
            "ts": [20, 30, 10, 10, 20],
            "cat": ["x", "y", "x", "z", "x"],
            "device": ["m", "d", "d", None, "m"],
            "price": [1.5, 2.0, 0.5, 3.0, 1.0],
            "click": [1, 0, 1, 0, 0],
            "buy": [False, False, True, False, False],
        },
        index=[10, 11, 12, 13, 14],
    )


def from_impressions(df, **kw):
    args = dict(
        session="sid",
        order="ts",
        sparse=["cat", "device"],
        dense="price",
        labels=["click", "buy"],
    )
    args.update(kw)
    return rmtl.SessionData.from_frame(df, **args)


def test_from_frame_by_hand():
    d = from_impressions(impressions())
    # sessions in order of first appearance (b, then a), each sorted by ts:
    # rows 13 (b, 10), 10 (b, 20), 12 (a, 10), 14 (a, 20), 11 (a, 30)
    np.testing.assert_array_equal(d.offsets, [0, 2, 5])
    np.testing.assert_array_equal(d.session, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(d.time, [10, 20, 10, 20, 30])
    # cat: x 3 times -> 1, then y and z once each, ties by value -> 2, 3
    # device: d and m twice each (tie: d -> 1, m -> 2), missing -> 0
    np.testing.assert_array_equal(d.sparse, [[3, 0], [1, 2], [1, 1], [1, 2], [2, 1]])
    assert d.vocab == {"cat": {"x": 1, "y": 2, "z": 3}, "device": {"d": 1, "m": 2}}
    assert d.field_dims == (4, 3)
    np.testing.assert_array_equal(d.dense[:, 0], [3.0, 1.5, 0.5, 1.0, 2.0])
    np.testing.assert_array_equal(d.labels, [[0, 0], [1, 0], [1, 1], [0, 0], [0, 0]])
    assert d.task_names == ("click", "buy")
    assert d.user is None and d.item is None and d.truth is None


class ArrowStream:
    """Only the Arrow C stream interface of a table (what polars, DuckDB and others export)"""

    def __init__(self, table):
        self.table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self.table.__arrow_c_stream__(requested_schema)


def test_arrow_tables_give_what_pandas_gives():
    """a pyarrow Table, a polars DataFrame and any object with __arrow_c_stream__ are read
    through pyarrow into the same SessionData as the pandas frame of the same rows"""
    pa = optional("pyarrow", "data")
    frame = impressions()
    expected = from_impressions(frame)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert_same(from_impressions(table), expected)
    assert_same(from_impressions(ArrowStream(table)), expected)
    pl = pytest.importorskip("polars")
    assert_same(from_impressions(pl.from_arrow(table)), expected)


def test_a_table_without_the_arrow_interface_is_named():
    with pytest.raises(TypeError, match="Arrow C stream interface.*got dict"):
        from_impressions(impressions().to_dict())


def test_integer_ids_datetimes_and_ids():
    df = impressions()
    df["sid"] = [40, 7, 7, 40, 7]
    df["ts"] = pd.to_datetime(df["ts"], unit="s", utc=True).dt.tz_convert("Europe/Paris")
    df["u"] = ["bob", "ann", "ann", "bob", "ann"]
    d = from_impressions(df, user="u", item="sid")
    np.testing.assert_array_equal(d.session, [40, 40, 7, 7, 7])  # integer ids kept
    np.testing.assert_array_equal(d.time, [10_000, 20_000, 10_000, 20_000, 30_000])  # ms, UTC
    np.testing.assert_array_equal(d.user, [0, 0, 1, 1, 1])  # strings: first appearance
    np.testing.assert_array_equal(d.item, d.session)


def test_session_key_of_two_columns_and_stable_ties():
    df = pd.DataFrame(
        {
            "user": [1, 1, 2, 1],
            "day": [5, 6, 5, 5],
            "pos": [0, 0, 0, 0],
            "f": ["p", "q", "r", "s"],
            "y": [1, 0, 1, 0],
        }
    )
    d = rmtl.SessionData.from_frame(
        df, session=["user", "day"], order="pos", sparse="f", labels="y"
    )
    # (1, 5) rows 0 and 3 (equal positions keep the frame's order), then (1, 6), then (2, 5)
    np.testing.assert_array_equal(d.session, [0, 0, 1, 2])
    inv = {c: v for v, c in d.vocab["f"].items()}
    assert [inv[c] for c in d.sparse[:, 0]] == ["p", "s", "q", "r"]


def test_vocab_codes_another_frame_like_the_training_set():
    train = from_impressions(impressions())
    other = impressions()
    other["cat"] = ["z", "w", "x", "y", None]  # w is unseen
    d = from_impressions(other, vocab=train.vocab)
    assert d.vocab == train.vocab and d.field_dims == train.field_dims
    # sorted rows 13, 10, 12, 14, 11 -> y, z, x, None, w
    np.testing.assert_array_equal(d.sparse[:, 0], [2, 3, 1, 0, 0])


def test_codes_as_given_with_field_dims():
    df = impressions()
    df["cat"] = [1, 2, 0, 3, 1]
    df["device"] = [0, 1, 1, 0, 1]
    d = from_impressions(df, field_dims=(4, 2))
    np.testing.assert_array_equal(d.sparse, [[3, 0], [1, 0], [0, 1], [1, 1], [2, 1]])
    with pytest.raises(ValueError, match=r"column 'cat' holds code 3 at row 13, outside \[0, 3\)"):
        from_impressions(df, field_dims=(3, 2))
    df["cat"] = ["1", "2", "0", "3", "1"]
    with pytest.raises(TypeError, match="'cat'"):
        from_impressions(df, field_dims=(4, 2))


@pytest.mark.parametrize(
    "role, kw, column",
    [
        ("sparse", dict(sparse=["cat", "colour"]), "colour"),
        ("labels", dict(labels=["click", "cart"]), "cart"),
        ("dense", dict(dense=["price", "weight"]), "weight"),
        ("session", dict(session="visit"), "visit"),
        ("order", dict(order="timestamp"), "timestamp"),
        ("user", dict(user="uid"), "uid"),
    ],
)
def test_missing_column_is_named(role, kw, column):
    with pytest.raises(ValueError, match=rf"{role}: column '{column}' is not in the frame"):
        from_impressions(impressions(), **kw)


def test_missing_values_and_bad_labels_are_named():
    df = impressions()
    df["buy"] = df["buy"].astype(float)
    df.loc[12, "buy"] = np.nan
    with pytest.raises(ValueError, match=r"labels: column 'buy' has a missing value at row 12"):
        from_impressions(df)
    df = impressions()
    df.loc[11, "click"] = 2
    with pytest.raises(ValueError, match=r"labels: column 'click' holds 2.0 at row 11"):
        from_impressions(df)
    df = impressions()
    df.loc[14, "price"] = np.nan
    with pytest.raises(ValueError, match=r"dense: column 'price' has a missing value at row 14"):
        from_impressions(df)
    df = impressions()
    df.loc[10, "sid"] = None
    with pytest.raises(ValueError, match=r"session: column 'sid' has a missing value at row 10"):
        from_impressions(df)
    df = impressions()
    df["ts"] = ["a", "b", "c", "d", "e"]
    with pytest.raises(TypeError, match="order: column 'ts'"):
        from_impressions(df)
    with pytest.raises(ValueError, match="sparse, labels"):
        rmtl.SessionData.from_frame(impressions())
    with pytest.raises(ValueError, match="empty"):
        from_impressions(impressions().iloc[:0])


def test_round_trip_synthetic(tmp_path):
    data = rmtl.datasets.synthetic(n_users=40, seed=3)
    df = data.to_frame()
    assert list(df.columns[:4]) == ["session", "time", "user", "item"]
    assert list(df.columns[4:11]) == list(data.vocab)
    assert_same(rmtl.SessionData.from_frame(df), data)
    # explicit arguments give the same
    explicit = rmtl.SessionData.from_frame(
        df.copy(deep=True).rename_axis(None),
        session="session",
        order="time",
        sparse=list(data.vocab),
        dense=["dense0"],
        labels=list(data.task_names),
        user="user",
        item="item",
        truth=[f"truth_{t}" for t in data.task_names],
        field_dims=data.field_dims,
        vocab=data.vocab,
    )
    assert_same(explicit, data)
    # and through a Parquet file, with and without the schema
    optional("pyarrow", "data")
    path = tmp_path / "impressions.parquet"
    df.to_parquet(path)
    assert_same(rmtl.SessionData.from_parquet(path), data)
    part = rmtl.SessionData.from_parquet(
        path, sparse=list(data.vocab), labels=["click"], field_dims=data.field_dims
    )
    assert part.task_names == ("click",) and part.num_dense == 0
    np.testing.assert_array_equal(part.sparse, data.sparse)
    with pytest.raises(ValueError, match="labels: column 'cart' is not in"):
        rmtl.SessionData.from_parquet(path, sparse=list(data.vocab), labels=["cart"])
    with pytest.raises(FileNotFoundError, match="nothing.parquet"):
        rmtl.SessionData.from_parquet(tmp_path / "nothing.parquet")


def test_round_trip_critic_only_and_no_vocab():
    data = random_session_data(n_sessions=9, seed=2)
    data = data.take_rows(np.arange(len(data)))
    extra = rmtl.SessionData(
        data.session,
        data.time,
        data.sparse,
        data.dense,
        data.labels,
        data.field_dims,
        user=data.user,
        backbone_only=1,
        critic_only=np.arange(len(data) * 2, dtype=np.float32).reshape(-1, 2),
    )
    df = extra.to_frame()
    assert {"field0", "field2", "dense1", "task0", "critic1"} <= set(df.columns)
    assert_same(rmtl.SessionData.from_frame(df), extra)


def test_to_frame_refuses_a_name_twice():
    data = random_session_data(n_sessions=3)
    clash = rmtl.SessionData(
        data.session,
        data.time,
        data.sparse,
        data.dense,
        data.labels,
        data.field_dims,
        task_names=("field0", "pay"),
    )
    with pytest.raises(ValueError, match="field0"):
        clash.to_frame()


def test_without_pandas_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'rmtl\[data\]'"):
        random_session_data(n_sessions=3).to_frame()
    with pytest.raises(ImportError, match=r"pip install 'rmtl\[data\]'"):
        ExperimentResult([], {}, {}).to_frame()


def test_without_pyarrow_from_parquet_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"needs pyarrow.*pip install 'rmtl\[data\]'"):
        rmtl.SessionData.from_parquet(tmp_path / "x.parquet")


hypothesis = optional("hypothesis")
from hypothesis import given, settings  # noqa: E402 - after optional()
from hypothesis import strategies as st  # noqa: E402 - after optional()


@st.composite
def session_tables(draw):
    lengths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=6))
    n = sum(lengths)
    ids = draw(
        st.lists(st.integers(-50, 50), min_size=len(lengths), max_size=len(lengths), unique=True)
    )
    session = np.repeat(ids, lengths)
    time = np.concatenate(
        [np.sort(draw(st.lists(st.integers(0, 10**12), min_size=k, max_size=k))) for k in lengths]
    )
    dims = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    sparse = np.array(
        [[draw(st.integers(0, d - 1)) for d in dims] for _ in range(n)], dtype=np.int64
    )
    num_dense = draw(st.integers(0, 2))
    floats = st.floats(-1e6, 1e6, width=32)
    dense = np.array([[draw(floats) for _ in range(num_dense)] for _ in range(n)], np.float32)
    T = draw(st.integers(1, 3))
    labels = np.array([[draw(st.integers(0, 1)) for _ in range(T)] for _ in range(n)])
    user = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    return rmtl.SessionData(
        session, time, sparse, dense.reshape(n, num_dense), labels, dims, user=user
    )


@settings(max_examples=40, deadline=None)
@given(session_tables())
def test_round_trip_property(data):
    assert_same(rmtl.SessionData.from_frame(data.to_frame()), data)


def test_history_to_frame():
    data = random_session_data(n_sessions=30, seed=1)
    train, valid = data.split([0.7, 0.3])
    model = rmtl.models.create("esmm", data.field_dims, data.num_dense, data.num_tasks, seed=0)
    history = rmtl.Trainer(model, batch_size=64, progress=False).fit(train, valid, epochs=3)
    df = history.to_frame()
    assert len(df) == len(history.epochs) and list(df["epoch"]) == history.column("epoch")
    np.testing.assert_array_equal(df["valid_auc"], history.column("valid_auc"))


def test_experiment_result_to_frame():
    records = [
        {
            "model": "mmoe",
            "variant": v,
            "seed": s,
            "task": t,
            "auc": 0.7 + 0.01 * s + (v == "rmtl") * 0.005,
            "logloss": 0.3,
            "s_logloss": float("nan") if t == "pay" else 0.31,
            "flags": ["plateau"] if (v, s) == ("rmtl", 1) else [],
            "epochs": 3,
            "kept_epoch": 2,
            "steps": 40 + s,
        }
        for v in ("baseline", "rmtl")
        for s in (0, 1)
        for t in ("click", "pay")
    ]
    res = ExperimentResult(records, {"click": {"auc": 0.9, "logloss": 0.2}}, {"seeds": [0, 1]})
    df = res.to_frame()
    assert list(df.columns) == [
        "model", "variant", "name", "seed", "task", "metric", "value",
        "epochs", "kept_epoch", "steps", "flags",
    ]  # fmt: skip
    assert len(df) == 2 * 2 * 2 * 3  # arms x seeds x tasks x metrics
    row = df[
        (df.name == "RMTL-MMoE") & (df.seed == 1) & (df.task == "click") & (df.metric == "auc")
    ]
    assert len(row) == 1
    assert row["value"].item() == pytest.approx(0.715)
    assert row["flags"].item() == "plateau" and row["steps"].item() == 41
    assert df[(df.task == "pay") & (df.metric == "s_logloss")]["value"].isna().all()
    assert df.seed.dtype == np.int64
    means = df.groupby(["name", "task", "metric"])["value"].mean()
    assert means["MMoE", "click", "auc"] == pytest.approx(0.705)
    assert df.attrs["oracle"]["click"]["auc"] == 0.9 and df.attrs["config"] == {"seeds": [0, 1]}
