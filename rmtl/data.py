"""SessionData: impressions grouped into sessions, the one table every part of rmtl reads."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from . import _core, _frames
from ._arrays import as_codes, as_dense, as_float, as_labels, run_offsets
from ._io import CorruptFileError, open_npz, save_npz

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

PathLike = Union[str, "os.PathLike[str]"]


class SessionData:
    """A table of impressions, grouped into sessions and time-sorted inside each session.

    Parameters
    ----------
    session : int array (n,)
        Session id per row; the rows of one session must be contiguous.
    time : int array (n,)
        Event time in milliseconds; non-decreasing inside a session.
    sparse : int array (n, F)
        Categorical codes; field ``f`` takes values in ``[0, field_dims[f])``, 0 = unknown.
    dense : float array (n, D) or None
        Numerical features (D may be 0).
    labels : array (n, T)
        One 0/1 label per task.
    field_dims : sequence of int (F,)
        Cardinality of every categorical field.
    user, item : int array (n,), optional
        Raw ids; ``user`` enables GAUC.
    task_names : sequence of str (T,), optional
        Defaults to ``task0, task1, ...``.
    truth : float array (n, T), optional
        True response probabilities (synthetic data), for oracle metrics.
    vocab : mapping, optional
        Field name -> {raw value: code} for every field in order, as the loaders build it;
        pass it to a loader (``vocab=``) so other files are coded the same way.
    backbone_only : int
        The last ``backbone_only`` columns of ``dense`` are features the backbone reads and
        RMTL's critics do not (default 0: the critics see every dense column).
    critic_only : float array (n, X), optional
        Features only RMTL's critics read, appended to their state (session context for the
        critics, :func:`rmtl.with_context`).

    Attributes
    ----------
    offsets : int64 array (S+1,)
        The CSR session boundaries: session ``s`` is rows ``offsets[s]:offsets[s+1]``.

    Raises
    ------
    TypeError
        When ``session``, ``time``, ``user``, ``item`` or ``sparse`` is not an integer array,
        or ``dense``, ``labels``, ``truth`` or ``critic_only`` is not a real numeric array.
    ValueError
        Naming the argument: ``field_dims`` empty or with an entry below 1; no rows; an array
        of the wrong shape (``labels`` with no task column, ``critic_only`` with no column,
        ``task_names`` not one name per task); NaN or infinity in ``dense``, ``labels``,
        ``truth`` or ``critic_only``; a label other than 0/1; ``truth`` outside [0, 1]; a
        code outside ``[0, field_dims[f])``; a ``vocab`` without one entry per field or
        with a code outside ``[1, field_dims[f])``; ``backbone_only`` not an integer in
        ``[0, D]``; the rows of a session not contiguous, or time decreasing inside one.

    See Also
    --------
    from_frame, from_parquet : a SessionData from a pandas DataFrame or a Parquet file.
    rmtl.datasets.synthetic : synthetic sessions with known truth.
    rmtl.datasets.load_retailrocket, rmtl.datasets.load_kuairand : the public datasets.

    Notes
    -----
    Rows are stored as given (arrays are converted to int64 ids, int32 codes and float32
    features). The critics' dense state is ``dense[:, :num_dense - backbone_only]`` followed
    by ``critic_only`` (:meth:`critic_dense`, :attr:`critic_num_dense` columns).

    Examples
    --------
    >>> import numpy as np
    >>> d = SessionData(session=[0, 0, 1], time=[1, 2, 5], sparse=[[1], [2], [1]],
    ...                 dense=None, labels=[[1], [0], [0]], field_dims=[3])
    >>> d.num_sessions, d.offsets.tolist()
    (2, [0, 2, 3])
    """

    def __init__(
        self,
        session: Sequence[int],
        time: Sequence[int],
        sparse: np.ndarray,
        dense: Optional[np.ndarray],
        labels: np.ndarray,
        field_dims: Sequence[int],
        *,
        user: Optional[Sequence[int]] = None,
        item: Optional[Sequence[int]] = None,
        task_names: Optional[Sequence[str]] = None,
        truth: Optional[np.ndarray] = None,
        vocab: Optional[Mapping[str, Mapping[str, int]]] = None,
        backbone_only: int = 0,
        critic_only: Optional[np.ndarray] = None,
    ) -> None:
        self.field_dims = tuple(int(d) for d in field_dims)
        if not self.field_dims or min(self.field_dims) < 1:
            raise ValueError(
                f"field_dims: expected at least one field, each >= 1, got {self.field_dims}"
            )
        self.sparse = as_codes(sparse, len(self.field_dims))
        n = self.sparse.shape[0]
        if n == 0:
            raise ValueError("sparse: the data set is empty; expected at least one row")
        self.session = _as_ids(session, n, "session")
        self.time = _as_ids(time, n, "time")
        num_dense = 0 if dense is None else np.shape(dense)[-1] if np.ndim(dense) == 2 else -1
        if num_dense < 0:
            raise ValueError(f"dense: expected shape (n, D), got {np.shape(dense)}")
        self.dense = as_dense(dense, n, num_dense)
        labels_arr = np.asarray(labels)
        if labels_arr.ndim != 2:
            raise ValueError(f"labels: expected shape (n, T), got {labels_arr.shape}")
        self.labels = as_labels(labels_arr, n, labels_arr.shape[1])
        if self.labels.shape[1] < 1:
            raise ValueError("labels: expected at least one task column")
        self.user = None if user is None else _as_ids(user, n, "user")
        self.item = None if item is None else _as_ids(item, n, "item")
        T = self.labels.shape[1]
        self.task_names = (
            tuple(task_names) if task_names is not None else tuple(f"task{k}" for k in range(T))
        )
        if len(self.task_names) != T:
            raise ValueError(f"task_names: expected {T} names, got {len(self.task_names)}")
        self.truth = None
        if truth is not None:
            self.truth = as_float(truth, (n, T), "truth")
            if ((self.truth < 0) | (self.truth > 1)).any():
                raise ValueError("truth: expected probabilities in [0, 1]")
        bad = np.flatnonzero(self.sparse >= np.asarray(self.field_dims, np.int64))
        if bad.size:
            r, f = divmod(int(bad[0]), len(self.field_dims))
            raise ValueError(
                f"sparse: code {self.sparse[r, f]} at row {r}, field {f} is outside "
                f"[0, {self.field_dims[f]}) (field_dims[{f}])"
            )
        self.vocab = None if vocab is None else _check_vocab(vocab, self.field_dims)
        if (
            isinstance(backbone_only, bool)
            or not isinstance(backbone_only, (int, np.integer))
            or not 0 <= backbone_only <= self.num_dense
        ):
            raise ValueError(
                f"backbone_only: expected an integer in [0, {self.num_dense}] (dense columns), "
                f"got {backbone_only!r}"
            )
        self.backbone_only = int(backbone_only)
        self.critic_only = None
        if critic_only is not None:
            extra = np.asarray(critic_only)
            if extra.ndim != 2 or extra.shape[0] != n or extra.shape[1] < 1:
                raise ValueError(
                    f"critic_only: expected shape ({n}, X) with X >= 1, got {extra.shape}"
                )
            self.critic_only = as_dense(extra, n, extra.shape[1], "critic_only")
        self.offsets = _session_offsets(self.session, self.time)

    # ------------------------------------------------------------------ shape
    def __len__(self) -> int:
        return self.sparse.shape[0]

    @property
    def num_sessions(self) -> int:
        """Number of sessions (episodes)."""
        return len(self.offsets) - 1

    @property
    def num_fields(self) -> int:
        """Number of categorical fields (columns of ``sparse``)."""
        return len(self.field_dims)

    @property
    def num_dense(self) -> int:
        """Number of numerical features (columns of ``dense``)."""
        return self.dense.shape[1]

    @property
    def critic_num_dense(self) -> int:
        """Width of the critics' dense state: the dense columns they see plus ``critic_only``."""
        extra = 0 if self.critic_only is None else self.critic_only.shape[1]
        return self.num_dense - self.backbone_only + extra

    def critic_dense(self) -> np.ndarray:
        """The critics' dense state: the dense columns they see, then ``critic_only``.

        Returns
        -------
        ndarray (n, critic_num_dense) float32
        """
        seen = self.dense[:, : self.num_dense - self.backbone_only]
        parts = [seen] if self.critic_only is None else [seen, self.critic_only]
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    @property
    def num_tasks(self) -> int:
        """Number of tasks (columns of ``labels``)."""
        return self.labels.shape[1]

    @property
    def position(self) -> np.ndarray:
        """Each row's 0-based step within its session (n,) int64."""
        lengths = np.diff(self.offsets)
        return np.arange(len(self), dtype=np.int64) - np.repeat(self.offsets[:-1], lengths)

    def __repr__(self) -> str:
        return (
            f"SessionData(rows={len(self)}, sessions={self.num_sessions}, "
            f"fields={self.num_fields}, "
            f"dense={self.num_dense}, tasks={list(self.task_names)})"
        )

    # ------------------------------------------------------------------ selection
    def subset(self, sessions: Sequence[int]) -> SessionData:
        """The sessions at these positions, in the order given.

        Parameters
        ----------
        sessions : sequence of int
            Session positions in ``0..num_sessions-1`` (not session ids).

        Returns
        -------
        SessionData
            A new SessionData of those sessions' rows.

        Raises
        ------
        TypeError
            When ``sessions`` holds positions that are not integers (floats, bools).
        ValueError
            When ``sessions`` is not a non-empty 1-D sequence, or a position is outside
            ``[0, num_sessions)``.
        """
        want = "sessions: expected a non-empty 1-D sequence of session positions"
        try:
            idx = np.asarray(sessions)
        except ValueError:
            raise ValueError(f"{want}, got a ragged nesting of sequences") from None
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"{want}, got {type(sessions).__name__} of shape {idx.shape}")
        if idx.dtype.kind not in "iu":
            raise TypeError(
                f"sessions: expected integer session positions, got dtype {idx.dtype} "
                f"({idx[:5].tolist()}{' ...' if idx.size > 5 else ''})"
            )
        if idx.min() < 0 or idx.max() >= self.num_sessions:
            bad = idx.min() if idx.min() < 0 else idx.max()
            raise ValueError(
                f"sessions: expected positions in [0, {self.num_sessions}), got {int(bad)}"
            )
        idx = idx.astype(np.int64)
        lengths = np.diff(self.offsets)[idx]
        starts = self.offsets[idx]
        rows = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        rows += np.arange(lengths.sum())
        return self.take_rows(rows)

    def take_rows(self, rows: np.ndarray) -> SessionData:
        """A new SessionData of these rows.

        Parameters
        ----------
        rows : int array
            Row indices forming whole sessions, each contiguous and in time order.

        Returns
        -------
        SessionData
        """
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return SessionData(
            self.session[rows],
            self.time[rows],
            self.sparse[rows],
            self.dense[rows],
            self.labels[rows],
            self.field_dims,
            user=pick(self.user),
            item=pick(self.item),
            task_names=self.task_names,
            truth=pick(self.truth),
            vocab=self.vocab,
            backbone_only=self.backbone_only,
            critic_only=pick(self.critic_only),
        )

    def split(self, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> tuple[SessionData, ...]:
        """Split by session in order of session start time (train, validation, test, ...).

        Parameters
        ----------
        fractions : sequence of float, default (0.6, 0.2, 0.2)
            At least two positive fractions summing to 1; part ``i`` ends at session
            ``round(cumulative fraction * S)``. Ties in start time keep the stored order.

        Returns
        -------
        tuple of SessionData
            One part per fraction, earliest sessions first.

        Raises
        ------
        ValueError
            When ``fractions`` is not a 1-D sequence of at least two positive finite numbers
            summing to 1, or when there are too few sessions to give every part at least one.
        """
        try:
            fr = np.asarray(fractions, dtype=np.float64)
        except (TypeError, ValueError):  # not numbers, or a ragged nesting
            fr = np.empty(0)
        if (
            fr.ndim != 1
            or fr.size < 2
            or not np.isfinite(fr).all()
            or (fr <= 0).any()
            or abs(fr.sum() - 1.0) > 1e-6
        ):
            raise ValueError(
                "fractions: expected a sequence of >= 2 positive finite numbers summing to 1, "
                f"got {fractions!r}"
            )
        order = np.argsort(self.time[self.offsets[:-1]], kind="stable")
        cuts = np.round(np.cumsum(fr) * self.num_sessions).astype(np.int64)
        cuts[-1] = self.num_sessions
        bounds = np.concatenate(([0], cuts))
        if (np.diff(bounds) < 1).any():
            raise ValueError(
                f"fractions: {self.num_sessions} sessions cannot fill every part of "
                f"{tuple(fr.tolist())}"
            )
        return tuple(self.subset(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))

    def batches(
        self, batch_size: int = 2048, shuffle: bool = True, seed: int = 0, epoch: int = 0
    ) -> Iterator[np.ndarray]:
        """Row indices in batches.

        Parameters
        ----------
        batch_size : int, default 2048
            Rows per batch (the last batch may be smaller).
        shuffle : bool, default True
            Shuffle by rmtl's counter-based generator keyed by (seed, epoch), so the same
            arguments always give the same batches; False: stored order.
        seed, epoch : int
            The generator's key.

        Yields
        ------
        ndarray of int64
            The row indices of one batch.

        Raises
        ------
        ValueError
            When ``batch_size`` is below 1 (on the first iteration: the call itself returns
            a generator).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        order = row_order(len(self), shuffle, seed, epoch)
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    # ------------------------------------------------------------------ summary
    def describe(self) -> str:
        """A short human-readable summary.

        Returns
        -------
        str
            Sizes, session lengths, label rates (and oracle AUCs with ``truth``), fields.
        """
        lengths = np.diff(self.offsets)
        lines = [
            f"rows {len(self)}, sessions {self.num_sessions}, "
            f"session length mean {lengths.mean():.2f} / median {np.median(lengths):.0f} "
            f"/ max {lengths.max()}",
            f"fields {self.num_fields} (dims {list(self.field_dims)}), dense {self.num_dense}",
        ]
        for k, name in enumerate(self.task_names):
            line = f"task {name}: positive rate {self.labels[:, k].mean():.4f}"
            if self.truth is not None:
                line += (
                    f", oracle AUC {_core.oracle(np.ascontiguousarray(self.truth[:, k]), 0):.4f}"
                )
            lines.append(line)
        return "\n".join(lines)

    # ------------------------------------------------------------------ files
    def save(self, path: PathLike) -> None:
        """Write every array and the schema to one .npz file, atomically.

        Parameters
        ----------
        path : str or os.PathLike
            The file, exactly (no ``.npz`` is appended).

        See Also
        --------
        load : the inverse.
        """
        arrays = {k: getattr(self, k) for k in ("session", "time", "sparse", "dense", "labels")}
        for k in ("user", "item", "truth", "critic_only"):
            if getattr(self, k) is not None:
                arrays[k] = getattr(self, k)
        schema = {
            "field_dims": list(self.field_dims),
            "task_names": list(self.task_names),
            "format": 1,
            "backbone_only": self.backbone_only,
        }
        if self.vocab is not None:
            schema["vocab"] = self.vocab
        save_npz(path, arrays, {"schema": schema})

    # ------------------------------------------------------------------ pandas / Parquet
    @classmethod
    def from_frame(
        cls,
        df: Any,
        *,
        session: Union[None, str, Sequence[str]] = None,
        order: Optional[str] = None,
        sparse: Union[None, str, Sequence[str]] = None,
        dense: Union[None, str, Sequence[str]] = None,
        labels: Union[None, str, Sequence[str]] = None,
        user: Optional[str] = None,
        item: Optional[str] = None,
        field_dims: Optional[Sequence[int]] = None,
        vocab: Optional[Mapping[str, Mapping[str, int]]] = None,
        truth: Union[None, str, Sequence[str]] = None,
        critic_only: Union[None, str, Sequence[str]] = None,
        backbone_only: int = 0,
    ) -> SessionData:
        """Build a SessionData from a table of impressions, one row per impression: a pandas
        DataFrame, or any table with the Arrow C stream interface (a pyarrow Table, a polars
        DataFrame, ...; read through pyarrow).

        Rows are grouped by ``session`` (sessions in order of first appearance) and sorted by
        ``order`` inside each session; equal keys keep the frame's order, so a frame that is
        already grouped and sorted keeps its row order.

        Parameters
        ----------
        df : pandas.DataFrame or Arrow table
            The impressions; a pandas index is ignored (errors name rows by index label).
        session : str or list of str, default ``"session"``
            Session key column(s). An integer column gives the session ids as they are; any
            other key (strings, several columns) gets ids 0, 1, ... by first appearance.
        order : str, default ``"time"``
            Order key inside a session, stored as :attr:`time`: datetimes (tz-aware or naive,
            as milliseconds since the epoch, UTC), durations (milliseconds) or integers (a
            timestamp in milliseconds or a position).
        sparse : str or list of str
            Categorical feature columns, one field each. Without ``field_dims`` their values
            are coded like the raw-file loaders do: codes 1, 2, ... by descending frequency
            (ties by value), 0 for missing values; the mapping is kept in :attr:`vocab`.
        dense : str or list of str, optional
            Numerical feature columns (none by default); no missing values.
        labels : str or list of str
            One 0/1 (or boolean) column per task; the column names become
            :attr:`task_names`. No missing values.
        user, item : str, optional
            Raw user and item id columns (``user`` enables GAUC); non-integer ids get codes by
            first appearance.
        field_dims : list of int, optional
            Give it when the ``sparse`` columns already hold integer codes in
            ``[0, field_dims[f])`` (as :meth:`to_frame` writes them); they are kept as they are.
        vocab : mapping, optional
            Field name -> {value: code}, e.g. ``train.vocab``: code the ``sparse`` columns
            with it (values it does not hold become 0), so another frame is coded exactly like
            a training set. Its keys must be the ``sparse`` column names.
        truth : str or list of str, optional
            True response probabilities, one column per label column (synthetic data).
        critic_only : str or list of str, optional
            Features only RMTL's critics read (see the class parameters).
        backbone_only : int, default 0
            How many of the last ``dense`` columns only the backbone reads.

        Returns
        -------
        SessionData
            The impressions, sessions contiguous and time-sorted.

        Raises
        ------
        ImportError
            When pandas is not installed (``pip install 'rmtl[data]'``).
        ValueError
            Naming the column: a column that is not in the frame, a missing value in a
            session, order, label, dense or id column, a label other than 0/1, a code
            outside its ``field_dims`` entry.

        See Also
        --------
        to_frame : the inverse; ``SessionData.from_frame(data.to_frame())`` equals ``data``.
        from_parquet : the same from a Parquet file.

        Notes
        -----
        Called with none of ``sparse`` and ``labels``, the schema :meth:`to_frame` leaves in
        ``df.attrs`` supplies every argument not given.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({
        ...     "user": [7, 7, 7, 9, 9],
        ...     "ts": pd.to_datetime([3, 1, 2, 5, 4], unit="s"),
        ...     "category": ["shoes", "hats", "shoes", "bags", "shoes"],
        ...     "price": [10.0, 5.0, 12.0, 30.0, 8.0],
        ...     "click": [1, 0, 0, 1, 1],
        ...     "buy": [0, 0, 0, 1, 0],
        ... })
        >>> data = SessionData.from_frame(
        ...     df, session="user", order="ts", sparse="category", dense="price",
        ...     labels=["click", "buy"], user="user")
        >>> data.num_sessions, data.sparse[:, 0].tolist(), data.vocab["category"]["shoes"]
        (2, [3, 1, 1, 1, 2], 1)
        """
        return _frames.from_frame(
            cls,
            df,
            session=session,
            order=order,
            sparse=sparse,
            dense=dense,
            labels=labels,
            user=user,
            item=item,
            field_dims=field_dims,
            vocab=vocab,
            truth=truth,
            critic_only=critic_only,
            backbone_only=backbone_only,
        )

    @classmethod
    def from_parquet(cls, path: PathLike, **kwargs: Any) -> SessionData:
        """Read a Parquet file (or a directory of them) of impressions with
        :meth:`from_frame`.

        Parameters
        ----------
        path : str or os.PathLike
            The Parquet file or dataset directory.
        **kwargs
            The column arguments of :meth:`from_frame` (``session``, ``order``, ``sparse``,
            ``dense``, ``labels``, ...). When ``sparse`` and ``labels`` are given only the
            columns named are read. Without them, the schema that :meth:`to_frame` left in
            the frame (pandas keeps ``DataFrame.attrs`` in the file) is used.

        Returns
        -------
        SessionData

        Raises
        ------
        ImportError
            When pyarrow or pandas is not installed (``pip install 'rmtl[data]'``).
        FileNotFoundError
            When ``path`` does not exist.
        ValueError
            As :meth:`from_frame`, naming the column.

        Examples
        --------
        >>> data.to_frame().to_parquet("impressions.parquet")  # doctest: +SKIP
        >>> SessionData.from_parquet("impressions.parquet")  # doctest: +SKIP
        """
        return _frames.from_parquet(cls, path, **kwargs)

    def to_frame(self) -> pd.DataFrame:
        """The impressions as a pandas DataFrame, one row per impression in stored order.

        Returns
        -------
        pandas.DataFrame
            Columns ``session`` and ``time`` (int64), ``user`` and ``item`` when present,
            one integer code column per field (named by :attr:`vocab`'s keys, else
            ``field0, field1, ...``), ``dense0, dense1, ...`` (float32), one 0/1 int8 column
            per task (named by :attr:`task_names`), ``truth_<task>`` and
            ``critic0, critic1, ...`` when present. ``df.attrs["rmtl"]`` holds the schema
            (column roles, ``field_dims``, ``vocab``, ``backbone_only``) that lets
            :meth:`from_frame` rebuild this SessionData exactly.

        Raises
        ------
        ImportError
            When pandas is not installed (``pip install 'rmtl[data]'``).
        ValueError
            When a field, task or id name would name two columns.
        """
        return _frames.to_frame(self)

    @classmethod
    def load(cls, path: PathLike) -> SessionData:
        """Read a file written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            The file.

        Returns
        -------
        SessionData

        Raises
        ------
        FileNotFoundError
            When ``path`` does not exist.
        CorruptFileError
            (:class:`rmtl.CorruptFileError`, a ValueError) naming the file when it is damaged
            or not a SessionData file (a member or the schema missing or unreadable).
        ValueError
            When the arrays it holds fail the checks of the class (see :class:`SessionData`;
            an array of the wrong dtype is a TypeError there).
        """
        with open_npz(path, "SessionData") as z:
            schema = z.json("schema")
            if (
                not isinstance(schema, dict)
                or "field_dims" not in schema
                or "task_names" not in schema
            ):
                raise CorruptFileError(path, "not an rmtl SessionData file (bad schema)")
            return cls(
                z["session"],
                z["time"],
                z["sparse"],
                z["dense"],
                z["labels"],
                schema["field_dims"],
                user=z.get("user"),
                item=z.get("item"),
                task_names=schema["task_names"],
                truth=z.get("truth"),
                vocab=schema.get("vocab"),
                backbone_only=schema.get("backbone_only", 0),
                critic_only=z.get("critic_only"),
            )


def row_order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The order rows are visited in.

    Parameters
    ----------
    n : int
        Number of rows.
    shuffle : bool
        Permute (True) or not.
    seed, epoch : int
        The key of the core's counter-based generator.

    Returns
    -------
    ndarray (n,) int64
        ``0..n-1``, or its permutation drawn from (seed, epoch).
    """
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return _core.shuffle(n, int(seed) & (2**64 - 1), int(epoch))


def _as_ids(x, n: int, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {a.dtype}")
    if a.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_vocab(
    vocab: Mapping[str, Mapping[str, int]], field_dims: tuple[int, ...]
) -> dict[str, dict[str, int]]:
    """A plain-dict copy of vocab: one entry per field, string values, codes in [1, dim)."""
    if len(vocab) != len(field_dims):
        raise ValueError(
            f"vocab: expected one entry per field ({len(field_dims)}), got {len(vocab)}"
        )
    out = {}
    for (name, codes), dim in zip(vocab.items(), field_dims):
        out[str(name)] = {str(v): int(c) for v, c in codes.items()}
        bad = [c for c in out[str(name)].values() if not 1 <= c < dim]
        if bad:
            raise ValueError(
                f"vocab: field {name!r} maps a value to code {bad[0]}, outside [1, {dim})"
            )
    return out


def _session_offsets(session: np.ndarray, time: np.ndarray) -> np.ndarray:
    """CSR boundaries of the runs of equal session ids; each id must form one run and
    time must not decrease inside it."""
    offsets = run_offsets(session, "session")
    inside = np.ones(len(session) - 1, bool)
    inside[offsets[1:-1] - 1] = False
    back = np.flatnonzero(inside & (time[1:] < time[:-1]))
    if back.size:
        r = int(back[0]) + 1
        raise ValueError(
            f"time: decreases inside session {session[r]} at row {r}; sort each session by time"
        )
    return offsets
