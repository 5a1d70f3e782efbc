"""The source interface: where labeled tasks come from, and how syncd learns that they changed.

A source never writes. It answers four questions, whatever it reads (Label Studio's database,
a directory of Label Studio's task files):

- ``projects()``: the projects, for key templates and bundles;
- ``fingerprints()``: ``(task_id, project_id, fingerprint)`` of every labeled task, in id order.
  A fingerprint changes whenever the task's document may have changed, and costs far less than
  the document: comparing it with the checkpoint tells which documents to build at all;
- ``documents()``: the documents of some or all labeled tasks, in id order;
- ``changes_since(cursor)``: the ids of the tasks touched since ``cursor``, and the next cursor.

and offers ``watch(wake)``, its change feeds: what wakes the daemon before the next poll (file
events, PostgreSQL notifications).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from syncd.document import TaskDocument
from syncd.errors import BadTask

Cursor = Any  # a source's own position; None means "from now"


@dataclass
class Project:
    id: int
    title: str
    slug: str
    label_config: str = ""
    data_types: dict[str, Any] = field(default_factory=dict)
    label_config_error: str | None = None  # why the labeling config cannot be used (its bundles fail)


@dataclass(frozen=True)
class Wake:
    """What a change feed tells the daemon: something may have changed (``task_ids`` when the
    feed knows which tasks), or the feed itself was lost (``lost``: reconnect)."""

    task_ids: frozenset[int] = frozenset()
    lost: str | None = None


class Feed(Protocol):
    def close(self) -> None: ...


class Source(Protocol):
    url: str  # for messages: no password in it

    def projects(self) -> dict[int, Project]:
        """Every project by id."""

    def count_labeled(self, project_ids: Iterable[int] = ()) -> int:
        """How many labeled tasks (for progress)."""

    def count_labeled_by_project(self, project_ids: Iterable[int] = ()) -> dict[int | None, int]:
        """How many labeled tasks each project has (projects without one are absent), in one
        grouped query: for the status page, on instances with thousands of projects."""

    def fingerprints(self, project_ids: Iterable[int] = (),
                     bare: bool = False) -> Iterator[tuple[int, int | None, str]]:
        """``(task_id, project_id, fingerprint)`` of every labeled task, in id order. ``bare``: the
        fingerprints may be left out (``""``): a pass with no checkpoint entries to compare them
        with (a first sync) builds every document anyway, and each carries its own."""

    def documents(self, task_ids: Iterable[int] | None = None,
                  project_ids: Iterable[int] = ()) -> Iterator[TaskDocument | BadTask]:
        """The documents of these labeled tasks (None: all), in id order, streamed. A task that
        is not labeled (or not there) is absent; one whose document cannot be made is a
        ``BadTask`` in its place, so the others still come."""

    def changes_since(self, cursor: Cursor) -> tuple[set[int], Cursor]:
        """Ids of the tasks touched since ``cursor`` and the next cursor; ``None`` starts now.
        Raises ``SourceError`` when the source went away (the daemon reconnects)."""

    def refresh(self) -> None:
        """Bring the source's view up to date before a full pass (a directory lists its files)."""

    @property
    def complete(self) -> bool:
        """False while a task missing from ``fingerprints`` may only be hidden (a directory with
        files still being written): then nothing is deleted or orphaned."""

    @property
    def problems(self) -> list[str]:
        """What cannot be read right now and belongs to no task (an unreadable file), one line each."""

    def watch(self, wake: Callable[[Wake], None]) -> Feed | None:
        """Start the change feeds that call ``wake``; None if the source has none (it is polled)."""

    def close(self) -> None:
        """Release connections."""


def batched(ids: Iterable[int], size: int) -> Iterator[list[int]]:
    """Sorted, de-duplicated ids in lists of at most ``size``."""
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), size):
        yield ordered[start:start + size]
