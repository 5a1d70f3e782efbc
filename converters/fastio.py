"""Output helpers: many small files written by a background thread, JSON encoding.

``SmallFiles`` writes files into one directory with ``os.open``/``os.write`` (no ``open()`` and
no text wrapper per file) on one background thread, so the file system's work overlaps with the
conversion. Writes are applied in the order they were asked for (a later write of the same name
wins, as with direct writes) and the queue is bounded, so memory does not grow with the number
of files. The first error (disk full, name too long...) is raised from the next call, or from
``close()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

try:  # optional accelerator, never required
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

__all__ = ["FilesJob", "SmallFiles", "compact_json", "create_new_files", "exact_orjson", "float_texts", "indented_json",
           "indented_json_bytes", "json_number", "json_string", "replacing", "write_all", "write_chunks",
           "write_joined"]

_json_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_json_indented = json.JSONEncoder(ensure_ascii=False, indent=2).encode
_INDENT_2 = _orjson.OPT_INDENT_2 if _orjson is not None else 0
# orjson writes a float that the json module writes with an exponent (1e-05, 1e+16) as 0.00001
# or 1e16; a number ends where a "," "]" "}" or line break follows (or the text ends). A match
# inside a string only sends the value to the json module (so does "e-" before an end, which no
# number holds). The "-" is not optional ("e-?[0-9]+"): the search stops at every "e" of the
# keys and strings, and an optional part costs a step more at each (~40% of the search's time).
EXPONENT = re.compile(rb"e[-0-9][0-9]*(?:[,\]}\n]|\Z)")
# The floats from 1e-05 to 9.9e-05 orjson writes 0.00001 to 0.000099: a number that starts
# "0.0000" (10.00001 holds those digits too, and both write it alike).
_SMALL = re.compile(rb"0\.0000(?<![0-9.]0\.0000)")  # (a literal first: found fast)


def compact_json(value: object, finite: bool = False) -> str:
    """Exactly ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``, faster.

    orjson (when installed) writes the same bytes except for floats that Python writes with an
    exponent (``1e-05``, ``1e+16``), NaN/Infinity (orjson: ``null``), integers beyond 64 bits and
    non-string keys (orjson: error). Output that may hold any of these (``EXPONENT``, a number
    starting ``0.0000``, ``null`` where the value has a NaN) or that orjson refuses is made by
    the json module instead. ``finite``: the value holds no NaN or infinity (it was decoded from JSON),
    no need to look through it where its JSON has a ``null``.
    """
    return _json_text(value, 0, _json_compact, finite)


def indented_json(value: object, finite: bool = False) -> str:
    """Exactly ``json.dumps(value, indent=2, ensure_ascii=False)`` (whose encoder is written in
    Python: the json module has no C encoder for indented output), faster; as ``compact_json``.
    ``finite``: the value holds no NaN or infinity (it was decoded from JSON), no need to look."""
    return _json_text(value, _INDENT_2, _json_indented, finite)


def indented_json_bytes(value: object, finite: bool = False) -> bytes:
    """``indented_json(value, finite)`` encoded in UTF-8 (orjson's bytes as they are)."""
    raw = exact_orjson(value, _INDENT_2, finite)
    return _json_indented(value).encode("utf-8") if raw is None else raw


def _json_text(value: object, option: int, encode: Callable[[object], str], finite: bool = False) -> str:
    raw = exact_orjson(value, option, finite)
    return encode(value) if raw is None else raw.decode("utf-8")


def exact_orjson(value: object, option: int = 0, finite: bool = False) -> bytes | None:
    """orjson's JSON of ``value`` when it is the json module's (see ``compact_json``), else None
    (also without orjson). ``finite``: the value is known to hold no NaN or Infinity."""
    if _orjson is None:
        return None
    try:
        raw = _orjson.dumps(value, option=option)
    except TypeError:
        return None
    if _spelt_otherwise(raw) or not finite and b"null" in raw and _non_finite(value):
        return None
    return raw


def number_lines(rows: list[list]) -> bytes:
    """Each row of numbers (ints and floats) as a line of them, space-separated, each as ``str()``
    writes it, the lines joined by newlines (none after the last): YOLO's label lines. Written by
    orjson in one call where its numbers are ``str()``'s (``exact_orjson``): a float's ``str()``
    costs more than the rest of the line."""
    raw = exact_orjson(rows)
    if raw is None:
        return "\n".join([" ".join(map(str, row)) for row in rows]).encode()
    return raw[2:-2].replace(b"],[", b"\n").replace(b",", b" ")


def _spelt_otherwise(raw: bytes) -> bool:
    """Whether orjson's JSON may hold a float that the json module writes otherwise."""
    return (b"0.0000" in raw and _SMALL.search(raw) is not None) or EXPONENT.search(raw) is not None


_float_repr = float.__repr__
_int_repr = int.__repr__


def json_number(value: object) -> str:
    """``compact_json`` of one value, fast for finite floats and ints (the json module writes
    those with their ``repr``); anything else goes through ``compact_json``."""
    kind = type(value)
    if kind is float:
        if value - value == 0.0:  # type: ignore[operator]  # finite (NaN and infinities are not)
            return _float_repr(value)  # type: ignore[arg-type]
    elif kind is int:
        return _int_repr(value)  # type: ignore[arg-type]
    elif value is None:  # (COCO's size of an image without regions)
        return "null"
    return compact_json(value)


def float_texts(values: list[float]) -> list[str]:
    """``repr`` of each finite float (as the json module writes it), made by one orjson call for
    all of them when orjson is installed: Python's ``repr`` of a float with many digits (David
    Gay's algorithm) costs more than the arithmetic that made it. A float that orjson writes
    otherwise (``1e-05``: ``0.00001``; ``1e+16``: ``1e16``) gets its ``repr``."""
    if _orjson is None or not values:
        return [_float_repr(v) for v in values]
    raw = _orjson.dumps(values)
    texts = raw.decode("ascii")[1:-1].split(",")
    if _spelt_otherwise(raw):
        for i, text in enumerate(texts):
            if "e" in text or text.startswith(("0.0000", "-0.0000")):
                texts[i] = _float_repr(values[i])
    return texts


def json_string(value: str) -> str:
    """``compact_json`` of a string (orjson escapes strings as the json module does)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(value).decode("utf-8")
        except TypeError:  # lone surrogates
            pass
    return _json_compact(value)


_INF = float("inf")


def _non_finite(value: object) -> bool:
    """True if ``value`` holds a NaN or infinite float anywhere (orjson writes those as null)."""
    if isinstance(value, float):
        return value != value or value == _INF or value == -_INF
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False

_BATCH = 512  # files per hand-over to the writer thread
_MAX_PENDING = 16  # batches queued at most

_CREATE = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_REPLACE = _CREATE | os.O_TRUNC
_NEW = _CREATE | os.O_EXCL


class SmallFiles:
    """Writes small files into ``directory`` (which must exist) from a background thread."""

    def __init__(self, directory: Path, threaded: bool = True) -> None:
        self.directory = Path(directory)
        self._dir_fd: int | None = None
        if hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd:
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        self._batch: list[tuple[str, bytes | None]] = []
        self._queue: deque[list[tuple[str, bytes | None]]] = deque()
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="converters-writer", daemon=True)
            self._thread.start()

    # ----------------------------------------------------------------- producer side

    def write(self, name: str, data: bytes) -> None:
        """Create or replace ``name`` with ``data``."""
        self._batch.append((name, data))
        if len(self._batch) >= _BATCH:
            self._flush()

    def touch(self, name: str) -> None:
        """Create ``name`` empty unless it exists (an existing file keeps its content)."""
        self._batch.append((name, None))
        if len(self._batch) >= _BATCH:
            self._flush()

    def close(self) -> None:
        """Write everything still queued; raises the first write error."""
        if self._closed:
            return
        try:
            self._flush()
            if self._thread is not None:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                self._thread.join()
        finally:
            self._closed = True
            if self._dir_fd is not None:
                os.close(self._dir_fd)
                self._dir_fd = None
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop without raising (used when the conversion itself failed)."""
        self._batch = []
        with self._cond:
            self._queue.clear()
        try:
            self.close()
        except BaseException:  # noqa: BLE001 - the conversion's own error is the one to report
            pass

    def __enter__(self) -> SmallFiles:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if self._error is not None:
            raise self._error
        if not batch:
            return
        if self._thread is None:
            self._write_batch(batch)
            return
        with self._cond:
            while len(self._queue) >= _MAX_PENDING and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._queue.append(batch)
            self._cond.notify_all()

    # ----------------------------------------------------------------- writer side

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._queue.popleft()
                self._cond.notify_all()
            try:
                self._write_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the producer
                with self._cond:
                    self._error = exc
                    self._queue.clear()
                    self._cond.notify_all()
                return

    def _write_batch(self, batch: list[tuple[str, bytes | None]]) -> None:
        dir_fd = self._dir_fd
        prefix = "" if dir_fd is not None else os.fspath(self.directory) + os.sep
        opener = os.open
        close = os.close
        for name, data in batch:
            try:
                if data is None:
                    close(opener(prefix + name, _CREATE, 0o666, dir_fd=dir_fd))
                    continue
                fd = opener(prefix + name, _REPLACE, 0o666, dir_fd=dir_fd)
            except OSError as exc:
                exc.filename = os.path.join(self.directory, name)
                raise
            try:
                write_all(fd, data)
            finally:
                close(fd)


def write_joined(write: Callable[[Any], object], chunks: Iterable[Any], sep: Any) -> None:
    """Write ``chunks`` (all str or all bytes, none empty) joined by ``sep``, in writes of about
    1 MB: a write per chunk would cost a call into the file each, and joining them all, memory."""
    pending: list[Any] = []
    size = 0
    first = True
    for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= 1 << 20:
            write(sep.join(pending) if first else sep + sep.join(pending))
            pending, size, first = [], 0, False
    if pending:
        write(sep.join(pending) if first else sep + sep.join(pending))


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the file descriptor ``fd``."""
    written = os.write(fd, data)  # small files: all of it, nearly always
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view):]


def create_new_files(dir_fd: int, files: list[tuple[str, bytes | None]]) -> list[tuple[str, bytes | None, bool]]:
    """Create each file (None: empty) in the directory ``dir_fd`` unless it exists: (name, data,
    created). A file that exists (or cannot be made) is left alone, for the caller to handle."""
    out = []
    for name, data in files:
        try:
            fd = os.open(name, _NEW, 0o666, dir_fd=dir_fd)
        except OSError:
            out.append((name, data, False))
            continue
        try:
            if data:
                write_all(fd, data)
        except OSError:
            out.append((name, data, False))  # written again by the caller, who sees the error
            continue
        finally:
            os.close(fd)
        out.append((name, data, True))
    return out


class FilesJob:
    """Base of the per-task jobs (``parallel.Job``) whose payloads are files in one directory:
    [(name, bytes, or None for an empty file that must not replace one)].

    A chunk is [(name, bytes or None, created)]. Worker processes create the files that do not
    exist yet themselves (``created`` True), so that the file system's work is spread over them;
    the main process writes the rest (``write_chunks``), and writes again a name that a worker
    created but that an earlier task (in task order) also has, so the files end as if written in
    task order.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory  # None: workers create nothing (no dir_fd support)
        self._dir_fd: int | None = None  # in a worker: where it creates files

    def start_worker(self) -> None:
        if self.directory is not None:
            self._dir_fd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))

    def combine(self, payloads: list[list[tuple[str, bytes | None]]]) -> list[tuple[str, bytes | None, bool]]:
        # What writing them in task order leaves: the last content a name gets (an empty entry
        # after content leaves that content); so a name is written once per chunk.
        final: dict[str, bytes | None] = {}
        for files in payloads:
            for name, data in files:
                if data is not None or name not in final:
                    final[name] = data
        if self._dir_fd is None:
            return [(name, data, False) for name, data in final.items()]
        return create_new_files(self._dir_fd, list(final.items()))


def write_chunks(directory: Path, chunks: Iterator[list[tuple[str, bytes | None, bool]]]) -> None:
    """Write the files of ``FilesJob`` chunks (in task order) that a worker did not create, or
    that an earlier task also has.

    Workers create files with ``O_EXCL``, so of the tasks naming one file at most one worker
    created it; every other task's file is written here, in task order. When the worker that
    created it served a later task than one written here, that later task's file must be
    written again, after. So only the names written here are remembered (a file named by two
    tasks, or there before the conversion: few), not every file's: memory stays flat."""
    here: set[str] = set()
    with SmallFiles(directory) as files:
        for chunk in chunks:
            for name, data, created in chunk:
                if not created or name in here:
                    if data is None:
                        files.touch(name)  # an existing file keeps its content
                    else:
                        files.write(name, data)
                    here.add(name)


@contextlib.contextmanager
def replacing(path: Path, encoding: str | None = None) -> Iterator[Any]:
    """A new file for ``path``'s content, open for reading and writing (binary, or text in
    ``encoding``, with ``open()``'s newline handling): written under a hidden
    temporary name beside it, renamed to ``path`` when the block completes (a reader never sees
    half of it), removed if the block fails. Unlike ``tempfile``'s files (0600) it gets the
    permissions of any file this process creates."""
    while True:
        name = os.path.join(path.parent, f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        break
    try:
        with os.fdopen(fd, "w+b" if encoding is None else "w+", encoding=encoding) as f:
            yield f
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    os.replace(name, path)


def zip_dir(src: Path, target: Path) -> None:
    """Pack the tree under ``src`` into the zip file ``target`` (sorted, directories included)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel_root = Path(root).relative_to(src)
            if rel_root != Path("."):
                zf.write(root, f"{rel_root.as_posix()}/")
            for name in sorted(files):
                zf.write(Path(root) / name, (rel_root / name).as_posix())
