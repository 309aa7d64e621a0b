"""SessionData: validation, sessions, split, batches, files."""

import numpy as np
import pytest
from conftest import random_session_data

import rmtl


def tiny(**over):
    kw = dict(
        session=[7, 7, 3, 3, 3, 9],
        time=[5, 6, 1, 1, 4, 2],
        sparse=[[0, 1], [1, 2], [2, 0], [1, 1], [0, 2], [2, 2]],
        dense=np.zeros((6, 1)),
        labels=[[1, 0], [0, 0], [1, 1], [0, 0], [1, 0], [0, 0]],
        field_dims=(3, 3),
    )
    kw.update(over)
    return rmtl.SessionData(
        kw.pop("session"),
        kw.pop("time"),
        kw.pop("sparse"),
        kw.pop("dense"),
        kw.pop("labels"),
        kw.pop("field_dims"),
        **kw,
    )


def test_offsets_and_shapes():
    d = tiny()
    np.testing.assert_array_equal(d.offsets, [0, 2, 5, 6])
    np.testing.assert_array_equal(d.position, [0, 1, 0, 1, 2, 0])
    assert len(d) == 6 and d.num_sessions == 3 and d.num_tasks == 2 and d.num_dense == 1
    assert (
        d.sparse.dtype == np.int32 and d.dense.dtype == np.float32 and d.labels.dtype == np.float32
    )
    assert d.task_names == ("task0", "task1")
    assert "sessions 3" in d.describe()


def test_split_orders_sessions_by_start_time():
    d = tiny()
    a, b, c = d.split((0.34, 0.33, 0.33))
    # session starts: 7 -> 5, 3 -> 1, 9 -> 2; order 3, 9, 7
    assert list(a.session) == [3, 3, 3] and list(b.session) == [9] and list(c.session) == [7, 7]
    big = random_session_data(n_sessions=100)
    parts = big.split()
    assert [p.num_sessions for p in parts] == [60, 20, 20]
    assert sum(len(p) for p in parts) == len(big)
    assert parts[0].time[parts[0].offsets[:-1]].max() <= parts[1].time[parts[1].offsets[:-1]].min()


def test_batches_are_seeded_permutations():
    d = random_session_data()
    a = np.concatenate(list(d.batches(16, seed=4, epoch=1)))
    b = np.concatenate(list(d.batches(16, seed=4, epoch=1)))
    c = np.concatenate(list(d.batches(16, seed=4, epoch=2)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.sort(a), np.arange(len(d)))
    np.testing.assert_array_equal(
        np.concatenate(list(d.batches(16, shuffle=False))), np.arange(len(d))
    )
    assert max(len(x) for x in d.batches(16)) == 16


def test_save_load_roundtrip(tmp_path):
    d = random_session_data()
    d.save(tmp_path / "d.npz")
    back = rmtl.SessionData.load(tmp_path / "d.npz")
    for k in ("session", "time", "sparse", "dense", "labels", "user", "offsets"):
        np.testing.assert_array_equal(getattr(back, k), getattr(d, k))
    assert back.field_dims == d.field_dims and back.task_names == d.task_names and back.item is None


@pytest.mark.parametrize(
    "over,err,match",
    [
        (dict(session=[7, 3, 7, 3, 3, 9]), ValueError, "not contiguous"),
        (dict(time=[6, 5, 1, 1, 4, 2]), ValueError, "time: decreases inside session 7"),
        (
            dict(sparse=[[0, 1], [1, 3], [2, 0], [1, 1], [0, 2], [2, 2]]),
            ValueError,
            r"code 3 at row 1, field 1",
        ),
        (dict(sparse=[[0, 1], [1, -1], [2, 0], [1, 1], [0, 2], [2, 2]]), ValueError, "sparse"),
        (dict(sparse=np.zeros((6, 2), np.float32)), TypeError, "integer"),
        (dict(labels=[[1, 0], [0, 2], [1, 1], [0, 0], [1, 0], [0, 0]]), ValueError, "0/1"),
        (dict(labels=np.full((6, 2), np.nan)), ValueError, "NaN"),
        (dict(dense=np.full((6, 1), np.inf)), ValueError, "dense: contains NaN or infinity"),
        (dict(dense=np.zeros((5, 1))), ValueError, "dense: expected shape"),
        (dict(session=[1, 2, 3]), ValueError, "session: expected shape"),
        (dict(field_dims=(3, 0)), ValueError, "field_dims"),
        (
            dict(
                session=[],
                time=[],
                sparse=np.zeros((0, 2), int),
                dense=None,
                labels=np.zeros((0, 2)),
            ),
            ValueError,
            "empty",
        ),
    ],
)
def test_bad_input_is_rejected(over, err, match):
    with pytest.raises(err, match=match):
        tiny(**over)


def test_bad_split_and_load(tmp_path):
    d = tiny()
    with pytest.raises(ValueError, match="fractions"):
        d.split((0.5, 0.6))
    with pytest.raises(ValueError, match="cannot fill"):
        d.split((0.2, 0.2, 0.2, 0.2, 0.2))
    with pytest.raises(FileNotFoundError):
        rmtl.SessionData.load(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    "fractions",
    [0.5, (0.5, float("nan")), (0.5, float("inf")), (0.5, "a"), None, [[0.5], [0.3, 0.2]]],
)
def test_split_refuses_a_scalar_and_non_finite_fractions(fractions):
    with pytest.raises(ValueError, match=r"fractions: expected .* positive finite numbers .*, got"):
        tiny().split(fractions)


@pytest.mark.parametrize(
    "sessions,err,match",
    [
        ([0.7, 1.2], TypeError, r"sessions: expected integer session positions, got dtype float64"),
        ([True, False], TypeError, "sessions: expected integer session positions, got dtype bool"),
        ([], ValueError, r"sessions: expected a non-empty 1-D sequence .*, got list of shape"),
        ([[0], [1, 2]], ValueError, "sessions: expected a non-empty 1-D sequence .* ragged"),
        ([0, 3], ValueError, r"sessions: expected positions in \[0, 3\), got 3"),
        ([-1, 0], ValueError, r"sessions: expected positions in \[0, 3\), got -1"),
    ],
)
def test_subset_refuses_non_integer_and_out_of_range_positions(sessions, err, match):
    with pytest.raises(err, match=match):
        tiny().subset(sessions)
    assert list(tiny().subset(np.array([2, 0], np.uint8)).session) == [9, 7, 7]
