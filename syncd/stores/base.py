"""The storage adapter interface: what every target (local directory, S3, GCS, Azure) provides.

An adapter is deliberately small: put / get / delete / list / head. Everything else (planning,
retries per object, checkpoints, dry runs) lives above it, so each backend module stays a thin
layer over its SDK and one conformance suite can test them all alike.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from syncd import retry
from syncd.errors import StoreError

DEFAULT_MAX_ATTEMPTS = 5  # tries of one request in all (the option max_attempts of each backend)


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as the target reports it.

    ``key`` is relative to the target's prefix. ``sha256`` is the hex digest of the content as
    syncd recorded it when writing (object metadata on cloud stores, the content itself on a
    local directory); None when the object was not written by syncd, or when a listing does not
    carry it (S3, local: their listings give ``etag`` instead). ``etag`` is what the store says
    changes whenever the object does (S3's ETag, the MD5 of a single-part upload; a local file's
    modification time), as ``put`` returned it; None where the store has none.
    """

    key: str
    size: int
    sha256: str | None
    etag: str | None = None


class Store(Protocol):
    """A storage target. Keys are '/'-separated and relative to the target's prefix."""

    url: str
    identity: str  # where the objects live: scheme, bucket, prefix, endpoint or account (no credential)
    listing_hashes: bool  # listings carry each object's sha256 (else only its etag)
    stop: threading.Event | None  # once set, waits for a retry end at once

    def put(self, key: str, data: bytes, sha256: str) -> str | None:
        """Write ``data`` at ``key`` atomically (readers see the old or the new object, never
        a part), with ``sha256`` (hex digest of ``data``) stored alongside where the backend
        can hold metadata. Overwrites. Returns the object's ``etag`` as listings will show it
        (None where listings carry the sha256 instead)."""

    def get(self, key: str) -> bytes | None:
        """The object's content, or None when there is none. Errors are classified as for
        ``head`` (a missing bucket or container is fatal)."""

    def delete(self, key: str) -> None:
        """Remove ``key``. Removing a key that does not exist is not an error."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (by code point, as S3,
        GCS and Azure list), paginated lazily: one request per page, no request per object."""

    def head(self, key: str) -> ObjectInfo | None:
        """The object at ``key`` with its sha256 (when syncd wrote it) and etag, or None."""

    def check_writable(self) -> None:
        """Raise ``StoreError(fatal=True)`` with a clear message when the target does not
        exist or cannot be written (called once before a run writes anything)."""

    def close(self) -> None:
        """Release connections."""


class RetryingStore:
    """How an adapter runs each request: through ``call``, which maps the backend's exception to
    a ``StoreError`` (``_error``) and retries the retryable ones up to ``max_attempts`` tries in
    all (``syncd.retry``; the cloud SDKs' own retries are turned off, so this is the only tier).
    ``stop`` (set by the caller) ends a wait for a retry."""

    _max_attempts: int = DEFAULT_MAX_ATTEMPTS
    stop: threading.Event | None = None

    def call(self, action: str, key: str, request: Callable[[], Any], *, listing: bool = False) -> Any:
        def once() -> Any:
            try:
                return request()
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - every SDK error becomes one classified StoreError
                raise self._error(action, key, exc, listing=listing) from None

        return retry.call(once, f"{action} {self._where(key)}", self._max_attempts, self.stop)

    def _where(self, key: str) -> str:
        raise NotImplementedError

    def _error(self, action: str, key: str, exc: Exception, *, listing: bool = False) -> StoreError:
        raise NotImplementedError
