"""RetailRocket (Kaggle "retailrocket/ecommerce-dataset"): the raw files, the loader recipe of
:func:`load_retailrocket`, and a writer that emits a SessionData in the same raw format."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np

from .. import _core
from ..data import SessionData
from ._csv import DataFormatError, pyarrow, read_header, read_table, require_file, write_csv
from ._vocab import apply_vocab, build_vocab, field_dim, split_sessions

__all__ = ["load_retailrocket", "write_retailrocket", "ITEM_FIELDS", "TAIL_FIELDS"]

ITEM_FIELDS = ("785", "591", "814", "available", "categoryid", "364", "776")
TAIL_FIELDS = ("364", "776")
EVENT_TYPES = ("view", "addtocart", "transaction")
EVENTS_HEADER = ("timestamp", "visitorid", "event", "itemid", "transactionid")
PROPERTIES_HEADER = ("timestamp", "itemid", "property", "value")
PROPERTY_FILES = ("item_properties_part1.csv", "item_properties_part2.csv")
NUMERIC_PROPERTIES = ("categoryid", "available")  # stored unhashed, as integers
TASKS = ("click", "pay")
WEEK_MS = 7 * 86_400_000


def _read_events(path: str):
    """(timestamp, visitorid, event code 0/1/2, itemid) as NumPy arrays, in file order."""
    pa = pyarrow()
    header = read_header(path)
    if "transactionid" not in header:
        raise DataFormatError(path, 1, "transactionid", f"missing column; the header has {header}")
    i64 = pa.int64()
    t = read_table(
        path,
        {"timestamp": i64, "visitorid": i64, "event": pa.string(), "itemid": i64},
        required=("timestamp", "visitorid", "event", "itemid"),
    )
    ev = t.column("event").combine_chunks()
    code = pa.compute.index_in(ev, value_set=pa.array(EVENT_TYPES))
    if code.null_count:
        first = int(np.flatnonzero(code.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataFormatError(
            path,
            first + 2,
            "event",
            f"unknown event type {ev[first].as_py()!r}; expected one of {EVENT_TYPES}",
        )
    col = lambda name: t.column(name).to_numpy()  # noqa: E731
    return col("timestamp"), col("visitorid"), code.to_numpy().astype(np.int8), col("itemid")


def _impressions(ts, visitor, event, item, gap_ms: int):
    """Rows of the recipe: one per (session, item) at its first event, in session then time
    order, with click = addtocart or transaction and pay = transaction."""
    order = np.lexsort((ts, visitor))  # stable: equal times keep file order
    ts, visitor, event, item = ts[order], visitor[order], event[order], item[order]
    session = split_sessions(visitor, ts, gap_ms)
    by_pair = np.lexsort((item, session))  # stable: each (session, item) in time order
    s, it = session[by_pair], item[by_pair]
    start = np.ones(len(s), dtype=bool)
    start[1:] = (s[1:] != s[:-1]) | (it[1:] != it[:-1])
    starts = np.flatnonzero(start)
    strongest = np.maximum.reduceat(event[by_pair], starts)
    click, pay = strongest >= 1, strongest == 2
    first = by_pair[starts]
    rows = np.argsort(first, kind="stable")
    first = first[rows]
    labels = np.stack([click[rows], pay[rows]], axis=1).astype(np.float32)
    return session[first], ts[first], visitor[first], item[first], labels


def _latest_properties(directory: str, fields: Sequence[str]):
    """{field: (item ids sorted, latest value per item as a pyarrow string array)} from the
    change log in both property files (ties in time: the later row wins)."""
    pa = pyarrow()
    pc = pa.compute
    i64, s = pa.int64(), pa.string()
    keep = pa.array(list(fields))
    parts = []
    for name in PROPERTY_FILES:
        path = require_file(os.path.join(directory, name), "RetailRocket item property change log")
        t = read_table(
            path,
            {"timestamp": i64, "itemid": i64, "property": s, "value": s},
            required=PROPERTIES_HEADER,
        )
        mask = pc.is_in(t.column("property"), value_set=keep)
        rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        t = t.filter(mask)
        for prop in NUMERIC_PROPERTIES:
            if prop not in fields:
                continue
            vals = t.column("value").combine_chunks()
            bad = pc.and_(
                pc.equal(t.column("property"), prop),
                pc.invert(pc.match_substring_regex(vals, r"^\d+$")),
            )
            hit = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
            if hit.size:
                raise DataFormatError(
                    path,
                    int(rows[hit[0]]) + 2,
                    "value",
                    f"malformed {prop} value {vals[int(hit[0])].as_py()!r}; expected an integer",
                )
        parts.append(t)
    t = pa.concat_tables(parts)
    prop = pc.index_in(t.column("property"), value_set=keep).to_numpy()
    item, ts = t.column("itemid").to_numpy(), t.column("timestamp").to_numpy()
    order = np.lexsort((np.arange(len(item)), ts, item, prop))
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (prop[order][1:] != prop[order][:-1]) | (item[order][1:] != item[order][:-1])
    pick = order[last]
    values = t.column("value").combine_chunks().take(pa.array(pick))
    out = {}
    for f, name in enumerate(fields):
        sel = np.flatnonzero(prop[pick] == f)
        out[name] = (item[pick][sel], values.take(pa.array(sel)))
    return out


def load_retailrocket(
    directory: str | os.PathLike[str],
    session_gap_minutes: float = 30,
    *,
    vocab: Optional[Mapping[str, Mapping[str, int]]] = None,
    fields: Sequence[str] = ITEM_FIELDS,
    tail_fields: Sequence[str] = TAIL_FIELDS,
    tail_fraction: float = 0.2,
) -> SessionData:
    """Load the raw RetailRocket files of ``directory`` with rmtl's recipe (below).

    Events are sorted by (visitorid, timestamp) (equal times keep file order); a session
    starts after a gap of more than ``session_gap_minutes``; each (session, item) becomes one
    row at its first event, labelled ``click`` (addtocart or transaction) and ``pay``
    (transaction). Sparse fields are the latest value per item of the properties ``fields``
    (default the authors' seven) from both change-log files, coded by descending frequency
    over items (ties by value); in ``tail_fields`` every value from the first one past
    ``tail_fraction`` cumulative frequency on shares one code. Code 0 is a missing property or
    a value the vocabulary has not seen. Dense: the authors' dummy feature, fixed at 0.
    ``category_tree.csv`` is not used by the recipe.

    Parameters
    ----------
    directory : str or os.PathLike
        Holds ``events.csv`` and ``item_properties_part1.csv`` / ``_part2.csv``.
    session_gap_minutes : float
        A gap longer than this starts a new session (30).
    vocab : mapping, optional
        ``train.vocab``: code these files exactly like a training set (unseen values as 0).
    fields : sequence of str
        The item properties used as fields (default the authors' seven).
    tail_fields : sequence of str
        Fields whose long tail shares one code.
    tail_fraction : float
        Where the tail starts, as a cumulative frequency (0.2).

    Returns
    -------
    SessionData
        Tasks ``click`` and ``pay``; ``user`` (visitorid), ``item`` (itemid) and ``vocab``
        set.

    Raises
    ------
    FileNotFoundError
        Naming a missing directory or file.
    DataFormatError
        Naming file, line and column of bad input.
    ImportError
        Without pyarrow (``pip install 'rmtl[data]'``).
    ValueError
        When ``session_gap_minutes`` is not above 0, or ``vocab`` does not have exactly the
        entries of ``fields``, in their order.
    """
    pyarrow()
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such directory (expected the RetailRocket files)")
    if not session_gap_minutes > 0:
        raise ValueError(f"session_gap_minutes: expected > 0, got {session_gap_minutes}")
    fields = tuple(fields)
    if vocab is not None and tuple(vocab) != fields:
        raise ValueError(f"vocab: expected entries for the fields {fields}, got {tuple(vocab)}")
    events = require_file(os.path.join(directory, "events.csv"), "RetailRocket event log")
    columns = _read_events(events)
    if len(columns[0]) == 0:
        raise DataFormatError(events, None, None, "no events; expected at least one row")
    session, time, user, item, labels = _impressions(*columns, int(session_gap_minutes * 60_000))
    latest = _latest_properties(directory, fields)
    known = np.unique(np.concatenate([ids for ids, _ in latest.values()]))
    pa = pyarrow()
    codes, vocab_out = [], {}
    for name in fields:
        ids, values = latest[name]
        pos = np.full(len(known), -1, dtype=np.int64)
        pos[np.searchsorted(known, ids)] = np.arange(len(ids))
        per_item = values.take(pa.array(pos, mask=pos < 0))
        voc = (
            dict(vocab[name])
            if vocab is not None
            else build_vocab(per_item, tail_fraction if name in tail_fields else None)
        )
        item_codes = apply_vocab(per_item, voc)
        idx = np.minimum(np.searchsorted(known, item), max(len(known) - 1, 0))
        found = (known[idx] == item) if len(known) else np.zeros(len(item), dtype=bool)
        codes.append(np.where(found, item_codes[idx] if len(known) else 0, 0).astype(np.int32))
        vocab_out[name] = voc
    dims = [field_dim(v) for v in vocab_out.values()]
    return SessionData(
        session,
        time,
        np.stack(codes, axis=1),
        np.zeros((len(session), 1), np.float32),
        labels,
        dims,
        user=user,
        item=item,
        task_names=TASKS,
        vocab=vocab_out,
    )


# ------------------------------------------------------------------ writer


def _inverse(vocab: Mapping[str, int]) -> np.ndarray:
    """Raw value per code (index 0 unused); with shared codes the most frequent value."""
    out = np.empty(max(vocab.values(), default=0) + 1, dtype=object)
    for v, c in sorted(vocab.items(), key=lambda kv: -kv[1]):
        out[c] = v
    return out


def _u01(n: int, seed: int, stream: int) -> np.ndarray:
    """n uniforms in [0, 1) from rmtl's counter-based generator (a permutation's ranks)."""
    return _core.shuffle(n, seed, stream).astype(np.float64) / max(n, 1)


def write_retailrocket(
    data: SessionData,
    directory: str | os.PathLike[str],
    *,
    snapshots: int = 3,
    extra_properties: int = 2,
    category_parent: Optional[Mapping[str, Optional[str]]] = None,
    seed: int = 0,
) -> None:
    """Write ``data`` as raw RetailRocket files: ``events.csv`` (shuffled; a view per row,
    then an addtocart 1-20 s later for clicks and a transaction with an id for payments),
    ``item_properties_part1.csv`` / ``_part2.csv`` (a shuffled change log: ``snapshots``
    weekly rows per item and property, the last one the item's value, earlier ones sometimes
    another value; plus ``extra_properties`` unused properties per item, as in the real log)
    and ``category_tree.csv`` (every categoryid, parent from ``category_parent`` or empty).

    ``data`` needs ``user``, ``item``, two tasks (click, pay) and a ``vocab`` with the seven
    RetailRocket fields, as :func:`rmtl.datasets.synthetic` and :func:`load_retailrocket`
    give. Loading the files back reproduces sessions, labels and feature values when the
    sessions are more than 30 minutes apart.

    Parameters
    ----------
    data : SessionData
        The sessions to write (vocab values may hold no comma, quote or newline).
    directory : str or os.PathLike
        Where the files go (created if missing; files of the same names are replaced).
    snapshots : int, default 3
        Rows per item and property in the change log, >= 1.
    extra_properties : int, default 2
        Unused properties per item, >= 0.
    category_parent : mapping of str to str or None, optional
        The parent of each categoryid in ``category_tree.csv`` (None or missing: empty).
    seed : int, default 0
        Seed of the shuffles, the addtocart delays and the earlier snapshot values.

    Raises
    ------
    ImportError
        Without pyarrow (``pip install 'rmtl[data]'``).
    ValueError
        When ``data`` has no ``vocab`` with exactly the seven RetailRocket fields (in
        their order), no ``user`` or ``item`` ids, or not two tasks; ``snapshots`` is below
        1 or ``extra_properties`` below 0; or a vocab value holds a comma, quote or newline.
    """
    pa = pyarrow()
    if data.vocab is None or tuple(data.vocab) != ITEM_FIELDS:
        raise ValueError(
            f"data: expected a vocab with the fields {ITEM_FIELDS}, got "
            f"{None if data.vocab is None else tuple(data.vocab)}"
        )
    if data.user is None or data.item is None or data.num_tasks != 2:
        raise ValueError("data: expected user and item ids and two tasks (click, pay)")
    if snapshots < 1 or extra_properties < 0:
        raise ValueError(
            "snapshots, extra_properties: expected >= 1 and >= 0, "
            f"got {snapshots}, {extra_properties}"
        )
    for name, voc in data.vocab.items():
        bad = [v for v in voc if any(ch in v for ch in ',"\r\n')]
        if bad:
            raise ValueError(
                f"data.vocab[{name!r}]: value {bad[0]!r} has a comma, quote or newline"
            )
    os.makedirs(directory, exist_ok=True)
    _write_events(data, os.fspath(directory), seed)
    _write_properties(data, os.fspath(directory), snapshots, extra_properties, seed)
    cats = list(data.vocab["categoryid"])
    parent = category_parent or {}
    write_csv(
        os.path.join(directory, "category_tree.csv"),
        ("categoryid", "parentid"),
        [pa.array(cats), pa.array([parent.get(c) for c in cats], pa.string())],
    )


def _write_events(data: SessionData, directory: str, seed: int) -> None:
    pa = pyarrow()
    n = len(data)
    click, pay = data.labels[:, 0] > 0.5, data.labels[:, 1] > 0.5
    delay = 1000 + np.floor(_u01(n, seed, 1) * 19_000).astype(np.int64)
    cart_rows, pay_rows = np.flatnonzero(click | pay), np.flatnonzero(pay)
    ts = np.concatenate(
        [
            data.time,
            data.time[cart_rows] + delay[cart_rows],
            data.time[pay_rows] + 2 * delay[pay_rows],
        ]
    )
    rows = np.concatenate([np.arange(n), cart_rows, pay_rows])
    kind = np.repeat(np.arange(3, dtype=np.int32), [n, len(cart_rows), len(pay_rows)])
    tid = np.concatenate([np.zeros(n + len(cart_rows), np.int64), np.arange(len(pay_rows))])
    perm = _core.shuffle(len(ts), seed, 2)
    ts, rows, kind, tid = ts[perm], rows[perm], kind[perm], tid[perm]
    write_csv(
        os.path.join(directory, "events.csv"),
        EVENTS_HEADER,
        [
            pa.array(ts),
            pa.array(data.user[rows]),
            pa.DictionaryArray.from_arrays(pa.array(kind), pa.array(EVENT_TYPES)).cast(pa.string()),
            pa.array(data.item[rows]),
            pa.array(tid, mask=kind != 2),
        ],
    )


def _write_properties(
    data: SessionData, directory: str, snapshots: int, extra: int, seed: int
) -> None:
    pa = pyarrow()
    items, first = np.unique(data.item, return_index=True)
    codes = data.sparse[first]
    last_ts = int(data.time.min()) - WEEK_MS
    stamps = last_ts - WEEK_MS * np.arange(snapshots - 1, -1, -1, dtype=np.int64)
    ts, item, prop, value = [], [], [], []
    names = list(ITEM_FIELDS) + [str(1000 + 17 * k) for k in range(extra)]
    dictionary = []  # all raw values; value arrays index into it
    for f, name in enumerate(names):
        if f < len(ITEM_FIELDS):
            inv = _inverse(data.vocab[name])
            known = np.flatnonzero(codes[:, f] > 0)
            code = codes[known, f].astype(np.int64)
            n_vals = len(inv) - 1
        else:  # an unused property: a number per item, like the real log's hashed fields
            inv = np.array([None] + [f"n{10 * v}.000" for v in range(50)], dtype=object)
            known = np.arange(len(items))
            code = 1 + (items * (7 + f)) % 50
            n_vals = 50
        base = len(dictionary)
        dictionary.extend(inv[1:])
        for k, stamp in enumerate(stamps):
            c = code
            if k < snapshots - 1:  # older snapshots: half of them hold another value
                other = _u01(len(known), seed, 16 + 64 * f + k) < 0.5
                c = np.where(other, 1 + code % n_vals, code)
            ts.append(np.full(len(known), stamp))
            item.append(items[known])
            prop.append(np.full(len(known), f, np.int32))
            value.append(base + c - 1)
    ts, item, prop, value = (np.concatenate(a) for a in (ts, item, prop, value))
    perm = _core.shuffle(len(ts), seed, 3)
    half = len(perm) // 2
    for name, part in zip(PROPERTY_FILES, (perm[:half], perm[half:])):
        write_csv(
            os.path.join(directory, name),
            PROPERTIES_HEADER,
            [
                pa.array(ts[part]),
                pa.array(item[part]),
                pa.DictionaryArray.from_arrays(pa.array(prop[part]), pa.array(names)).cast(
                    pa.string()
                ),
                pa.DictionaryArray.from_arrays(
                    pa.array(value[part].astype(np.int32)), pa.array(dictionary, pa.string())
                ).cast(pa.string()),
            ],
        )
