"""KuaiRand: typed readers on feature files written in the real files' format, the loader on a
hand-written fixture, the writer round trip, bad input."""

import csv
import datetime
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import optional

from rmtl.datasets import (
    DataFormatError,
    load_kuairand,
    read_user_features,
    read_video_features,
    synthetic,
    write_kuairand,
)
from rmtl.datasets.kuairand import FIELDS, LOG_HEADER, LOGS, USER_HEADER, VIDEO_HEADER

optional("pyarrow", "data")

FIXTURE = Path(__file__).parent / "data" / "kuairand"
T1, T2 = 1649556000000, 1650901800000  # 2022-04-10 10:00 and 2022-04-25 23:50, UTC+8

# The real KuaiRand-Pure feature files are third-party data and stay outside the repository
# (nothing in the suite reads outside it): the tests write files in their format instead,
# with the real headers, the real values of the categorical columns (most frequent first) and
# every quirk of the real files: UNKNOWN and -124 for missing values, integer columns written
# as floats (1.0) or left empty, range labels and tag lists quoted when they hold a comma.
ACTIVE = (
    "full_active",
    "high_active",
    "middle_active",
    "2_14_day_new",
    "low_active",
    "single_low_active",
    "30day_retention",
    "day_new",
    "UNKNOWN",
)
RANGE_LABELS = {
    "follow_user_num_range": (
        "500+",
        "(10,50]",
        "(250,500]",
        "(50,100]",
        "(150,250]",
        "(100,150]",
        "(0,10]",
        "0",
    ),
    "fans_user_num_range": (
        "[10,100)",
        "[100,1k)",
        "[1,10)",
        "[1k,5k)",
        "0",
        "[5k,1w)",
        "[1w,10w)",
        "[10w,100w)",
        "[100w,1000w)",
    ),
    "friend_user_num_range": ("[5,30)", "[1,5)", "0", "250+", "[30,60)", "[60,120)", "[120,250)"),
    "register_days_range": (
        "730+",
        "366-730",
        "181-365",
        "91-180",
        "61-90",
        "31-60",
        "15-30",
        "8-14",
    ),
}
UPLOAD = (
    "LongImport",
    "Web",
    "ShortImport",
    "Kmovie",
    "LongPicture",
    "UNKNOWN",
    "PictureSet",
    "LongCamera",
    "ShortCamera",
    "ShareFromOtherApp",
    "FollowShoot",
    "AiCutVideo",
    "PhotoCopy",
    "LipsSync",
)
USER_STRINGS = ("user_active_degree",) + tuple(RANGE_LABELS)


def pick(rng, values, i):
    """Row i's value: rows 1 to len(values) take each value once (so every value occurs),
    later rows draw with weights halving down the list (the first value is the most frequent)."""
    if 1 <= i <= len(values):
        return values[i - 1]
    return rng.choices(values, [0.5**k for k in range(len(values))])[0]


def user_row(rng, i):
    """Row i of user_features_pure.csv: user 0 is full_active; user 1 a live streamer; user 2
    has -124 and empty cells."""
    row = {
        "user_id": str(i),
        "user_active_degree": "full_active" if i == 0 else pick(rng, ACTIVE, i),
        "is_lowactive_period": "0",
        "is_live_streamer": "1" if i == 1 or (i > 2 and rng.random() < 0.25) else "-124",
        "is_video_author": str(rng.randrange(2)),
    }
    for name, labels in RANGE_LABELS.items():
        row[name[: -len("_range")]] = str(rng.randrange(3000))
        row[name] = pick(rng, labels, i)
    empty = i == 2 or rng.random() < 0.05  # onehot_feat12 to 17 are empty together
    for k in range(18):
        if k == 4:
            value = "" if i == 2 or rng.random() < 0.05 else f"{rng.randrange(15)}.0"
        elif k >= 12:
            value = "" if empty else f"{rng.randrange(2)}.0"
        else:
            value = str(rng.randrange(1500 if k == 3 else 50))
        row[f"onehot_feat{k}"] = value
    return [row[name] for name in USER_HEADER]


def video_row(rng, i):
    """Row i of video_features_basic_pure.csv: video 0 pinned, video 1 with two tags, video 2
    with empty duration, music type and tag."""
    tag = str(rng.randrange(70))
    if rng.random() < 0.1:
        tag += f",{rng.randrange(70)}"
    width = rng.choice(("720.0", "1280.0"))
    row = [
        str(i),
        str(rng.randrange(10**6, 10**7)),
        pick(rng, ("NORMAL", "AD", "UNKNOWN"), i),
        rng.choice(("2022-04-09", "2022-04-10", "2022-04-11")),
        pick(rng, UPLOAD, i),
        "0.0",
        "" if i == 2 or rng.random() < 0.03 else f"{rng.randrange(3000, 300000)}.0",
        width,
        "1280.0" if width == "720.0" else "720.0",
        str(rng.randrange(4 * 10**9, 10**10)),
        "" if i == 2 or rng.random() < 0.03 else rng.choice(("9.0", "4.0", "8.0", "7.0", "11.0")),
        "" if i == 2 or rng.random() < 0.02 else tag,
    ]
    if i == 0:
        row[6:9], row[10:] = ["87433.0", "720.0", "1280.0"], ["9.0", "39"]
    if i == 1:
        row[11] = "20,43"
    return row


def write_feature_files(directory, n_users=400, n_videos=400, seed=0):
    """user_features_pure.csv and video_features_basic_pure.csv in the real files' format."""
    rng = random.Random(seed)
    for name, header, row, n in (
        ("user_features_pure.csv", USER_HEADER, user_row, n_users),
        ("video_features_basic_pure.csv", VIDEO_HEADER, video_row, n_videos),
    ):
        with open(directory / name, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")  # quotes only cells with a comma
            w.writerow(header)
            w.writerows(row(rng, i) for i in range(n))


def user_cell(name, value):
    """What read_user_features should make of a cell, by the format's rules."""
    if name in USER_STRINGS:
        return None if value == "UNKNOWN" else value
    return None if value in ("", "-124") else int(float(value))


def video_cell(name, value):
    """What read_video_features should make of a cell, by the format's rules."""
    if name in ("video_type", "upload_type"):
        return None if value == "UNKNOWN" else value
    if name == "upload_dt":
        return datetime.date.fromisoformat(value)
    if value == "":
        return None
    if name == "video_duration":
        return float(value)
    if name == "tag":
        return [int(x) for x in value.split(",")]
    return int(float(value))


def expected_rows(path, cell):
    """The rows of a feature file parsed by the csv module, each cell as ``cell`` says."""
    with open(path, newline="") as f:
        return [{k: cell(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    directory = tmp_path_factory.mktemp("kuairand-pure")
    write_feature_files(directory)
    return directory


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


def test_user_features_are_typed(features):
    path = features / "user_features_pure.csv"
    text = path.read_text()
    t = read_user_features(path)
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
    assert t.to_pylist() == expected_rows(path, user_cell)
    for name in ("user_active_degree", "is_live_streamer", "onehot_feat4", "onehot_feat12"):
        assert t.column(name).null_count > 0, name  # UNKNOWN, -124, empty cells
    assert set(t.column("is_live_streamer").drop_null().to_pylist()) == {1}
    assert '"[100,1k)"' in text and "[100,1k)" in set(t.column("fans_user_num_range").to_pylist())
    assert ",1.0," in text and ",," in text  # floats among ints, empty cells


def test_video_features_are_typed(features):
    path = features / "video_features_basic_pure.csv"
    t = read_video_features(path)
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
    assert t.to_pylist() == expected_rows(path, video_cell)
    for name in ("video_type", "upload_type", "video_duration", "music_type", "tag"):
        assert t.column(name).null_count > 0, name
    tags = t.column("tag").to_pylist()
    assert [20, 43] in tags and max(len(x or []) for x in tags) >= 2
    assert set(t.column("visible_status").to_pylist()) == {0}
    row = t.slice(0, 1).to_pylist()[0]
    assert (
        row["server_width"] == 720 and row["video_duration"] == 87433.0 and row["music_type"] == 9
    )


def test_features_code_a_log(features, tmp_path):
    """The feature files with a small log: every field codes, unknown ids give 0."""
    for name in ("user_features_pure.csv", "video_features_basic_pure.csv"):
        shutil.copy(features / name, tmp_path / name)
    untagged = read_video_features(tmp_path / "video_features_basic_pure.csv")
    untagged = untagged.filter(untagged.column("tag").is_null()).column("video_id")[0].as_py()
    row = "0,{v},20220410,1000,{t},1,0,0,0,0,0,0,100,1000,0,0,0,0,1\n"
    log = (
        ",".join(LOG_HEADER)
        + "\n"
        + "".join(row.format(v=v, t=T1 + 1000 * i) for i, v in enumerate((0, untagged, 999_999)))
    )
    (tmp_path / LOGS[0].format(v="pure")).write_text(log)
    (tmp_path / LOGS[1].format(v="pure")).write_text(",".join(LOG_HEADER) + "\n")
    d = load_kuairand(tmp_path, include_random=False)
    assert len(d) == 3 and len(d.vocab["user_active_degree"]) == len(ACTIVE) - 1  # no UNKNOWN
    assert len(d.vocab["upload_type"]) == len(UPLOAD) - 1 and "39" in d.vocab["tag"]
    assert code(d, "user_active_degree")[0] == d.vocab["user_active_degree"]["full_active"] == 1
    assert code(d, "tag")[1] == 0 and (d.sparse[2, FIELDS.index("video_type") :] == 0).all()


def test_round_trip_through_raw_files(features, tmp_path):
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
        == read_user_features(features / "user_features_pure.csv").schema
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
