"""What happened, for whoever watches it: ``syncd run`` and ``syncd resync`` publish events here,
and the status page and the notifications subscribe.

Publishing never blocks and never fails: a subscriber is called in the publishing thread and must
only record or queue (the notifications deliver from a thread of their own), and a subscriber
that raises is logged once and does not stop syncing.

Events and their data (all JSON-serialisable):

- ``sync.completed``: a pass or a batch of changes ended (``syncd run``: each one that wrote,
  deleted or failed something, and every full pass; ``syncd resync``: the run). Data: ``scanned``,
  ``written``, ``unchanged``, ``deleted``, ``orphaned``, ``failed``, ``seconds``, ``full`` (a pass
  over every task), ``projects`` (``{project_id: {"written", "deleted", "failed", "last_error"}}``
  for the projects it touched), ``failures`` (the first error lines).
- ``sync.failed``: a run stopped before it ended (the database or the target could not be used):
  ``error`` (the one line).
- ``bundle.published`` / ``bundle.failed``: ``project_id``, ``format``, ``key`` (the build's
  prefix in the target), ``manifest`` (``latest.json``'s key), ``latest_key`` (the stable copy:
  ``…/latest/`` or ``…/latest.zip``), ``index_key`` (``bundles.json``), ``build_id``,
  ``created_at``, ``tasks``, ``error``.
- ``target.audit_mismatch``: the audit found objects missing or different: ``missing``,
  ``differing``, ``rewritten`` (how many objects the pass writes again), ``adopted``.
- ``health``: ``ready`` (bool) and ``reason``, whenever readiness changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("syncd")

EVENT_NAMES = ("sync.completed", "sync.failed", "bundle.published", "bundle.failed", "target.audit_mismatch",
               "health")


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)  # Unix seconds


Subscriber = Callable[[Event], None]


class Events:
    """The publish side shared by a process's parts; see the module doc."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._broken: set[int] = set()  # subscribers whose failure was already logged

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def publish(self, name: str, **data: Any) -> Event:
        event = Event(name, data)
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception as exc:  # noqa: BLE001 - watching must never stop syncing
                if id(subscriber) not in self._broken:
                    self._broken.add(id(subscriber))
                    log.warning("%s: a subscriber to %s failed: %s", getattr(subscriber, "__qualname__", subscriber),
                                name, exc)
        return event


def bundle_event_data(bundle: Any) -> dict[str, Any]:
    """The ``bundle.published`` / ``bundle.failed`` data of a ``syncd.bundles.build.PublishedBundle``."""
    return {"project_id": bundle.project_id, "format": bundle.format,
            "key": f"{bundle.prefix}/{bundle.build_id}" if bundle.build_id else None,
            "manifest": bundle.manifest_key if bundle.prefix else None, "build_id": bundle.build_id,
            "latest_key": bundle.latest_key or None, "index_key": bundle.index_key or None,
            "created_at": bundle.created_at, "tasks": bundle.task_count, "error": bundle.error}
