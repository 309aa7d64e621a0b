"""RetailRocket: the loader on a hand-written fixture, the writer round trip, bad input."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import optional

import rmtl
from rmtl.datasets import DataFormatError, load_retailrocket, synthetic, write_retailrocket

optional("pyarrow", "data")

FIXTURE = Path(__file__).parent / "data" / "retailrocket"


def decoded(d):
    """Raw feature values per row and field (None = missing), independent of the codes."""
    out = []
    for f, (_name, voc) in enumerate(d.vocab.items()):
        inv = {c: v for v, c in voc.items()}
        out.append([inv.get(c) for c in d.sparse[:, f]])
    return out


@pytest.fixture
def raw(tmp_path):
    """A writable copy of the fixture."""
    shutil.copytree(FIXTURE, tmp_path / "rr")
    return tmp_path / "rr"


def test_fixture_sessions_and_labels_by_hand():
    assert b"\r\n" in (FIXTURE / "events.csv").read_bytes()  # CRLF is part of the fixture
    d = load_retailrocket(FIXTURE)
    # visitor 1: view 10, view 11, addtocart 10, transaction 10, then 31 minutes later
    # view 10, view 12 (a new session); visitor 2: addtocart 11 and view 12 at the same
    # time (file order: 11 first), view 13 exactly 30 minutes later (same session);
    # visitor 3: view 99 (an item without properties)
    np.testing.assert_array_equal(d.session, [0, 0, 1, 1, 2, 2, 2, 3])
    np.testing.assert_array_equal(d.user, [1, 1, 1, 1, 2, 2, 2, 3])
    np.testing.assert_array_equal(d.item, [10, 11, 10, 12, 11, 12, 13, 99])
    np.testing.assert_array_equal(
        d.time, [1000000, 1060000, 3040000, 3100000, 2000000, 2000000, 3800000, 500]
    )
    np.testing.assert_array_equal(d.labels[:, 0], [1, 0, 0, 0, 1, 0, 0, 0])  # click
    np.testing.assert_array_equal(d.labels[:, 1], [1, 0, 0, 0, 0, 0, 0, 0])  # pay
    assert d.task_names == ("click", "pay") and (d.dense == 0).all() and d.dense.shape == (8, 1)


def test_fixture_features_by_hand():
    d = load_retailrocket(FIXTURE)
    # latest values: categoryid 10->6 (200 beats 100), 11->6, 12->7, 13->7 (equal times:
    # part2 is read after part1 and wins); 2 items each -> tie broken by value
    assert d.vocab["categoryid"] == {"6": 1, "7": 2}
    # available: 10->0 (300 beats 100), 11->0; 12, 13 have none
    assert d.vocab["available"] == {"0": 1}
    # 364: "55" on 2 of 4 items = 50% > 20%: the tail starts at the first value
    assert d.vocab["364"] == {"55": 1, "56": 1}
    assert d.vocab["776"] == {"n1.000 123": 1, "n2.000": 1}
    assert d.vocab["785"] == {} and d.field_dims == (1, 1, 1, 2, 3, 2, 2)
    expected = {
        10: [0, 0, 0, 1, 1, 0, 0],
        11: [0, 0, 0, 1, 1, 1, 1],
        12: [0, 0, 0, 0, 2, 1, 1],
        13: [0, 0, 0, 0, 2, 1, 1],
        99: [0] * 7,
    }
    np.testing.assert_array_equal(d.sparse, [expected[i] for i in d.item])
    exact = load_retailrocket(FIXTURE, tail_fields=())
    assert exact.vocab["364"] == {"55": 1, "56": 2} and exact.vocab["776"] == {
        "n1.000 123": 1,
        "n2.000": 2,
    }
    np.testing.assert_array_equal(exact.sparse[d.item == 13, 5:], [[2, 2]])


def test_session_gap_option_merges_sessions_and_items():
    d = load_retailrocket(FIXTURE, session_gap_minutes=60)
    # visitor 1's two sessions merge; item 10 then appears once, at its first event
    np.testing.assert_array_equal(d.session, [0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(d.item, [10, 11, 12, 11, 12, 13, 99])
    np.testing.assert_array_equal(d.labels[:3], [[1, 1], [0, 0], [0, 0]])


def test_vocab_codes_other_files_like_training():
    train = load_retailrocket(FIXTURE)
    again = load_retailrocket(FIXTURE, vocab=train.vocab)
    np.testing.assert_array_equal(again.sparse, train.sparse)
    vocab = {k: dict(v) for k, v in train.vocab.items()}
    vocab["categoryid"] = {"7": 1, "9": 2, "11": 3}  # "6" unseen -> 0; dims from the vocab
    other = load_retailrocket(FIXTURE, vocab=vocab)
    assert other.field_dims[4] == 4
    np.testing.assert_array_equal(
        other.sparse[:, 4], [{10: 0, 11: 0, 12: 1, 13: 1, 99: 0}[i] for i in other.item]
    )
    with pytest.raises(ValueError, match="vocab"):
        load_retailrocket(FIXTURE, vocab={"categoryid": {}})


def test_round_trip_through_raw_files(tmp_path):
    d = synthetic("retailrocket", n_users=1500, seed=5)
    write_retailrocket(d, tmp_path)
    back = load_retailrocket(tmp_path, tail_fields=())
    for k in ("session", "time", "user", "item", "labels", "dense"):
        np.testing.assert_array_equal(getattr(back, k), getattr(d, k), err_msg=k)
    assert decoded(back) == decoded(d)
    assert tuple(back.vocab) == tuple(d.vocab)


def test_writer_emits_the_raw_format(tmp_path):
    d = synthetic("retailrocket", n_users=300, seed=2)
    write_retailrocket(d, tmp_path, snapshots=3, category_parent={"4": "1000"})
    events = (tmp_path / "events.csv").read_text().splitlines()
    assert events[0] == "timestamp,visitorid,event,itemid,transactionid"
    rows = [e.split(",") for e in events[1:]]
    assert len(rows) == len(d) + int(d.labels[:, 0].sum() + d.labels[:, 1].sum())
    assert all((r[2] == "transaction") == (r[4] != "") for r in rows)
    times = [int(r[0]) for r in rows]
    assert times != sorted(times)  # not time-sorted, like the real file
    props = []
    for part in ("item_properties_part1.csv", "item_properties_part2.csv"):
        lines = (tmp_path / part).read_text().splitlines()
        assert lines[0] == "timestamp,itemid,property,value"
        props += [line.split(",") for line in lines[1:]]
    numbers = [v for _, _, p, v in props if p == "814"]
    assert numbers and all(re.fullmatch(r"n\d+\.000", v) for v in numbers)
    per_pair = {}
    for ts, item, p, _v in props:
        per_pair.setdefault((item, p), set()).add(ts)
    assert {len(s) for s in per_pair.values()} == {3}  # weekly snapshots: a change log
    tree = (tmp_path / "category_tree.csv").read_text().splitlines()
    assert tree[0] == "categoryid,parentid" and "4,1000" in tree and "7," in tree


def test_writer_needs_the_retailrocket_vocab(tmp_path):
    d = synthetic("kuairand", n_users=20)
    with pytest.raises(ValueError, match="vocab"):
        write_retailrocket(d, tmp_path)


def edit(path, old, new):
    text = path.read_bytes().decode()
    assert old in text
    path.write_bytes(text.replace(old, new, 1).encode())


def test_missing_file(raw):
    (raw / "item_properties_part2.csv").unlink()
    with pytest.raises(FileNotFoundError, match="item_properties_part2.csv"):
        load_retailrocket(raw)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_retailrocket(raw / "nope")


def test_missing_column(raw):
    edit(raw / "events.csv", "event,itemid,", "event,item,")
    with pytest.raises(
        DataFormatError, match=r"events.csv, line 1, column 'itemid': missing column"
    ) as e:
        load_retailrocket(raw)
    assert (e.value.line, e.value.column) == (1, "itemid")


def test_unknown_event_type(raw):
    edit(raw / "events.csv", "1,addtocart,10", "1,basket,10")
    with pytest.raises(
        DataFormatError, match=r"events.csv, line 8, column 'event': unknown event type 'basket'"
    ):
        load_retailrocket(raw)


def test_malformed_number(raw):
    edit(raw / "events.csv", "500,3,view", "5x0,3,view")
    with pytest.raises(
        DataFormatError, match=r"events.csv, line 5, column 'timestamp': malformed value '5x0'"
    ):
        load_retailrocket(raw)
    shutil.copy(FIXTURE / "events.csv", raw / "events.csv")
    edit(raw / "item_properties_part2.csv", "12,categoryid,7", "12,categoryid,n7.000")
    with pytest.raises(
        DataFormatError, match=r"part2.csv, line 4, column 'value': malformed categoryid"
    ):
        load_retailrocket(raw)


def test_row_with_missing_cells(raw):
    edit(raw / "item_properties_part1.csv", "100,11,categoryid,6", "100,11")
    with pytest.raises(DataFormatError, match=r"part1.csv, line 5: malformed row"):
        load_retailrocket(raw)


def test_empty_required_cell(raw):
    edit(raw / "events.csv", "500,3,view,99", "500,,view,99")
    with pytest.raises(DataFormatError, match=r"line 5, column 'visitorid': empty value"):
        load_retailrocket(raw)


def test_prepared_data_keeps_the_vocab(tmp_path):
    d = load_retailrocket(FIXTURE)
    d.save(tmp_path / "rr.npz")
    assert rmtl.SessionData.load(tmp_path / "rr.npz").vocab == d.vocab


def test_non_utf8_bytes_name_file_line_and_column(raw):
    path = raw / "events.csv"
    data = path.read_bytes()
    path.write_bytes(data.replace(b",addtocart,", b",add\xe9tocart,", 1))
    with pytest.raises(
        DataFormatError, match=r"events.csv, line 3, column 'event': byte 0xe9 is not UTF-8"
    ):
        load_retailrocket(raw)
