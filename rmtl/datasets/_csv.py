"""Reading and writing the raw CSV files with pyarrow, with errors that name the file, the
line and the column. Line numbers assume one record per line (true of both datasets)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Optional

import numpy as np

from .. import _io


class DataFormatError(ValueError):
    """A raw data file does not have the expected format.

    Attributes ``path``, ``line`` (1-based, the header is line 1; None when unknown) and
    ``column`` (None when the problem is not in one column) say where.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    line : int or None
        The 1-based line (the header is line 1), or None when unknown.
    column : str or None
        The column, or None when the problem is not in one column.
    problem : str
        What is wrong; the message is ``"<path>, line <line>, column '<column>': <problem>"``
        (the parts that are None left out).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        line: Optional[int],
        column: Optional[str],
        problem: str,
    ) -> None:
        self.path, self.line, self.column = str(path), line, column
        where = str(path) + (f", line {line}" if line is not None else "")
        where += f", column {column!r}" if column is not None else ""
        super().__init__(f"{where}: {problem}")


def pyarrow():
    """The pyarrow module (with .csv and .compute loaded), or an ImportError saying what to do."""
    try:
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401
        import pyarrow.csv  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading and writing raw RetailRocket / KuaiRand files needs pyarrow; "
            "install it with: pip install 'rmtl[data]'"
        ) from e
    return pa


def require_file(path: str | os.PathLike[str], what: str) -> str:
    """The path as str, or FileNotFoundError naming the missing file."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{p}: no such file (expected the {what})")
    return p


def read_header(path: str) -> list[str]:
    """Column names of the first line (names are never quoted in these datasets)."""
    with open(path, "rb") as f:
        raw = f.readline()
    try:
        first = raw.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataFormatError(
            path,
            1,
            None,
            f"the header is not UTF-8 text (byte {raw[e.start]:#04x} at "
            f"offset {e.start}); save the file as UTF-8",
        ) from None
    return [c.strip().strip('"') for c in first.split(",")] if first else []


def _first_bad(values, typ) -> int:
    """Index of the first value of a string array that does not convert to typ (bisection
    with pyarrow's own cast, so 'bad' means exactly what pyarrow rejects)."""
    pa = pyarrow()
    lo, hi = 0, len(values)
    try:
        pa.compute.cast(values, typ)
        return -1
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pa.compute.cast(values.slice(lo, mid - lo), typ)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return lo


def _locate_bad_utf8(path: str, header: Sequence[str]) -> Optional[DataFormatError]:
    """The first line (and column, counting commas outside quotes) holding bytes that are not
    UTF-8, read line by line so memory stays bounded; None when the file is UTF-8."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                cells, quoted_ = 0, False
                for byte in raw[: e.start]:
                    if byte == 0x22:
                        quoted_ = not quoted_
                    elif byte == 0x2C and not quoted_:
                        cells += 1
                column = header[cells] if cells < len(header) else None
                return DataFormatError(
                    path,
                    number,
                    column,
                    f"byte {raw[e.start]:#04x} is not UTF-8 text; save the file as UTF-8",
                )
    return None


def _locate_parse_error(path: str, columns: Sequence[str], err: Exception) -> DataFormatError:
    pa = pyarrow()
    seen: list[int] = []

    def handler(row):
        seen.append(row.number)
        return "error"

    try:  # single-threaded, so pyarrow knows the row number
        pa.csv.read_csv(
            path,
            read_options=pa.csv.ReadOptions(use_threads=False),
            parse_options=pa.csv.ParseOptions(invalid_row_handler=handler),
            convert_options=pa.csv.ConvertOptions(
                include_columns=list(columns), column_types={c: pa.string() for c in columns}
            ),
        )
    except pa.ArrowInvalid:
        pass
    line = seen[0] if seen else None
    problem = str(err).split(": ", 1)[-1] if "parse error" in str(err) else str(err)
    return DataFormatError(path, line, None, f"malformed row: {problem}")


def read_table(path: str, columns: dict[str, object], required: Iterable[str] = ()):
    """Read these columns (name -> pyarrow type) of a CSV file with a header row.

    Empty cells become nulls; a column named in ``required`` must have none. Raises
    DataFormatError naming file, line and column for a missing column, an empty required
    cell, a value that does not parse as its type, or a row with the wrong number of cells.
    """
    pa = pyarrow()
    header = read_header(path)
    for name in columns:
        if name not in header:
            raise DataFormatError(path, 1, name, f"missing column; the header has {header}")
    convert = pa.csv.ConvertOptions(
        column_types=dict(columns),
        include_columns=list(columns),
        null_values=[""],
        strings_can_be_null=True,
    )
    try:
        table = pa.csv.read_csv(path, convert_options=convert)
    except pa.ArrowInvalid as err:
        not_utf8 = _locate_bad_utf8(path, header)  # pyarrow reports these without a line
        if not_utf8 is not None:
            raise not_utf8 from None
        if "CSV parse error" in str(err):
            raise _locate_parse_error(path, columns, err) from None
        try:
            raw = pa.csv.read_csv(
                path,
                convert_options=pa.csv.ConvertOptions(
                    column_types={c: pa.string() for c in columns},
                    include_columns=list(columns),
                    null_values=[""],
                    strings_can_be_null=True,
                ),
            )
        except pa.ArrowInvalid as err2:
            raise DataFormatError(path, None, None, str(err2)) from None
        for name, typ in columns.items():
            if typ == pa.string():
                continue
            col = raw.column(name).combine_chunks()
            bad = _first_bad(col, typ)
            if bad >= 0:
                raise DataFormatError(
                    path, bad + 2, name, f"malformed value {col[bad].as_py()!r}; expected {typ}"
                ) from None
        raise DataFormatError(path, None, None, str(err)) from None
    for name in required:
        col = table.column(name)
        if col.null_count:
            first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataFormatError(path, first + 2, name, "empty value")
    return table


def int_column(table, name: str, path: str, sentinels: Sequence[int] = ()) -> object:
    """A float- or int-typed column as nullable int64: every value must be integral
    ("1.0" is written for 1); the sentinels become null."""
    pa = pyarrow()
    pc = pa.compute
    col = table.column(name).combine_chunks()
    if pa.types.is_floating(col.type):
        vals = col.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~np.isnan(vals) & (vals != np.round(vals)))
        if bad.size:
            raise DataFormatError(
                path,
                int(bad[0]) + 2,
                name,
                f"malformed value {float(vals[bad[0]])!r}; expected an integer",
            )
        col = pc.cast(col, pa.int64())
    for s in sentinels:
        col = pc.if_else(pc.equal(col, s), pa.scalar(None, pa.int64()), col)
    return col


# ------------------------------------------------------------------ writing


def _string(pa, arr):
    return arr if arr.type == pa.large_string() else pa.compute.cast(arr, pa.large_string())


def quoted(arr):
    """Strings quoted as CSV needs: values with a comma, quote or newline are wrapped in
    quotes (inner quotes doubled); nulls become empty cells."""
    pa = pyarrow()
    pc = pa.compute
    s = _string(pa, arr)
    needs = pc.match_substring_regex(s, '[,"\r\n]')
    q = pa.scalar('"', pa.large_string())
    wrapped = pc.binary_join_element_wise(
        q, pc.replace_substring(s, '"', '""'), q, pa.scalar("", pa.large_string())
    )
    return pc.fill_null(pc.if_else(needs, wrapped, s), pa.scalar("", pa.large_string()))


def write_rows(f, columns: Sequence[object]) -> None:
    """Append rows to an open binary file: columns are pyarrow arrays of equal length (already
    formatted as strings where the format matters; numbers are cast), joined with commas."""
    pa = pyarrow()
    pc = pa.compute
    if len(columns[0]) == 0:
        return
    cells = [pc.fill_null(_string(pa, c), pa.scalar("", pa.large_string())) for c in columns]
    line = pc.binary_join_element_wise(*cells, pa.scalar(",", pa.large_string()))
    line = pc.binary_join_element_wise(
        line, pa.scalar("", pa.large_string()), pa.scalar("\n", pa.large_string())
    )
    offsets = np.frombuffer(line.buffers()[1], dtype=np.int64)
    start, stop = int(offsets[line.offset]), int(offsets[line.offset + len(line)])
    f.write(memoryview(line.buffers()[2])[start:stop])


def write_csv(
    path: str, header: Sequence[str], columns: Sequence[object], chunk: int = 2_000_000
) -> None:
    """Write a header line and rows (see write_rows), chunk rows at a time to bound memory;
    atomically."""

    def write(f) -> None:
        f.write((",".join(header) + "\n").encode())
        for lo in range(0, len(columns[0]), chunk):
            write_rows(f, [c.slice(lo, chunk) for c in columns])

    _io.atomic_write(path, write)
