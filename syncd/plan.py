"""The plan: what to do with each key, decided by content hash (rclone's "compare, skip equal").

Pure functions: they look at a document and what the checkpoint says was last written, and
never touch the store. Deletions are planned only after a complete scan.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import astuple, dataclass

from syncd.audit import md5_matches
from syncd.checkpoint import Entry
from syncd.document import TaskDocument


@dataclass(frozen=True)
class Action:
    kind: str  # "put", "skip", "delete" or "orphan"
    key: str
    task_id: int
    project_id: int | None
    reason: str
    document: TaskDocument | None = None

    def describe(self) -> str:
        return f"{self.kind.upper():7} {self.key}  (task {self.task_id}: {self.reason})"


def plan_document(doc: TaskDocument, key: str, previous: Entry | None) -> Action:
    """PUT a new or changed document, SKIP one whose bytes are already there (by sha256; for an
    entry read from an S3 listing, which knows only the ETag, by MD5)."""
    if previous is None:
        return Action("put", key, doc.task_id, doc.project_id, "new", doc)
    if not previous.sha256 and previous.task_id == doc.task_id and previous.size == len(doc.body) \
            and md5_matches(previous.etag, doc.body):
        return Action("skip", key, doc.task_id, doc.project_id, "unchanged")
    if previous.sha256 != doc.sha256:
        reason = "changed" if previous.task_id == doc.task_id else f"key was task {previous.task_id}'s"
        return Action("put", key, doc.task_id, doc.project_id, reason, doc)
    return Action("skip", key, doc.task_id, doc.project_id, "unchanged")


def plan_removals(count: int, delete: bool, had_errors: bool,
                  max_delete: int | None) -> tuple[str, str | None]:
    """What to do with the ``count`` keys whose task is no longer labeled (or now lives under
    another key): ``"delete"`` or ``"orphan"`` (left in place), and, when deletions were held
    back, why. A run that had errors deletes nothing (its view of the source may be incomplete),
    and ``max_delete`` guards against a source that suddenly looks empty (a wrong database, a
    bad filter)."""
    if not delete or not count:
        return "orphan", None
    if had_errors:
        return "orphan", (f"{count} deletion(s) held back because this run had errors; they happen on "
                          "the next clean run")
    if max_delete is not None and count > max_delete:
        return "orphan", (f"{count} objects would be deleted but max_delete is {max_delete}; nothing was "
                          "deleted. Check that db: points at the right database, then raise max_delete")
    return "delete", None


def removal(kind: str, entry: Entry) -> Action:
    return Action(kind, entry.key, entry.task_id, entry.project_id, "no longer labeled or moved")


class Removals:
    """The checkpoint entries a pass found gone, kept until the pass is complete (deletions
    wait for a complete scan). They go to a temporary file past a megabyte, so a source that
    suddenly looks empty costs disk, not memory, whatever the number of tasks."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+", encoding="utf-8")
        self.count = 0

    def add(self, entry: Entry) -> None:
        self._file.write(json.dumps(astuple(entry)) + "\n")
        self.count += 1

    def __iter__(self) -> Iterator[Entry]:
        self._file.seek(0)
        for line in self._file:
            yield Entry(*json.loads(line))
        # (appending after a read: the file position is at its end again)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Removals:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
