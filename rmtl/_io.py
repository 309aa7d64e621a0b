"""Files: every write is atomic (unique temporary name in the target directory, fsync,
rename, fsync of the directory), and every .npz read turns a damaged file into one clear
error naming it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from typing import IO, Any, Callable, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
# where save_npz writes and open_npz reads: a path, or an in-memory binary file (io.BytesIO)
# for the bytes of a file that never touches the disk
Target = Union[str, "os.PathLike[str]", io.BytesIO]


def _name(target: Target) -> str:
    return "<in-memory .npz>" if isinstance(target, io.BytesIO) else os.fspath(target)


class CorruptFileError(ValueError):
    """A file exists but cannot be read: truncated, damaged, or not the expected format.
    ``path`` names it.

    Parameters
    ----------
    path : str, os.PathLike or io.BytesIO
        The file (an in-memory one is named ``<in-memory .npz>``); its name is kept as the
        ``path`` attribute.
    problem : str
        What is wrong with it; the message is ``"<path>: <problem>"``.
    """

    def __init__(self, path: Target, problem: str) -> None:
        self.path = _name(path)
        super().__init__(f"{self.path}: {problem}")


# the names the project's temporary files and directories take (tempfile.mkstemp and
# mkdtemp: 8 characters of [a-z0-9_] between a prefix ".<name>." and the suffix ".tmp"):
# atomic_write's files and the staging directories of :func:`staged_directory`
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(
    directory: PathLike, before: float, recursive: bool = True
) -> list[str]:
    """Remove the temporary files of :func:`atomic_write` and the staging directories of
    :func:`staged_directory` (with everything in them) that a kill left in ``directory``
    (and at any depth below it with ``recursive``): only names matching :data:`TEMP_NAME`,
    and only those last changed before the time ``before`` (``time.time()``), so a write
    still running elsewhere keeps its file. Returns the paths removed; what cannot be
    removed is left."""
    removed = []
    for root, dirs, files in os.walk(os.fspath(directory)):
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if TEMP_NAME.fullmatch(name) and os.stat(path).st_mtime < before:
                    os.unlink(path)
                    removed.append(path)
        for name in list(dirs):
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if TEMP_NAME.fullmatch(name) and os.lstat(path).st_mtime < before:
                    dirs.remove(name)
                    shutil.rmtree(path)
                    removed.append(path)
        if not recursive:
            dirs.clear()
    return removed


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) for the block, then deliver it to the handler that was
    there before (Python's raises KeyboardInterrupt): a few renames that must all happen or
    none run to the end. Off the main thread (where signals cannot be handled) the block
    just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


def publish(stage: str, directory: str, names: list[str], replaces: tuple[str, ...]) -> list[str]:
    """Move the files ``names`` from the staging directory ``stage`` into ``directory``
    (renames within one file system), and remove the files of ``replaces`` there that
    ``names`` leaves out, so that ``directory`` holds one complete set of them: an
    interrupt (SIGINT) waits until every rename is done. Returns the paths published."""
    with sigint_deferred():
        published = []
        for name in names:
            path = os.path.join(directory, name)
            os.replace(os.path.join(stage, name), path)
            published.append(path)
        for name in replaces:
            if name not in names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
        _fsync_dir(directory)
    return published


@contextlib.contextmanager
def staged_directory(directory: PathLike, what: str) -> Iterator[str]:
    """A fresh staging directory ``.<what>.XXXXXXXX.tmp`` inside ``directory`` (a name
    :func:`remove_stale_temporaries` recognises), removed with what is left in it when the
    block ends, however it ends."""
    stage = tempfile.mkdtemp(prefix=f".{what}.", suffix=".tmp", dir=os.fspath(directory))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def check_out_directory(out: str, names: tuple[str, ...], option: str = "--out") -> None:
    """Before any work: ``out`` must be (or become) a writable directory with no directory in
    the way of the files ``names`` to write there; errors name ``option`` and the path."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"{option}: {out} exists and is not a directory; choose another path")
    blocked = [n for n in names if os.path.isdir(os.path.join(out, n))]
    if blocked:
        raise FileExistsError(
            f"{option}: {os.path.join(out, blocked[0])} is a directory in the way of an output file"
        )
    os.makedirs(out, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"{option}: {out} is not writable")


def write_set(
    out: str,
    writers: Mapping[str, Union[str, Callable[[IO[bytes]], Any]]],
    replaces: tuple[str, ...],
    option: str = "--out",
) -> list[str]:
    """Write the files of ``writers`` (name: text, written as UTF-8, or ``write(f)``) into
    ``out`` as one set: each
    into a staging directory inside ``out`` first, then all renamed into place together
    (:func:`publish`: a Ctrl-C waits for the renames; the files of ``replaces`` the set
    leaves out are removed), so ``out`` holds the earlier set if writing fails or is
    interrupted, this one once it returns. A failed write is an OSError naming ``option``
    and the output file. Returns the paths published."""
    os.makedirs(out, exist_ok=True)
    with staged_directory(out, "outputs") as stage:
        for name, content in writers.items():
            write = _text_writer(content) if isinstance(content, str) else content
            try:
                atomic_write(os.path.join(stage, name), write)
            except OSError as e:
                raise OSError(
                    e.errno, f"{option}: cannot write {os.path.join(out, name)}: {e.strerror or e}"
                ) from e
        return publish(stage, out, list(writers), replaces)


def atomic_write(path: Target, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a fresh temporary file next to ``path``, flush and fsync it, then
    rename it to exactly ``path`` and fsync the directory. Readers see the old file or the
    whole new one, never a part; concurrent writers never share a temporary file. On any
    error (including KeyboardInterrupt) the temporary file is removed and ``path`` is left
    as it was. An in-memory ``path`` (io.BytesIO) is written directly."""
    if isinstance(path, io.BytesIO):
        write(path)
        return
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):  # directories cannot be opened for fsync everywhere
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _text_writer(text: str) -> Callable[[IO[bytes]], Any]:
    return lambda f: f.write(text.encode("utf-8"))


def write_text(path: PathLike, text: str) -> None:
    """Atomically write UTF-8 text to ``path``."""
    atomic_write(path, _text_writer(text))


def write_json(path: PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=1))


def save_npz(path: Target, arrays: Mapping[str, np.ndarray], documents: Mapping[str, Any]) -> None:
    """Atomically write arrays and JSON ``documents`` (stored as uint8 bytes, read back with
    ``open_npz(...).json(key)``) to one .npz file at exactly ``path`` (nothing appended), or
    into an in-memory file (io.BytesIO)."""
    items: dict[str, np.ndarray] = dict(arrays)
    for key, doc in documents.items():
        items[key] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    atomic_write(path, lambda f: np.savez(f, **items))


_DAMAGED = (
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    OSError,
    ValueError,
    KeyError,
    UnicodeDecodeError,
)


@contextlib.contextmanager
def open_npz(path: Target, what: str) -> Iterator[Any]:
    """The opened .npz file ``path`` (a mapping of arrays; or an in-memory file, io.BytesIO);
    FileNotFoundError when missing and :class:`CorruptFileError` naming the file when it is
    damaged or not an .npz archive. Errors raised by the caller's own checks inside the block
    pass through unchanged."""
    if not isinstance(path, io.BytesIO):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"path: no such file: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except _DAMAGED as e:
        raise CorruptFileError(
            path,
            f"not a readable {what} file ({type(e).__name__}: {e}); it may be truncated or damaged",
        ) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise CorruptFileError(path, f"not an rmtl {what} file (expected an .npz archive)")
    with z:
        yield _Checked(z, _name(path), what)


class _Checked:
    """An open NpzFile whose member reads turn damage into CorruptFileError."""

    def __init__(self, z: Any, path: str, what: str) -> None:
        self._z, self.path, self.what, self.files = z, path, what, z.files

    def __contains__(self, key: str) -> bool:
        return key in self.files

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.files:
            raise CorruptFileError(self.path, f"not an rmtl {self.what} file (no {key!r})")
        try:
            return self._z[key]
        except _DAMAGED as e:
            raise CorruptFileError(
                self.path,
                f"member {key!r} cannot be read ({type(e).__name__}: {e}); "
                "the file may be truncated or damaged",
            ) from None

    def get(self, key: str) -> Any:
        return self[key] if key in self.files else None

    def json(self, key: str) -> Any:
        """A JSON document stored as uint8 bytes."""
        try:
            return json.loads(bytes(self[key]).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptFileError(self.path, f"member {key!r} is not valid JSON ({e})") from None
