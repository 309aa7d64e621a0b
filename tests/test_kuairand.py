"""KuaiRand: typed readers on the real feature files, the loader on a hand-written fixture,
the writer round trip, bad input."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import optional, shared_dir

from rmtl.datasets import (
    DataFormatError,
    load_kuairand,
    read_user_features,
    read_video_features,
    synthetic,
    write_kuairand,
)
from rmtl.datasets.kuairand import FIELDS, LOG_HEADER, LOGS

optional("pyarrow", "data")

FIXTURE = Path(__file__).parent / "data" / "kuairand"
# third-party files shared beside the repository (in CI too); read in place, never copied
REAL = shared_dir() / "data" / "kuairand-pure"
T1, T2 = 1649556000000, 1650901800000  # 2022-04-10 10:00 and 2022-04-25 23:50, UTC+8


def code(d, name):
    return d.sparse[:, FIELDS.index(name)]


def test_fixture_sessions_and_labels_by_hand():
    assert b"\r\n" in (FIXTURE / LOGS[0].format(v="pure")).read_bytes()
    d = load_kuairand(FIXTURE)
    # user 1: one exact duplicate dropped; a row differing only in is_like kept; three rows
    # share one time_ms and keep file order; 30 min + 1 ms later a new session. user 2: a
    # random-log row at the same time as a standard row comes after it (file order); a row
    # exactly 30 min later stays in the session
    np.testing.assert_array_equal(d.session, [0, 0, 0, 0, 1, 2, 2, 2])
    np.testing.assert_array_equal(d.user, [1, 1, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(d.item, [100, 101, 101, 102, 100, 102, 101, 100])
    np.testing.assert_array_equal(
        d.time, [T1, T1 + 60000, T1 + 60000, T1 + 60000, T1 + 1860001, T2, T2, T2 + 1800000]
    )
    np.testing.assert_array_equal(
        d.labels, [[1, 1], [0, 0], [0, 0], [1, 0], [0, 1], [1, 1], [0, 1], [0, 0]]
    )
    np.testing.assert_allclose(d.dense[:, 0], np.log1p([10, 20, 20, 30, 10, 30, 20, 10]), rtol=1e-6)
    assert d.task_names == ("click", "long_view") and tuple(d.vocab) == FIELDS


def test_fixture_features_by_hand():
    d = load_kuairand(FIXTURE)
    assert d.vocab["tab"] == {"1": 1, "2": 2, "4": 3}  # 6, 1, 1 log rows; ties by value
    np.testing.assert_array_equal(code(d, "tab"), [1, 1, 1, 2, 1, 3, 1, 1])
    # users 1 and 3 are high_active, user 2 UNKNOWN (missing)
    assert d.vocab["user_active_degree"] == {"high_active": 1}
    np.testing.assert_array_equal(code(d, "user_active_degree"), [1] * 5 + [0] * 3)
    # -124 is missing: only user 2's value 1 is known
    np.testing.assert_array_equal(code(d, "is_live_streamer"), [0] * 5 + [1] * 3)
    # written as 2.0 for users 1 and 3, empty for user 2
    assert d.vocab["onehot_feat4"] == {"2": 1}
    np.testing.assert_array_equal(code(d, "onehot_feat17"), [1] * 5 + [0] * 3)
    assert d.vocab["fans_user_num_range"] == {"[10,100)": 2, "[1k,5k)": 3, "0": 1}
    # videos: 100 NORMAL tag "5,7", 101 AD without tag or music type, 102 UNKNOWN tag 5
    video = {100: (2, 1, 2), 101: (1, 0, 0), 102: (0, 1, 1)}
    got = np.stack([code(d, "video_type"), code(d, "tag"), code(d, "music_type")], 1)
    np.testing.assert_array_equal(got, [video[i] for i in d.item])
    assert d.vocab["tag"] == {"5": 1} and d.vocab["music_type"] == {"4": 1, "9": 2}


def test_fixture_options():
    by_day = load_kuairand(FIXTURE, sessions="day")
    np.testing.assert_array_equal(by_day.session, [0, 0, 0, 0, 0, 1, 1, 2])
    standard = load_kuairand(FIXTURE, include_random=False)
    np.testing.assert_array_equal(standard.item, [100, 101, 101, 102, 100, 102, 100])
    again = load_kuairand(FIXTURE, vocab=standard.vocab)
    np.testing.assert_array_equal(code(again, "tab"), [1, 1, 1, 2, 1, 3, 1, 1])
    with pytest.raises(ValueError, match="variant"):
        load_kuairand(FIXTURE, variant="27k")


def test_real_user_features_are_typed():
    path = REAL / "user_features_pure.csv"
    assert path.is_file(), (
        f"{path} is missing: the shared KuaiRand-Pure feature files belong beside the repo"
    )
    t = read_user_features(path)
    assert t.num_rows == 27285
    strings = {
        "user_active_degree",
        "follow_user_num_range",
        "fans_user_num_range",
        "friend_user_num_range",
        "register_days_range",
    }
    assert {f.name: str(f.type) for f in t.schema} == {
        name: "string" if name in strings else "int64" for name in t.column_names
    }
    assert t.column_names[:3] == ["user_id", "user_active_degree", "is_lowactive_period"]
    assert t.column("is_live_streamer").null_count == 21127  # the -124 sentinel
    assert set(t.column("is_live_streamer").drop_null().to_pylist()) == {1}
    assert t.column("onehot_feat4").null_count == 874  # empty cells among "1.0" floats
    assert t.column("onehot_feat12").null_count == 714
    assert t.column("user_active_degree").null_count == 6  # UNKNOWN
    assert "[100,1k)" in set(t.column("fans_user_num_range").to_pylist())  # unquoted
    row = t.slice(4, 1).to_pylist()[0]
    assert row["onehot_feat4"] is None and row["onehot_feat3"] == 27


def test_real_video_features_are_typed():
    path = REAL / "video_features_basic_pure.csv"
    assert path.is_file(), (
        f"{path} is missing: the shared KuaiRand-Pure feature files belong beside the repo"
    )
    t = read_video_features(path)
    assert t.num_rows == 7583
    assert {f.name: str(f.type) for f in t.schema} == {
        "video_id": "int64",
        "author_id": "int64",
        "video_type": "string",
        "upload_dt": "date32[day]",
        "upload_type": "string",
        "visible_status": "int64",
        "video_duration": "double",
        "server_width": "int64",
        "server_height": "int64",
        "music_id": "int64",
        "music_type": "int64",
        "tag": "list<item: int64>",
    }
    assert t.column("video_duration").null_count == 239 and t.column("music_type").null_count == 203
    assert t.column("tag").null_count == 96
    tags = t.column("tag").to_pylist()
    assert [20, 43] in tags and max(len(x or []) for x in tags) >= 2
    assert set(t.column("visible_status").to_pylist()) == {0}
    row = t.slice(0, 1).to_pylist()[0]
    assert (
        row["server_width"] == 720 and row["video_duration"] == 87433.0 and row["music_type"] == 9
    )


def test_real_features_code_a_log(tmp_path):
    """The real feature files with a small log: every field codes, unknown ids give 0."""
    for name in ("user_features_pure.csv", "video_features_basic_pure.csv"):
        (tmp_path / name).symlink_to(REAL / name)
    row = "0,{v},20220410,1000,{t},1,0,0,0,0,0,0,100,1000,0,0,0,0,1\n"
    log = (
        ",".join(LOG_HEADER)
        + "\n"
        + "".join(row.format(v=v, t=T1 + 1000 * i) for i, v in enumerate((0, 75, 999_999)))
    )
    (tmp_path / LOGS[0].format(v="pure")).write_text(log)
    (tmp_path / LOGS[1].format(v="pure")).write_text(",".join(LOG_HEADER) + "\n")
    d = load_kuairand(tmp_path, include_random=False)
    assert len(d) == 3 and len(d.vocab["user_active_degree"]) == 8
    assert len(d.vocab["upload_type"]) == 13 and "39" in d.vocab["tag"]
    assert code(d, "user_active_degree")[0] == d.vocab["user_active_degree"]["full_active"] == 1
    assert code(d, "tag")[1] == 0 and (d.sparse[2, FIELDS.index("video_type") :] == 0).all()


def test_round_trip_through_raw_files(tmp_path):
    d = synthetic("kuairand", n_users=400, seed=6)
    write_kuairand(d, tmp_path, duplicates=0.02)
    back = load_kuairand(tmp_path)
    for k in ("session", "time", "user", "item", "labels", "dense"):
        np.testing.assert_array_equal(getattr(back, k), getattr(d, k), err_msg=k)
    for f, name in enumerate(FIELDS):
        inv_a = {c: v for v, c in d.vocab[name].items()}
        inv_b = {c: v for v, c in back.vocab[name].items()}
        assert [inv_a.get(c) for c in d.sparse[:, f]] == [
            inv_b.get(c) for c in back.sparse[:, f]
        ], name
    written = sum(len((tmp_path / n.format(v="pure")).read_text().splitlines()) - 1 for n in LOGS)
    assert written > len(d)  # duplicated rows were written and dropped again
    users = (tmp_path / "user_features_pure.csv").read_text()
    assert '"(0,10]"' in users or '"(10,50]"' in users  # range columns quoted
    assert ",-124," in users and ",," in users  # sentinel ints, empty float cells
    assert (
        read_user_features(tmp_path / "user_features_pure.csv").schema
        == read_user_features(REAL / "user_features_pure.csv").schema
    )


@pytest.fixture
def raw(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "kr")
    return tmp_path / "kr"


def edit(path, old, new):
    text = path.read_bytes().decode()
    assert old in text
    path.write_bytes(text.replace(old, new, 1).encode())


def test_bad_float_written_integer(raw):
    edit(raw / "user_features_pure.csv", "949,2.0,", "949,2.5,")
    with pytest.raises(
        DataFormatError,
        match=r"user_features_pure.csv, line 2, column 'onehot_feat4': "
        r"malformed value 2.5",
    ):
        load_kuairand(raw)


def test_bad_label_and_number_in_log(raw):
    log = raw / "log_standard_4_22_to_5_08_pure.csv"
    edit(log, "0,0,0,0,0,1,30000", "0,0,0,0,0,2,30000")
    with pytest.raises(
        DataFormatError, match=r"4_22_to_5_08_pure.csv, line 2, column 'long_view': expected 0 or 1"
    ):
        load_kuairand(raw)
    edit(log, "0,0,0,0,0,2,30000", "0,0,0,0,0,1,30000")
    edit(log, "1650903600000", "165090360000O")
    with pytest.raises(
        DataFormatError, match=r"line 3, column 'time_ms': malformed value '165090360000O'"
    ):
        load_kuairand(raw)


def test_bad_tag_list(raw):
    edit(raw / "video_features_basic_pure.csv", '"5,7"', '"5,x"')
    with pytest.raises(
        DataFormatError, match=r"video_features_basic_pure.csv, line 2, column 'tag'"
    ):
        load_kuairand(raw)


def test_missing_file_and_column(raw):
    edit(raw / "video_features_basic_pure.csv", "music_type,tag", "music_type,tags")
    with pytest.raises(DataFormatError, match=r"line 1, column 'tag': missing column"):
        load_kuairand(raw)
    (raw / "user_features_pure.csv").unlink()
    with pytest.raises(FileNotFoundError, match="user_features_pure.csv"):
        load_kuairand(raw)
    with pytest.raises(FileNotFoundError, match="log_standard_4_08_to_4_21_1k.csv"):
        load_kuairand(FIXTURE, variant="1k")


def test_missing_duration_is_not_a_feature_value(raw):
    """duration_ms = -124 is KuaiRand's missing-value marker: the dense feature is 0 there
    (as for a code-0 field), never log1p(-0.124); other negative durations are an error."""
    log = raw / "log_standard_4_08_to_4_21_pure.csv"
    edit(log, "1649556000000,1,0,0,0,0,0,1,10000,10000,", "1649556000000,1,0,0,0,0,0,1,10000,-124,")
    d = load_kuairand(raw)
    assert np.isfinite(d.dense).all() and d.dense.min() >= 0
    assert (d.dense[:, 0] == 0).sum() == 1
    edit(log, "10000,-124,", "10000,-5,")
    with pytest.raises(
        DataFormatError,
        match=r"4_08_to_4_21_pure.csv, line 2, column 'duration_ms': "
        r"expected a duration >= 0 or -124",
    ):
        load_kuairand(raw)


@pytest.mark.parametrize(
    "file,old,new,where",
    [
        (
            "user_features_pure.csv",
            b"high_active",
            b"high\xffactive",
            r"line \d+, column 'user_active_degree'",
        ),
        (
            "log_standard_4_22_to_5_08_pure.csv",
            b"1650903600000",
            b"16509036\xfe0000",
            r"line 3, column 'time_ms'",
        ),
        ("video_features_basic_pure.csv", b"video_id", b"vid\xc3eo_id", r"line 1"),
    ],
)
def test_non_utf8_bytes_name_file_line_and_column(raw, file, old, new, where):
    path = raw / file
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    with pytest.raises(DataFormatError, match=f"{file}, {where}.*not UTF-8"):
        load_kuairand(raw)


def test_shared_directory_can_be_moved(monkeypatch, tmp_path):
    from conftest import shared_dir

    monkeypatch.setenv("RMTL_SHARED", str(tmp_path))
    assert shared_dir() == tmp_path
    monkeypatch.delenv("RMTL_SHARED")
    assert (
        shared_dir().name == "shared" and shared_dir().parent == Path(__file__).resolve().parents[2]
    )
