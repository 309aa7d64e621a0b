"""SessionData to and from pandas DataFrames (and Parquet files): the conversion behind
:meth:`rmtl.SessionData.from_frame`, :meth:`~rmtl.SessionData.from_parquet` and
:meth:`~rmtl.SessionData.to_frame`. pandas (and pyarrow, for Parquet) are imported here,
lazily: they are the optional extra ``data``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

# SessionData is the ``cls`` argument (rmtl.data imports this module, not the reverse)
SessionData = Any
Columns = Union[str, Sequence[str]]

# the key of the schema to_frame leaves in DataFrame.attrs
ATTRS_KEY = "rmtl"


def pandas():
    """The pandas module, or an ImportError naming the extra that installs it."""
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError(
            "SessionData.from_frame / to_frame / from_parquet need pandas; "
            "install it with: pip install 'rmtl[data]'"
        ) from e
    return pd


def pyarrow_parquet():
    """pyarrow.parquet, or an ImportError naming the extra that installs it."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(
            "SessionData.from_parquet needs pyarrow; install it with: pip install 'rmtl[data]'"
        ) from e
    return pq


def arrow_frame(obj: Any):
    """A pandas DataFrame of a table that speaks the Arrow C stream interface
    (``__arrow_c_stream__``: pyarrow tables, polars DataFrames, ...), or a TypeError naming
    what is accepted."""
    if not hasattr(obj, "__arrow_c_stream__"):
        raise TypeError(
            "df: expected a pandas DataFrame or a table with the Arrow C stream interface "
            f"(a pyarrow Table, a polars DataFrame, ...), got {type(obj).__name__}"
        )
    try:
        import pyarrow as pa
    except ImportError as e:
        raise ImportError(
            "SessionData.from_frame reads Arrow tables through pyarrow; install it with: "
            "pip install 'rmtl[data]'"
        ) from e
    return pa.table(obj).to_pandas()


def _names(cols: Optional[Columns]) -> list[str]:
    if cols is None:
        return []
    return [cols] if isinstance(cols, str) else list(cols)


def _require(df, cols: Sequence[str], what: str) -> None:
    for c in cols:
        if c not in df.columns:
            raise ValueError(
                f"{what}: column {c!r} is not in the frame; its columns are {list(df.columns)}"
            )


def _label(index, i) -> Any:
    """The index label of row position i, as a plain Python value."""
    x = index[int(i)]
    return x.item() if isinstance(x, np.generic) else x


def _no_missing(s, what: str) -> None:
    na = s.isna().to_numpy()
    if na.any():
        raise ValueError(
            f"{what}: column {s.name!r} has a missing value at row "
            f"{_label(s.index, na.argmax())!r}; fill or drop it first"
        )


def _ids(s, what: str) -> np.ndarray:
    """Integer ids of a column: its values when integral, else codes by first appearance."""
    pd = pandas()
    _no_missing(s, what)
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=np.int64)
    return pd.factorize(s, sort=False)[0].astype(np.int64)


def _order(s) -> np.ndarray:
    """The order key as int64: milliseconds since the epoch (UTC) for datetimes, milliseconds
    for durations, the values themselves for integers (or floats holding integers)."""
    pd = pandas()
    _no_missing(s, "order")
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return s.to_numpy().astype("datetime64[ms]").astype(np.int64)
    if pd.api.types.is_timedelta64_dtype(s.dtype):
        return s.to_numpy().astype("timedelta64[ms]").astype(np.int64)
    if pd.api.types.is_bool_dtype(s.dtype) or not pd.api.types.is_numeric_dtype(s.dtype):
        raise TypeError(
            f"order: column {s.name!r} has dtype {s.dtype}; expected datetimes, durations or "
            "integers (a timestamp or a position)"
        )
    v = s.to_numpy(dtype=np.float64 if pd.api.types.is_float_dtype(s.dtype) else np.int64)
    if v.dtype.kind == "f":
        bad = np.flatnonzero(v != np.round(v))
        if bad.size:
            raise ValueError(
                f"order: column {s.name!r} holds {float(v[bad[0]])!r} at row "
                f"{_label(s.index, bad[0])!r}; expected integers (a timestamp or a position)"
            )
        v = v.astype(np.int64)
    return v


def _as_text(s):
    """A column's values as strings (the vocabulary's keys); floats that hold integers (an
    integer column with missing values) print as integers; missing stays missing."""
    pd = pandas()
    if pd.api.types.is_float_dtype(s.dtype):
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        ok = ~np.isnan(v)
        if (v[ok] == np.round(v[ok])).all():
            s = pd.Series(v, index=s.index).astype("Int64")
    out = s.astype("string")
    return out


def build_vocab(text) -> dict[str, int]:
    """Codes 1, 2, ... for the non-missing values, most frequent first (ties by value), as the
    raw-file loaders code their fields."""
    counts = text.dropna().value_counts(sort=False)
    if counts.empty:
        return {}
    vals = np.asarray(counts.index.astype(str), dtype=object)
    order = np.lexsort((vals.astype(str), -counts.to_numpy()))
    return {str(vals[i]): k + 1 for k, i in enumerate(order)}


def _codes(s, vocab: Mapping[str, int]) -> np.ndarray:
    mapped = s.map(dict(vocab))
    return mapped.fillna(0).to_numpy(dtype=np.int64).astype(np.int32)


def _floats(df, cols: Sequence[str], what: str) -> np.ndarray:
    pd = pandas()
    for c in cols:
        s = df[c]
        if not (pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)):
            raise TypeError(f"{what}: column {c!r} has dtype {s.dtype}; expected numbers")
        _no_missing(s, what)
    if not cols:
        return np.zeros((len(df), 0), np.float32)
    return np.column_stack([df[c].to_numpy(dtype=np.float64) for c in cols])


def from_frame(
    cls,
    df,
    *,
    session: Optional[Columns] = None,
    order: Optional[str] = None,
    sparse: Optional[Columns] = None,
    dense: Optional[Columns] = None,
    labels: Optional[Columns] = None,
    user: Optional[str] = None,
    item: Optional[str] = None,
    field_dims: Optional[Sequence[int]] = None,
    vocab: Optional[Mapping[str, Mapping[str, int]]] = None,
    truth: Optional[Columns] = None,
    critic_only: Optional[Columns] = None,
    backbone_only: int = 0,
) -> SessionData:
    """See :meth:`rmtl.SessionData.from_frame`."""
    pd = pandas()
    if not isinstance(df, pd.DataFrame):
        df = arrow_frame(df)
    schema = df.attrs.get(ATTRS_KEY) if sparse is None and labels is None else None
    if isinstance(schema, Mapping):  # written by to_frame
        session = schema["session"] if session is None else session
        order = schema["order"] if order is None else order
        sparse, labels = schema["sparse"], schema["labels"]
        dense = schema["dense"] if dense is None else dense
        user = schema.get("user") if user is None else user
        item = schema.get("item") if item is None else item
        truth = schema.get("truth") if truth is None else truth
        critic_only = schema.get("critic_only") if critic_only is None else critic_only
        field_dims = schema["field_dims"] if field_dims is None else field_dims
        vocab = schema.get("vocab") if vocab is None else vocab
        backbone_only = schema.get("backbone_only", 0) if backbone_only == 0 else backbone_only
    if sparse is None or labels is None:
        raise ValueError(
            "sparse, labels: name the categorical feature columns and the label columns "
            "(e.g. sparse=['item_cat', 'device'], labels=['click', 'buy'])"
        )
    session_cols = _names("session" if session is None else session)
    order_col = "time" if order is None else order
    sparse_cols, dense_cols, label_cols = _names(sparse), _names(dense), _names(labels)
    truth_cols, critic_cols = _names(truth), _names(critic_only)
    if not sparse_cols:
        raise ValueError("sparse: expected at least one categorical feature column")
    if not label_cols:
        raise ValueError("labels: expected at least one label column")
    for what, cols in (
        ("session", session_cols),
        ("order", [order_col]),
        ("sparse", sparse_cols),
        ("dense", dense_cols),
        ("labels", label_cols),
        ("user", _names(user)),
        ("item", _names(item)),
        ("truth", truth_cols),
        ("critic_only", critic_cols),
    ):
        _require(df, cols, what)
    if truth_cols and len(truth_cols) != len(label_cols):
        raise ValueError(
            f"truth: expected one column per label column ({len(label_cols)}), "
            f"got {len(truth_cols)}"
        )
    if len(df) == 0:
        raise ValueError("df: the frame is empty; expected at least one impression")

    # sessions: contiguous, in order of first appearance, each sorted by the order key
    for c in session_cols:
        _no_missing(df[c], "session")
    if len(session_cols) == 1:
        raw = _ids(df[session_cols[0]], "session")
        rank = pd.factorize(raw, sort=False)[0]
    else:
        rank = df.groupby(session_cols, sort=False).ngroup().to_numpy()
        raw = rank.astype(np.int64)
    time = _order(df[order_col])
    rows = np.lexsort((time, rank))  # stable: equal keys keep the frame's order
    df = df.iloc[rows]

    # categorical fields: codes as given (field_dims) or coded through a vocabulary
    codes = []
    if field_dims is not None:
        if len(field_dims) != len(sparse_cols):
            raise ValueError(
                f"field_dims: expected one per sparse column ({len(sparse_cols)}), "
                f"got {len(field_dims)}"
            )
        for c, dim in zip(sparse_cols, field_dims):
            s = df[c]
            _no_missing(s, "sparse")
            if not pd.api.types.is_integer_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
                raise TypeError(
                    f"sparse: column {c!r} has dtype {s.dtype}; with field_dims the sparse "
                    "columns hold integer codes (leave field_dims out to code raw values)"
                )
            v = s.to_numpy(dtype=np.int64)
            bad = np.flatnonzero((v < 0) | (v >= int(dim)))
            if bad.size:
                raise ValueError(
                    f"sparse: column {c!r} holds code {int(v[bad[0]])} at row "
                    f"{_label(s.index, bad[0])!r}, outside [0, {int(dim)}) (its field_dims entry)"
                )
            codes.append(v.astype(np.int32))
        vocab_out = None if vocab is None else {str(k): dict(v) for k, v in vocab.items()}
        dims = [int(d) for d in field_dims]
    else:
        if vocab is not None and [str(k) for k in vocab] != sparse_cols:
            raise ValueError(
                f"vocab: expected entries for the sparse columns {sparse_cols}, got {list(vocab)}"
            )
        vocab_out, dims = {}, []
        for c in sparse_cols:
            text = _as_text(df[c])
            voc = (
                {str(k): int(v) for k, v in vocab[c].items()}
                if vocab is not None
                else build_vocab(text)
            )
            codes.append(_codes(text, voc))
            vocab_out[c] = voc
            dims.append(max(voc.values(), default=0) + 1)

    label_arr = _floats(df, label_cols, "labels")
    for k, c in enumerate(label_cols):
        bad = np.flatnonzero(~np.isin(label_arr[:, k], (0.0, 1.0)))
        if bad.size:
            raise ValueError(
                f"labels: column {c!r} holds {float(label_arr[bad[0], k])!r} at row "
                f"{_label(df.index, bad[0])!r}; expected 0/1 labels"
            )
    return cls(
        raw[rows],
        time[rows],
        np.stack(codes, axis=1),
        _floats(df, dense_cols, "dense"),
        label_arr,
        dims,
        user=None if user is None else _ids(df[user], "user"),
        item=None if item is None else _ids(df[item], "item"),
        task_names=label_cols,
        truth=_floats(df, truth_cols, "truth") if truth_cols else None,
        vocab=vocab_out,
        backbone_only=backbone_only,
        critic_only=_floats(df, critic_cols, "critic_only") if critic_cols else None,
    )


def to_frame(data: SessionData):
    """See :meth:`rmtl.SessionData.to_frame`."""
    pd = pandas()
    sparse = (
        list(data.vocab)
        if data.vocab is not None
        else [f"field{f}" for f in range(data.num_fields)]
    )
    dense = [f"dense{j}" for j in range(data.num_dense)]
    labels = list(data.task_names)
    truth = [f"truth_{t}" for t in labels] if data.truth is not None else []
    critic = (
        [f"critic{j}" for j in range(data.critic_only.shape[1])]
        if data.critic_only is not None
        else []
    )
    ids = ["session", "time"] + [k for k in ("user", "item") if getattr(data, k) is not None]
    names = ids + sparse + dense + labels + truth + critic
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(
            f"to_frame: the column names {twice} would be used twice (field, task or id "
            "names); rename the fields or tasks"
        )
    cols: dict[str, Any] = {k: getattr(data, k) for k in ids}
    cols.update({c: data.sparse[:, f] for f, c in enumerate(sparse)})
    cols.update({c: data.dense[:, j] for j, c in enumerate(dense)})
    cols.update({c: data.labels[:, k].astype(np.int8) for k, c in enumerate(labels)})
    cols.update({c: data.truth[:, k] for k, c in enumerate(truth)})
    cols.update({c: data.critic_only[:, j] for j, c in enumerate(critic)})
    df = pd.DataFrame(cols)
    df.attrs[ATTRS_KEY] = {
        "session": "session",
        "order": "time",
        "sparse": sparse,
        "dense": dense,
        "labels": labels,
        "user": "user" if data.user is not None else None,
        "item": "item" if data.item is not None else None,
        "truth": truth or None,
        "critic_only": critic or None,
        "field_dims": list(data.field_dims),
        "vocab": data.vocab,
        "backbone_only": data.backbone_only,
    }
    return df


def from_parquet(cls, path: Union[str, os.PathLike[str]], **kwargs: Any) -> SessionData:
    """See :meth:`rmtl.SessionData.from_parquet`."""
    pq = pyarrow_parquet()
    pd = pandas()
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: no such file or directory (expected a Parquet file)")
    columns = None
    if kwargs.get("sparse") is not None and kwargs.get("labels") is not None:
        # read only the columns named (Parquet is columnar)
        have = pq.read_schema(p).names
        columns = []
        for what in (
            "session",
            "order",
            "sparse",
            "dense",
            "labels",
            "user",
            "item",
            "truth",
            "critic_only",
        ):
            default = {"session": "session", "order": "time"}.get(what)
            cols = _names(kwargs.get(what) if kwargs.get(what) is not None else default)
            for c in cols:
                if c not in have:
                    raise ValueError(f"{what}: column {c!r} is not in {p}; its columns are {have}")
            columns += [c for c in cols if c not in columns]
    df = pd.read_parquet(p, engine="pyarrow", columns=columns)
    return from_frame(cls, df, **kwargs)
