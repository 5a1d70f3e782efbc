"""Local directory target: ``file:///path`` or a plain path.

Writes go to a temporary file in this process's own folder of ``<root>/.syncd-tmp/``, are
fsynced, and renamed into place (same filesystem, so the rename is atomic): a reader, or a crash,
never sees half an object. ``put_many`` does this for a batch with one flush of the filesystem
for all its files (group commit) instead of one per file. Each process holds a lock on its
folder, so another syncd on the same directory removes only what a killed process left, never a
write in progress.

Nothing is ever written, renamed or removed through a symbolic link: the folders of a key are
opened one by one below the target with ``O_NOFOLLOW`` (a link where a folder should be is an
error naming it), temporary files are created with ``O_EXCL | O_NOFOLLOW``, and ``.syncd-tmp``
must be a real directory. The etag of an object is its inode and modification time (rclone
compares local files by size and time); its sha256 is its content's, computed by ``head``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import heapq
import json
import os
import re
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from syncd.errors import ConfigError, StoreError
from syncd.keys import TMP_DIR
from syncd.stores.base import ObjectInfo, RetryingStore

LOCK_NAME = ".lock"
SORT_RUN = 50_000  # names of a folder sorted in memory at a time when listing (see _names_in_order)
STALE_SECONDS = 600  # a loose temporary file (of a syncd before per-process folders) this old is a leftover


def _path_from_url(url: str) -> Path:
    if "://" not in url:
        return Path(url).expanduser().absolute()
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ConfigError(f"target {url!r}: file:// URLs take an absolute path (file:///path/to/dir)")
    return Path(unquote(parsed.path)).absolute()


class LocalStore(RetryingStore):
    """A directory on a local (or mounted) filesystem."""

    _max_attempts = 3  # EAGAIN, EINTR, EBUSY: a busy network filesystem
    listing_hashes = False  # a listing gives size and modification time; head reads the content

    def __init__(self, root: Path):
        self.root = root
        self._root = str(root)
        self.url = root.as_uri()  # canonical: the default state file is named after it
        self.identity = self.url
        self._work: str | None = None  # this process's folder in .syncd-tmp
        self._work_lock: int | None = None
        self._making = threading.Lock()

    @classmethod
    def from_url(cls, url: str, options: dict[str, Any], *, transfers: int = 8) -> LocalStore:
        if options:
            raise ConfigError(f"target {url!r}: a local directory takes no options "
                              f"(got {', '.join(sorted(options))})")
        return cls(_path_from_url(url))

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _where(self, key: str) -> str:
        # Named in every request (for retry messages): a plain join, as a Path per object costs
        # time, and pathlib interns every part of every key it parses.
        return os.path.join(self._root, *key.split("/"))

    def _error(self, action: str, key: str, exc: Exception, *, listing: bool = False) -> StoreError:
        errno_ = getattr(exc, "errno", None)
        fatal = errno_ in (errno.EROFS, errno.ENOSPC, errno.EDQUOT)
        reason = getattr(exc, "strerror", None) or exc
        if errno_ in (errno.ELOOP, errno.ENOTDIR) and action != "read":
            reason = "a symbolic link or a file stands where a folder should be; syncd writes nothing through links"
        return StoreError(f"cannot {action} {self._path(key)}: {reason}", fatal=fatal,
                          retryable=errno_ in (errno.EAGAIN, errno.EINTR, errno.EBUSY))

    # -------------------------------------------------------------- safe paths

    @contextmanager
    def _folder(self, parts: list[str], create: bool) -> Iterator[int]:
        """A file descriptor of the folder ``root/parts...``, opened step by step without following
        a link (``FileNotFoundError`` when it is missing and not ``create``)."""
        fd = self._open_folder(parts, create)
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_folder(self, parts: list[str], create: bool) -> int:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts:
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _tmp_folder(self) -> str:
        """This process's folder in ``.syncd-tmp``, made (and locked) on first use."""
        with self._making:
            if self._work is None:
                self._make_tmp_folder()
            return self._work

    def _make_tmp_folder(self) -> None:
        self._check_tmp_dir()
        name = uuid.uuid4().hex
        with self._folder([TMP_DIR], create=True) as tmp_fd:
            os.mkdir(name, 0o700, dir_fd=tmp_fd)
        with self._folder([TMP_DIR, name], create=False) as fd:
            lock = os.open(LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._work, self._work_lock = name, lock

    def _check_tmp_dir(self) -> None:
        try:
            st = os.lstat(self.root / TMP_DIR)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise StoreError(f"{self.root / TMP_DIR} is {kind}; syncd keeps its temporary files there and "
                             "never writes through a link: remove it (syncd makes the folder itself)", fatal=True)

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"target directory {self.root} cannot be created: {exc.strerror}; "
                             "create it or choose another target", fatal=True) from None
        if not self.root.is_dir():
            raise StoreError(f"target {self.root} is not a directory; choose a directory", fatal=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreError(f"target directory {self.root} is not writable by this user; "
                             "fix its permissions or choose another target", fatal=True)
        self._check_tmp_dir()
        try:
            self._clear_leftovers()
        except OSError as exc:
            raise StoreError(f"cannot clear {self.root / TMP_DIR}: {exc.strerror}", fatal=True) from None

    def _clear_leftovers(self) -> None:
        """Remove what killed processes left in ``.syncd-tmp``: folders whose lock nobody holds,
        and loose temporary files older than ``STALE_SECONDS``. Never follows a link."""
        try:
            with self._folder([TMP_DIR], create=False) as tmp_fd:
                for entry in os.scandir(tmp_fd):
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name != self._work:
                            _remove_abandoned(tmp_fd, entry.name)
                    elif entry.is_symlink() or time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                        os.unlink(entry.name, dir_fd=tmp_fd)
        except FileNotFoundError:
            return

    # -------------------------------------------------------------- the Store interface

    def put(self, key: str, data: bytes, sha256: str) -> str | None:
        [result] = self.put_many([(key, data, sha256)])
        if isinstance(result, StoreError):
            raise result
        return result

    def put_many(self, items: Sequence[tuple[str, bytes, str]]) -> list[str | StoreError]:
        """Write several objects, made durable together (group commit): each goes to a temporary
        file, all are flushed to disk at once (one ``syncfs``, where the kernel reports write
        errors through it; else an ``fdatasync`` each), then renamed into place, and each folder
        written to is fsynced once. Returns, in order, each object's etag or the ``StoreError``
        that kept it from being written: only objects with an etag are durable in place.

        Not part of the Store interface: a local disk pays a flush per fsync, and grouping them
        is what makes a million objects take minutes, not hours; cloud stores have no such
        cost (each PUT is durable when acknowledged) and keep their one ``put`` per object.
        ``Syncer`` uses this method when a store has it."""
        results: list[str | StoreError | None] = [None] * len(items)
        grouped = len(items) > 1 and _syncfs is not None
        first = items[0][0] if items else ""
        try:
            work = self.call("write", first, self._tmp_folder)
            work_fd = self.call("write", first, lambda: self._open_folder([TMP_DIR, work], create=False))
        except StoreError as exc:
            return [exc] * len(items)
        folders: dict[tuple[str, ...], int] = {}
        try:
            staged: list[tuple[int, str]] = []  # (index, temporary name)
            for i, (key, data, _sha256) in enumerate(items):
                if key.split("/", 1)[0] == TMP_DIR:
                    results[i] = StoreError(f"key {key!r} is reserved for syncd's temporary files")
                    continue
                try:
                    staged.append((i, self.call("write", key, lambda data=data: _stage(work_fd, data, not grouped))))
                except StoreError as exc:
                    results[i] = exc
            if grouped and staged:
                try:
                    self.call("write", items[staged[0][0]][0], lambda: _syncfs(work_fd))
                except StoreError as exc:
                    for i, tmp in staged:
                        results[i] = exc
                        _unlink(tmp, work_fd)
                    staged = []
            placed: dict[int, list[tuple[int, str]]] = {}  # folder fd -> (index, etag) renamed into it

            def rename(key: str, tmp: str) -> tuple[int, str]:
                *path, name = key.split("/")
                dir_fd = _opened(folders, path, self._open_folder)
                os.replace(tmp, name, src_dir_fd=work_fd, dst_dir_fd=dir_fd)
                return dir_fd, _etag(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))

            for i, tmp in staged:
                try:
                    dir_fd, etag = self.call("write", items[i][0], lambda key=items[i][0], tmp=tmp: rename(key, tmp))
                except StoreError as exc:
                    results[i] = exc
                    _unlink(tmp, work_fd)
                    continue
                placed.setdefault(dir_fd, []).append((i, etag))
            for dir_fd, renamed in placed.items():
                try:
                    # The renames are durable only once the folder's entries are on disk.
                    self.call("write", items[renamed[0][0]][0], lambda dir_fd=dir_fd: os.fsync(dir_fd))
                except StoreError as exc:
                    renamed = [(i, exc) for i, _etag in renamed]
                for i, result in renamed:
                    results[i] = result
        finally:
            for fd in folders.values():
                os.close(fd)
            os.close(work_fd)
        return results  # type: ignore[return-value]  # every item has its etag or error by now

    def delete(self, key: str) -> None:
        *folders, name = key.split("/")

        def request() -> None:
            try:
                with self._folder(folders, create=False) as dir_fd:
                    os.unlink(name, dir_fd=dir_fd)  # a link is removed, never what it points to
                    os.fsync(dir_fd)
            except FileNotFoundError:
                return

        self.call("delete", key, request)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        yield from self._walk(str(self.root), "", prefix)

    def _walk(self, directory: str, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        """The files below ``directory`` in key order: a folder sorts as its name plus "/"."""
        try:
            names = _names_in_order(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._error("list", rel + "*", exc, listing=True) from None
        for name in names:
            key = rel + name
            path = os.path.join(directory, name)
            if name.endswith("/"):
                # .syncd-tmp holds writes in progress (of a target nested here too): never objects
                if name != TMP_DIR + "/" and (key.startswith(prefix) or prefix.startswith(key)):
                    yield from self._walk(path[:-1], key, prefix)
                continue
            if not key.startswith(prefix):
                continue
            try:
                st = os.stat(path)  # a link to a file lists as that file
            except OSError:
                continue  # gone since listed, or a dangling link
            if stat.S_ISREG(st.st_mode):
                yield ObjectInfo(key, st.st_size, None, _etag(st))

    def get(self, key: str) -> bytes | None:
        def request() -> bytes | None:
            try:
                return self._path(key).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None

        return self.call("read", key, request)

    def head(self, key: str) -> ObjectInfo | None:
        def request() -> ObjectInfo | None:
            try:
                with open(self._path(key), "rb") as f:
                    data = f.read()
                    st = os.fstat(f.fileno())
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None
            return ObjectInfo(key, len(data), hashlib.sha256(data).hexdigest(), _etag(st))

        return self.call("read", key, request)

    def close(self) -> None:
        if self._work_lock is not None:
            work, self._work = self._work, None
            try:
                with self._folder([TMP_DIR], create=False) as tmp_fd:
                    _remove_folder(tmp_fd, work)
            except OSError:
                pass  # the next run removes it
            os.close(self._work_lock)
            self._work_lock = None


def _names_in_order(directory: str) -> Iterator[str]:
    """The names in ``directory`` in key order (a folder as its name plus "/"). A folder is read
    whole before the first name is given, sorted ``SORT_RUN`` names at a time: past one run,
    the sorted runs wait in temporary files and are merged, so listing a folder of a million
    objects (the default key template puts every object in the target's root) holds one run
    in memory, not a million names. Raises ``OSError`` when the folder cannot be read."""
    runs: list[IO[str]] = []
    try:
        batch: list[str] = []
        with os.scandir(directory) as it:
            for entry in it:
                batch.append(entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name)
                if len(batch) >= SORT_RUN:
                    runs.append(_spill(batch))
                    batch = []
    except BaseException:
        for run in runs:
            run.close()
        raise
    return _merged(sorted(batch), runs)


def _merged(batch: list[str], runs: list[IO[str]]) -> Iterator[str]:
    if not runs:
        yield from batch
        return
    try:
        yield from heapq.merge(batch, *((json.loads(line) for line in run) for run in runs))
    finally:
        for run in runs:
            run.close()


def _spill(names: list[str]) -> IO[str]:
    # One name a line as JSON: names may hold newlines, and undecodable bytes (as surrogates).
    run = tempfile.TemporaryFile("w+", encoding="utf-8")
    run.writelines(json.dumps(name) + "\n" for name in sorted(names))
    run.seek(0)
    return run


def _stage(work_fd: int, data: bytes, sync: bool) -> str:
    """Write ``data`` to a new temporary file in the folder ``work_fd`` (fsynced when ``sync``);
    its name."""
    tmp = f"{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=work_fd)
    try:
        try:
            os.fchmod(fd, 0o644)  # whatever the umask: readers of the target read it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        _unlink(tmp, work_fd)
        raise
    return tmp


def _unlink(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _opened(folders: dict[tuple[str, ...], int], path: list[str], open_folder: Callable[[list[str], bool], int]) -> int:
    """The folder ``path`` of a batch, opened once (and created) for all the keys it holds."""
    fd = folders.get(tuple(path))
    if fd is None:
        fd = folders[tuple(path)] = open_folder(path, True)
    return fd


def _load_syncfs() -> Callable[[int], None] | None:
    """``syncfs(2)``: flush every file of the filesystem holding ``fd`` in one call, or None.
    Only where it reports write errors (Linux 5.8 and later); elsewhere files are fsynced one
    by one."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        major, minor = (int(part) for part in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (AttributeError, OSError, ValueError):
        return None
    if (major, minor) < (5, 8):
        return None

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return syncfs


_syncfs = _load_syncfs()


def _etag(st: os.stat_result) -> str:
    # The inode changes with every write (a new file renamed into place), the modification time
    # with an edit in place: either tells that the file is not the one syncd wrote.
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}"


def _remove_abandoned(tmp_fd: int, name: str) -> None:
    """Remove the folder ``name`` of ``.syncd-tmp`` unless a running process holds its lock."""
    try:
        lock = os.open(f"{name}/{LOCK_NAME}", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=tmp_fd)
    except FileNotFoundError:
        lock = None
    except OSError:
        return
    try:
        if lock is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # in use by another syncd
        _remove_folder(tmp_fd, name)
    finally:
        if lock is not None:
            os.close(lock)


def _remove_folder(parent_fd: int, name: str) -> None:
    """Remove a folder of temporary files (no deeper folders), without following links."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    try:
        for entry in os.scandir(fd):
            if not entry.is_dir(follow_symlinks=False):
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)
