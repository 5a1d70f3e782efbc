"""The storage adapter interface: what every target (local directory, S3, GCS, Azure) provides.

An adapter is deliberately small: put / get / delete / list / head. Everything else (planning,
retries per object, checkpoints, dry runs) lives above it, so each backend module stays a thin
layer over its SDK and one conformance suite can test them all alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as the target reports it.

    ``key`` is relative to the target's prefix. ``sha256`` is the hex digest of the content as
    syncd recorded it when writing (object metadata on cloud stores, the content itself on a
    local directory); None when the object was not written by syncd and the store cannot tell.
    """

    key: str
    size: int
    sha256: str | None


class Store(Protocol):
    """A storage target. Keys are '/'-separated and relative to the target's prefix."""

    url: str

    def put(self, key: str, data: bytes, sha256: str) -> None:
        """Write ``data`` at ``key`` atomically (readers see the old or the new object, never
        a part), with ``sha256`` (hex digest of ``data``) stored alongside where the backend
        can hold metadata. Overwrites."""

    def get(self, key: str) -> bytes | None:
        """The object's content, or None when there is none. Errors are classified as for
        ``head`` (a missing bucket or container is fatal)."""

    def delete(self, key: str) -> None:
        """Remove ``key``. Removing a key that does not exist is not an error."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in any order, paginated lazily."""

    def head(self, key: str) -> ObjectInfo | None:
        """The object at ``key``, or None when there is none."""

    def check_writable(self) -> None:
        """Raise ``StoreError(fatal=True)`` with a clear message when the target does not
        exist or cannot be written (called once before a run writes anything)."""

    def close(self) -> None:
        """Release connections."""
