"""KuaiRand (KuaiRand-1K and KuaiRand-Pure): typed readers for the raw files, the
loader (:func:`load_kuairand`, its recipe in its docstring), and a writer that emits a
SessionData in the same raw format."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np

from .. import _core
from ..data import SessionData
from ._csv import DataFormatError, int_column, pyarrow, quoted, read_table, require_file, write_csv
from ._vocab import apply_vocab, build_vocab, field_dim, split_sessions
from .synth import log_duration

__all__ = [
    "load_kuairand",
    "write_kuairand",
    "read_user_features",
    "read_video_features",
    "FIELDS",
    "LOG_HEADER",
]

LOG_HEADER = (
    "user_id",
    "video_id",
    "date",
    "hourmin",
    "time_ms",
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "long_view",
    "play_time_ms",
    "duration_ms",
    "profile_stay_time",
    "comment_stay_time",
    "is_profile_enter",
    "is_rand",
    "tab",
)
LOGS = (
    "log_standard_4_08_to_4_21_{v}.csv",
    "log_standard_4_22_to_5_08_{v}.csv",
    "log_random_4_22_to_5_08_{v}.csv",
)
ONEHOT = tuple(f"onehot_feat{k}" for k in range(18))
ONEHOT_FLOAT = ("onehot_feat4",) + tuple(f"onehot_feat{k}" for k in range(12, 18))
RANGES = (
    "follow_user_num_range",
    "fans_user_num_range",
    "friend_user_num_range",
    "register_days_range",
)
USER_HEADER = (
    "user_id",
    "user_active_degree",
    "is_lowactive_period",
    "is_live_streamer",
    "is_video_author",
    "follow_user_num",
    "follow_user_num_range",
    "fans_user_num",
    "fans_user_num_range",
    "friend_user_num",
    "friend_user_num_range",
    "register_days",
    "register_days_range",
) + ONEHOT
VIDEO_HEADER = (
    "video_id",
    "author_id",
    "video_type",
    "upload_dt",
    "upload_type",
    "visible_status",
    "video_duration",
    "server_width",
    "server_height",
    "music_id",
    "music_type",
    "tag",
)
USER_FIELDS = (
    ("user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author")
    + RANGES
    + ONEHOT
)
VIDEO_FIELDS = ("video_type", "upload_type", "visible_status", "music_type", "tag")
FIELDS = ("tab",) + USER_FIELDS + VIDEO_FIELDS
TASKS = ("click", "long_view")
MISSING = -124  # the files' missing-value sentinel for integers
UNKNOWN = "UNKNOWN"  # and for strings
DAY_MS, UTC8_MS = 86_400_000, 8 * 3_600_000
SPLIT_DATE = 20220422  # first day of the second standard log


def _user_types(pa):
    types = {name: pa.string() for name in ("user_active_degree",) + RANGES}
    types.update({name: pa.float64() for name in ONEHOT})
    return {name: types.get(name, pa.int64()) for name in USER_HEADER}


def _strings_unknown_to_null(pa, col):
    return pa.compute.if_else(pa.compute.equal(col, UNKNOWN), pa.scalar(None, pa.string()), col)


def read_user_features(path: str | os.PathLike[str]):
    """``user_features_<v>.csv`` as a typed pyarrow Table: ids and counts int64; the string
    columns (user_active_degree and the quoted range columns) string with ``UNKNOWN`` as
    null; flags and ``onehot_feat*`` nullable int64, including those written as floats
    (``1.0``) or left empty, with the ``-124`` sentinel as null.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file (FileNotFoundError if missing; DataFormatError if malformed).

    Returns
    -------
    pyarrow.Table
        The columns of ``USER_HEADER``, in that order.
    """
    pa = pyarrow()
    path = require_file(path, "KuaiRand user features")
    t = read_table(path, _user_types(pa), required=("user_id",))
    cols = {}
    for name in USER_HEADER:
        col = t.column(name).combine_chunks()
        if col.type == pa.string():
            cols[name] = _strings_unknown_to_null(pa, col)
        elif name == "user_id":
            cols[name] = col
        else:
            cols[name] = int_column(t, name, path, sentinels=(MISSING,))
    return pa.table(cols)


def read_video_features(path: str | os.PathLike[str]):
    """``video_features_basic_<v>.csv`` as a typed pyarrow Table: ids int64; video_type and
    upload_type string (``UNKNOWN`` as null); upload_dt date32; visible_status,
    server_width, server_height and music_type nullable int64 (written as floats, may be
    empty); video_duration float64 (ms, may be empty); tag list<int64> (a quoted
    comma-separated list; empty cells are null).

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file (FileNotFoundError if missing; DataFormatError if malformed).

    Returns
    -------
    pyarrow.Table
        The columns of ``VIDEO_HEADER``, in that order.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist, naming it.
    DataFormatError
        Naming file, line and column of bad input: a missing column, an empty ``video_id``,
        a row with the wrong number of cells, a value that does not parse as its type (or
        a fraction in an integer column), or a malformed ``tag`` list.
    ImportError
        Without pyarrow (``pip install 'rmtl[data]'``).
    """
    pa = pyarrow()
    pc = pa.compute
    path = require_file(path, "KuaiRand video features")
    f64, i64, s = pa.float64(), pa.int64(), pa.string()
    types = {
        "video_id": i64,
        "author_id": i64,
        "video_type": s,
        "upload_dt": pa.date32(),
        "upload_type": s,
        "visible_status": f64,
        "video_duration": f64,
        "server_width": f64,
        "server_height": f64,
        "music_id": i64,
        "music_type": f64,
        "tag": s,
    }
    t = read_table(path, types, required=("video_id",))
    cols = {}
    for name in VIDEO_HEADER:
        col = t.column(name).combine_chunks()
        if name in ("video_type", "upload_type"):
            col = _strings_unknown_to_null(pa, col)
        elif name in ("visible_status", "server_width", "server_height", "music_type"):
            col = int_column(t, name, path)
        elif name == "tag":
            parts = pc.split_pattern(col, ",")
            bad = _bad_list(pa, parts)
            if bad >= 0:
                raise DataFormatError(
                    path,
                    bad + 2,
                    "tag",
                    f"malformed tag list {col[bad].as_py()!r}; expected comma-separated integers",
                )
            col = pc.cast(parts, pa.list_(i64))
        cols[name] = col
    return pa.table(cols)


def _bad_list(pa, parts) -> int:
    """Row of the first list element that is not an integer, or -1."""
    flat = parts.flatten()
    ok = pa.compute.match_substring_regex(flat, r"^-?\d+$").to_numpy(zero_copy_only=False)
    if ok.all():
        return -1
    offsets = parts.offsets.to_numpy()
    return int(np.searchsorted(offsets, np.flatnonzero(~ok)[0], side="right") - 1)


def _read_logs(directory: str, variant: str, include_random: bool):
    """The log columns the recipe needs (NumPy, file order) and a 64-bit hash of all 19."""
    pa = pyarrow()
    names = LOGS if include_random else LOGS[:2]
    need = ("user_id", "date", "time_ms", "video_id", "is_click", "long_view", "duration_ms", "tab")
    parts = {k: [] for k in need + ("hash",)}
    for pattern in names:
        path = require_file(
            os.path.join(directory, pattern.format(v=variant)), f"KuaiRand-{variant} log"
        )
        t = read_table(path, {c: pa.int64() for c in LOG_HEADER}, required=LOG_HEADER)
        for label in ("is_click", "long_view"):
            y = t.column(label).to_numpy()
            bad = np.flatnonzero((y != 0) & (y != 1))
            if bad.size:
                raise DataFormatError(
                    path, int(bad[0]) + 2, label, f"expected 0 or 1, got {y[bad[0]]}"
                )
        duration = t.column("duration_ms").to_numpy()
        bad = np.flatnonzero((duration < 0) & (duration != MISSING))
        if bad.size:
            raise DataFormatError(
                path,
                int(bad[0]) + 2,
                "duration_ms",
                f"expected a duration >= 0 or {MISSING} (missing), got {duration[bad[0]]}",
            )
        h = np.zeros(t.num_rows, np.uint64)
        with np.errstate(over="ignore"):
            for c in LOG_HEADER:  # splitmix-style mixing of every column
                h = (h ^ t.column(c).to_numpy().astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
                h ^= h >> np.uint64(29)
        for k in need:
            parts[k].append(t.column(k).to_numpy())
        parts["hash"].append(h)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _key_strings(pa, col):
    """Vocabulary keys of a typed column: str(value), the first element for tag lists."""
    if pa.types.is_list(col.type):
        col = pa.compute.list_element(
            pa.compute.if_else(
                pa.compute.greater(pa.compute.list_value_length(col), 0),
                col,
                pa.scalar(None, col.type),
            ),
            0,
        )
    return pa.compute.cast(col, pa.string())


def _entity_codes(
    table,
    id_name: str,
    names: Sequence[str],
    ids: np.ndarray,
    path: str,
    vocab: Optional[Mapping[str, Mapping[str, int]]],
    out_vocab: dict,
) -> list:
    """Codes per log row of each field of a feature table, joined on id."""
    pa = pyarrow()
    keys = table.column(id_name).to_numpy()
    order = np.argsort(keys, kind="stable")
    dup = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if dup.size:
        raise DataFormatError(
            path, int(order[dup[0] + 1]) + 2, id_name, f"duplicate id {keys[order][dup[0]]}"
        )
    sk = keys[order]
    idx = np.minimum(np.searchsorted(sk, ids), max(len(sk) - 1, 0))
    found = sk[idx] == ids if len(sk) else np.zeros(len(ids), dtype=bool)
    rows = order[idx] if len(sk) else idx
    codes = []
    for name in names:
        values = _key_strings(pa, table.column(name).combine_chunks())
        voc = dict(vocab[name]) if vocab is not None else build_vocab(values)
        per_entity = apply_vocab(values, voc)
        codes.append(np.where(found, per_entity[rows], 0).astype(np.int32))
        out_vocab[name] = voc
    return codes


def load_kuairand(
    directory: str | os.PathLike[str],
    variant: str = "pure",
    session_gap_minutes: float = 30,
    *,
    sessions: str = "gap",
    include_random: bool = True,
    vocab: Optional[Mapping[str, Mapping[str, int]]] = None,
) -> SessionData:
    """Load raw KuaiRand-``variant`` ("1k" or "pure") files with rmtl's recipe (below).

    The logs (both standard logs, and the random log with ``include_random``) are
    concatenated, sorted by (user_id, time_ms) keeping file order on equal times, and rows
    equal in all 19 columns are dropped but the first. Sessions split per user on a gap of
    more than ``session_gap_minutes`` (``sessions="gap"``) or per user and ``date``
    (``sessions="day"``). Tasks: ``click`` (is_click) and ``long_view``. Fields
    (:data:`FIELDS`): the log's ``tab``, 26 user fields and 5 video fields (tag: the first
    tag), each coded by descending frequency (tab over log rows, the others over the rows of
    their feature file); code 0 is missing (empty, ``-124``, ``UNKNOWN``), unseen or a user
    or video absent from the feature files. Dense: log1p(duration_ms / 1000), 0 when the
    duration is missing (``-124``; no real video lasts 0 ms, so 0 plays the part of code 0).
    ``video_features_statistic_<v>.csv`` is not used (its statistics span the log period).

    Parameters
    ----------
    directory : str or os.PathLike
        Holds the logs and ``user_features_<v>.csv`` / ``video_features_basic_<v>.csv``.
    variant : "1k" or "pure"
        Which KuaiRand release.
    session_gap_minutes : float
        A gap longer than this starts a new session (30; ``sessions="gap"``).
    sessions : "gap" or "day"
        Split sessions on time gaps or per user and date.
    include_random : bool
        Also read the random-exposure log.
    vocab : mapping, optional
        ``train.vocab``: code these files exactly like a training set (unseen values as 0).

    Returns
    -------
    SessionData
        Tasks ``click`` and ``long_view``; ``user``, ``item`` (video_id) and ``vocab`` set.

    Raises
    ------
    FileNotFoundError
        Naming a missing directory or file.
    DataFormatError
        Naming file, line and column of bad input.
    ImportError
        Without pyarrow (``pip install 'rmtl[data]'``).
    ValueError
        When ``variant`` is not ``"1k"`` or ``"pure"``, ``sessions`` not ``"gap"`` or
        ``"day"``, ``session_gap_minutes`` not above 0, ``vocab`` does not have exactly the
        entries of :data:`FIELDS` (in their order), or the logs hold no rows.
    """
    pa = pyarrow()
    if variant not in ("1k", "pure"):
        raise ValueError(f"variant: expected '1k' or 'pure', got {variant!r}")
    if sessions not in ("gap", "day"):
        raise ValueError(f"sessions: expected 'gap' or 'day', got {sessions!r}")
    if not session_gap_minutes > 0:
        raise ValueError(f"session_gap_minutes: expected > 0, got {session_gap_minutes}")
    if vocab is not None and tuple(vocab) != FIELDS:
        raise ValueError(f"vocab: expected entries for the fields {FIELDS}, got {tuple(vocab)}")
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such directory (expected the KuaiRand files)")
    log = _read_logs(directory, variant, include_random)
    if len(log["user_id"]) == 0:
        raise ValueError(f"{directory}: the KuaiRand logs hold no rows")
    order = np.lexsort((log["time_ms"], log["user_id"]))
    # duplicates share user, time and hash; sort them together, keep the first in file order
    by_hash = np.lexsort((order, log["hash"][order], log["time_ms"][order], log["user_id"][order]))
    s = order[by_hash]
    dup = np.zeros(len(s), dtype=bool)
    dup[1:] = (
        (log["user_id"][s][1:] == log["user_id"][s][:-1])
        & (log["time_ms"][s][1:] == log["time_ms"][s][:-1])
        & (log["hash"][s][1:] == log["hash"][s][:-1])
    )
    drop = np.zeros(len(order), dtype=bool)
    drop[s[dup]] = True
    rows = order[~drop[order]]
    col = {k: v[rows] for k, v in log.items()}
    user, time = col["user_id"], col["time_ms"]
    if sessions == "gap":
        session = split_sessions(user, time, int(session_gap_minutes * 60_000))
    else:
        new = np.ones(len(user), dtype=bool)
        new[1:] = (user[1:] != user[:-1]) | (col["date"][1:] != col["date"][:-1])
        session = np.cumsum(new) - 1
    out_vocab: dict = {}
    tab = pa.compute.cast(pa.array(col["tab"]), pa.string())
    tab_vocab = dict(vocab["tab"]) if vocab is not None else build_vocab(tab)
    out_vocab["tab"] = tab_vocab
    codes = [apply_vocab(tab, tab_vocab)]
    users_path = require_file(
        os.path.join(directory, f"user_features_{variant}.csv"), "KuaiRand user features"
    )
    videos_path = require_file(
        os.path.join(directory, f"video_features_basic_{variant}.csv"), "KuaiRand video features"
    )
    codes += _entity_codes(
        read_user_features(users_path), "user_id", USER_FIELDS, user, users_path, vocab, out_vocab
    )
    codes += _entity_codes(
        read_video_features(videos_path),
        "video_id",
        VIDEO_FIELDS,
        col["video_id"],
        videos_path,
        vocab,
        out_vocab,
    )
    labels = np.stack([col["is_click"], col["long_view"]], axis=1).astype(np.float32)
    dense = log_duration(np.where(col["duration_ms"] == MISSING, 0, col["duration_ms"]))[:, None]
    return SessionData(
        session,
        time,
        np.stack(codes, axis=1),
        dense,
        labels,
        [field_dim(out_vocab[f]) for f in FIELDS],
        user=user,
        item=col["video_id"],
        task_names=TASKS,
        vocab={f: out_vocab[f] for f in FIELDS},
    )


# ------------------------------------------------------------------ writer


def _raw(data: SessionData, name: str, rows: np.ndarray, missing: str, suffix: str = ""):
    """Raw cells of a field for these rows: the vocabulary value (+ suffix), or `missing`."""
    pa = pyarrow()
    voc = data.vocab[name]
    inv = np.full(max(voc.values(), default=0) + 1, None, dtype=object)
    for v, c in sorted(voc.items(), key=lambda kv: -kv[1]):
        inv[c] = v + suffix
    inv[0] = missing
    f = FIELDS.index(name)
    return quoted(pa.array(inv[data.sparse[rows, f]].tolist(), pa.string()))


def _lower_bound(label):
    """A count consistent with a range label: its first number ("[1k,5k)" -> 1000)."""
    m = re.search(r"(\d+)([kw]?)", label or "")
    return 0 if m is None else int(m.group(1)) * {"": 1, "k": 1000, "w": 10000}[m.group(2)]


def write_kuairand(
    data: SessionData,
    directory: str | os.PathLike[str],
    variant: str = "pure",
    *,
    duplicates: float = 0.0,
    seed: int = 0,
) -> None:
    """Write ``data`` as raw KuaiRand-``variant`` files: the two standard logs (split at
    2022-04-22, dates in UTC+8), an empty random log, ``user_features_<v>.csv`` and
    ``video_features_basic_<v>.csv`` with the real files' headers and quirks (``-124`` and
    ``UNKNOWN`` for missing values, float-written ``onehot_feat4`` / ``12-17``, quoted range
    columns and tag lists, a second tag on some videos). A fraction ``duplicates`` of log
    rows is written twice, as in the real logs.

    ``data`` needs ``user``, ``item``, two tasks, one dense feature log1p(duration s) and a
    ``vocab`` with :data:`FIELDS`, as :func:`rmtl.datasets.synthetic` (preset "kuairand")
    and :func:`load_kuairand` give.

    Parameters
    ----------
    data : SessionData
        The sessions to write.
    directory : str or os.PathLike
        Where the files go (created if missing; files of the same names are replaced).
    variant : str, default "pure"
        The variant named in the file names (``"pure"`` or ``"1k"`` for
        :func:`load_kuairand`).
    duplicates : float, default 0.0
        Fraction of log rows written twice, in [0, 1).
    seed : int, default 0
        Seed of the choice of duplicated rows.

    Raises
    ------
    ImportError
        Without pyarrow (``pip install 'rmtl[data]'``).
    ValueError
        When ``data`` has no ``vocab`` with exactly the fields of :data:`FIELDS` (in their
        order), no ``user`` or ``item`` ids, not two tasks or not one dense feature; or
        ``duplicates`` is not in [0, 1).
    """
    pa = pyarrow()
    if data.vocab is None or tuple(data.vocab) != FIELDS:
        raise ValueError(
            "data: expected a vocab with the KuaiRand fields (rmtl.datasets.kuairand.FIELDS)"
        )
    if data.user is None or data.item is None or data.num_tasks != 2 or data.num_dense != 1:
        raise ValueError("data: expected user and item ids, two tasks and one dense feature")
    if not 0.0 <= duplicates < 1.0:
        raise ValueError(f"duplicates: expected a fraction in [0, 1), got {duplicates}")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    duration = np.round(np.expm1(data.dense[:, 0].astype(np.float64)) * 1000.0).astype(np.int64)
    _write_logs(data, directory, variant, duration, duplicates, seed)
    users, urow = np.unique(data.user, return_index=True)
    cols = {"user_id": pa.array(users)}
    for name in USER_HEADER[1:]:
        if name in USER_FIELDS:
            is_str = name == "user_active_degree" or name in RANGES
            cols[name] = _raw(
                data,
                name,
                urow,
                "" if name in ONEHOT_FLOAT else UNKNOWN if is_str else str(MISSING),
                ".0" if name in ONEHOT_FLOAT else "",
            )
        else:  # a count column beside its range label
            labels = _raw(data, name + "_range", urow, "").to_pylist()
            cols[name] = pa.array([_lower_bound(v) for v in labels])
    write_csv(
        os.path.join(directory, f"user_features_{variant}.csv"), USER_HEADER, list(cols.values())
    )
    videos, vrow = np.unique(data.item, return_index=True)
    second = (videos * 7 + 3) % 3 == 0
    tag = _raw(data, "tag", vrow, "").to_pylist()
    tags = [f'"{t},{(int(t) + 11) % 70}"' if t and s else t for t, s in zip(tag, second)]
    n = len(videos)
    write_csv(
        os.path.join(directory, f"video_features_basic_{variant}.csv"),
        VIDEO_HEADER,
        [
            pa.array(videos),
            pa.array(1_000_000 + videos * 7919 % 9_000_000),
            _raw(data, "video_type", vrow, UNKNOWN),
            pa.array(["2022-04-10"] * n),
            _raw(data, "upload_type", vrow, UNKNOWN),
            _raw(data, "visible_status", vrow, "", ".0"),
            pa.array([f"{d}.0" for d in duration[vrow]]),
            pa.array(["720.0"] * n),
            pa.array(["1280.0"] * n),
            pa.array(4_000_000_000 + videos * 104_729),
            _raw(data, "music_type", vrow, "", ".0"),
            pa.array(tags, pa.string()),
        ],
    )


def _write_logs(
    data: SessionData,
    directory: str,
    variant: str,
    duration: np.ndarray,
    duplicates: float,
    seed: int,
) -> None:
    pa = pyarrow()
    n = len(data)
    twice = _core.shuffle(n, seed, 5) < int(round(duplicates * n))
    rows = np.repeat(np.arange(n), np.where(twice, 2, 1))
    local = data.time[rows] + UTC8_MS
    date = (local // DAY_MS).astype("datetime64[D]")
    month = date.astype("datetime64[M]")
    ymd = (
        (month.astype("datetime64[Y]").astype(np.int64) + 1970) * 10000
        + (month.astype(np.int64) % 12 + 1) * 100
        + (date - month).astype(np.int64)
        + 1
    )
    minute = (local % DAY_MS) // 60_000
    click, long_view = data.labels[rows, 0].astype(np.int64), data.labels[rows, 1].astype(np.int64)
    d = duration[rows]
    zero = np.zeros(len(rows), np.int64)
    cols = [
        data.user[rows],
        data.item[rows],
        ymd,
        (minute // 60) * 100 + minute % 60,
        data.time[rows],
        click,
        zero,
        zero,
        zero,
        zero,
        zero,
        long_view,
        np.where(long_view > 0, d, d // 5),
        d,
        zero,
        zero,
        zero,
        zero,
    ]
    tab = _raw(data, "tab", rows, str(MISSING))
    early = ymd < SPLIT_DATE
    for name, mask in zip(LOGS, (early, ~early, np.zeros(len(rows), dtype=bool))):
        write_csv(
            os.path.join(directory, name.format(v=variant)),
            LOG_HEADER,
            [pa.array(c[mask]) for c in cols] + [tab.filter(pa.array(mask))],
        )
