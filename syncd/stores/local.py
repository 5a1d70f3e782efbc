"""Local directory target: ``file:///path`` or a plain path.

Writes go to a temporary file in ``<root>/.syncd-tmp/``, are fsynced, and renamed into place
(same filesystem, so the rename is atomic): a reader, or a crash, never sees half an object,
and whatever a killed run left behind is in one directory that the next run empties. The content hash is the content's
own sha256: a directory has no metadata to keep it in, and reading back a small JSON file is
cheap.
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from syncd.errors import ConfigError, StoreError
from syncd.keys import TMP_DIR
from syncd.stores.base import ObjectInfo, RetryingStore


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

    def __init__(self, root: Path):
        self.root = root
        self.url = root.as_uri()  # canonical: the default state file is named after it

    @classmethod
    def from_url(cls, url: str, options: dict[str, Any], *, transfers: int = 8) -> LocalStore:
        if options:
            raise ConfigError(f"target {url!r}: a local directory takes no options "
                              f"(got {', '.join(sorted(options))})")
        return cls(_path_from_url(url))

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _where(self, key: str) -> str:
        return str(self._path(key))

    def _error(self, action: str, key: str, exc: Exception, *, listing: bool = False) -> StoreError:
        errno_ = getattr(exc, "errno", None)
        fatal = errno_ in (errno.EROFS, errno.ENOSPC, errno.EDQUOT)
        reason = getattr(exc, "strerror", None) or exc
        return StoreError(f"cannot {action} {self._path(key)}: {reason}", fatal=fatal,
                          retryable=errno_ in (errno.EAGAIN, errno.EINTR, errno.EBUSY))

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._clear_tmp()
        except OSError as exc:
            raise StoreError(f"target directory {self.root} cannot be created: {exc.strerror}; "
                             "create it or choose another target", fatal=True) from None
        if not self.root.is_dir():
            raise StoreError(f"target {self.root} is not a directory; choose a directory", fatal=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreError(f"target directory {self.root} is not writable by this user; "
                             "fix its permissions or choose another target", fatal=True)

    def _clear_tmp(self) -> None:
        # One syncd per target: files here are leftovers of a killed run, never objects.
        tmp_dir = self.root / TMP_DIR
        if tmp_dir.is_dir():
            for leftover in tmp_dir.iterdir():
                leftover.unlink(missing_ok=True)

    def put(self, key: str, data: bytes, sha256: str) -> None:
        if key.split("/", 1)[0] == TMP_DIR:
            raise StoreError(f"key {key!r} is reserved for syncd's temporary files")
        self.call("write", key, lambda: self._put(key, data))

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self.root / TMP_DIR / f"{uuid.uuid4().hex}.tmp"
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        _fsync_dir(path.parent)

    def delete(self, key: str) -> None:
        path = self._path(key)

        def request() -> None:
            try:
                path.unlink()
            except FileNotFoundError:
                return
            _fsync_dir(path.parent)

        self.call("delete", key, request)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                # writes in progress, or left by a killed run: never objects
                dirnames[:] = [d for d in dirnames if d != TMP_DIR]
            dirnames.sort()
            for name in sorted(filenames):
                key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    info = self.head(key)
                    if info is not None:
                        yield info

    def get(self, key: str) -> bytes | None:
        def request() -> bytes | None:
            try:
                return self._path(key).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None

        return self.call("read", key, request)

    def head(self, key: str) -> ObjectInfo | None:
        data = self.get(key)
        if data is None:
            return None
        return ObjectInfo(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest())

    def close(self) -> None:
        pass


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
