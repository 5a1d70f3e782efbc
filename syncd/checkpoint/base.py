"""The checkpoint interface: what syncd last wrote to a target, key by key.

A row is recorded only after the store acknowledged the write (or the delete), so a crash at
any point leaves the checkpoint behind the target, never ahead of it: the next run rewrites
what it is unsure of and converges. It holds keys, hashes and fingerprints, never credentials.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Entry:
    key: str
    task_id: int
    project_id: int | None
    sha256: str
    size: int
    fingerprint: str = ""  # of what the written document was made from (see TaskDocument)
    etag: str = ""  # what the store's listing shows for it (ObjectInfo.etag), when it has one


class Checkpoint(Protocol):
    target: str  # the target's identity (Store.identity): rows are kept per target

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """The entries of these keys (missing keys are absent)."""

    def entries(self, project_ids: Iterable[int] = ()) -> Iterator[Entry]:
        """Every entry (of these projects), by task id then key."""

    def entries_by_key(self) -> Iterator[Entry]:
        """Every entry in key order (by code point, as stores list), streamed."""

    def for_tasks(self, task_ids: Iterable[int]) -> list[Entry]:
        """The entries of these tasks."""

    def count(self) -> int:
        """How many objects are recorded."""

    def count_by_project(self) -> dict[int | None, int]:
        """How many objects are recorded per project (None: tasks without one), in one grouped query."""

    def record_put(self, key: str, task_id: int, project_id: int | None, sha256: str, size: int,
                   fingerprint: str = "", etag: str | None = None) -> None:
        """The store acknowledged writing ``key``."""

    def record_fingerprint(self, key: str, fingerprint: str) -> None:
        """The inputs changed but the document did not: remember the new fingerprint."""

    def record_delete(self, key: str) -> None:
        """The store acknowledged deleting ``key``."""

    def flush(self) -> None:
        """Make everything recorded durable (records may be grouped until then)."""

    def target_id(self) -> str | None:
        """The id of the target's marker when this checkpoint was last in step with it."""

    def set_target_id(self, target_id: str) -> None:
        """Remember the target's marker id."""

    def forget_all(self) -> None:
        """Drop every entry of this target (``--verify-remote`` rebuilds them from the store)."""

    def close(self) -> None:
        """Flush and release the checkpoint (and its lock)."""


class PendingRecords:
    """The record side both checkpoints share: records wait in memory and are committed together
    (group commits: one transaction per second or per 1,000 objects, not one per object).
    A subclass writes them in ``_commit(pending)``; ``flush`` clears them once that returned."""

    def __init__(self) -> None:
        self._pending: list[tuple] = []
        self._last_flush = time.monotonic()

    def record_put(self, key: str, task_id: int, project_id: int | None, sha256: str, size: int,
                   fingerprint: str = "", etag: str | None = None) -> None:
        self._pending.append(("put", key, task_id, project_id, sha256, size, time.time(), fingerprint, etag or ""))
        self._maybe_flush()

    def record_fingerprint(self, key: str, fingerprint: str) -> None:
        """The rows changed but the document did not: remember the rows' new fingerprint."""
        self._pending.append(("fingerprint", key, fingerprint))
        self._maybe_flush()

    def record_delete(self, key: str) -> None:
        self._pending.append(("delete", key))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._pending) >= 1000 or time.monotonic() - self._last_flush >= 1.0:
            self.flush()

    def flush(self) -> None:
        """Commit the pending records (in the order recorded: a later record of a key wins)."""
        if not self._pending:
            return
        self._commit(self._pending)
        self._pending.clear()
        self._last_flush = time.monotonic()

    def _commit(self, pending: list[tuple]) -> None:
        raise NotImplementedError
