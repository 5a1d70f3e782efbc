"""When bundles are built in ``syncd run``: a debounce per project, and a worker thread.

``BundleScheduler`` is the debounce: a project is rebuilt ``debounce`` seconds after its last
change, and at most ``5 x debounce`` after its first unpublished change. ``BundleWorker`` runs
the builds in a thread of their own, with a source and a store of their own (opened by the
caller's ``open_parts``), so a build that takes seconds never delays syncing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from syncd.bundles.build import PublishedBundle, publish_changed
from syncd.bundles.config import BundleConfig
from syncd.retry import Backoff
from syncd.sources.base import Source
from syncd.stores.base import Store

log = logging.getLogger("syncd")

MAX_DELAY_FACTOR = 5.0  # a busy project still gets a bundle this many debounce periods after its first change


class BundleScheduler:
    """Which projects' bundles to rebuild now.

    A project is due ``debounce`` seconds after its last change, or ``max_delay`` (default
    5 x debounce) after its first change not yet handed out, whichever comes first. ``due()``
    hands a project out once; mark it changed again if its build failed. Times are any
    monotonic clock (``time.monotonic()``). Thread-safe.
    """

    def __init__(self, debounce: float = 30.0, max_delay: float | None = None):
        self.debounce = debounce
        self.max_delay = MAX_DELAY_FACTOR * debounce if max_delay is None else max_delay
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()

    def mark_changed(self, project_ids: Iterable[int | None], now: float) -> None:
        with self._lock:
            for project_id in project_ids:
                if project_id is None:
                    continue
                self._first.setdefault(project_id, now)
                self._last[project_id] = now

    def _when(self, project_id: int) -> float:
        return min(self._last[project_id] + self.debounce, self._first[project_id] + self.max_delay)

    def due(self, now: float) -> list[int]:
        """The projects due at ``now`` (sorted); they are no longer pending."""
        with self._lock:
            ready = sorted(p for p in self._first if self._when(p) <= now)
            for project_id in ready:
                del self._first[project_id], self._last[project_id]
            return ready

    def next_due(self, now: float) -> float | None:
        """Seconds until the next project is due (0 if one is due now), None if none is pending."""
        with self._lock:
            if not self._first:
                return None
            return max(0.0, min(self._when(p) for p in self._first) - now)

    @property
    def pending(self) -> set[int]:
        with self._lock:
            return set(self._first)


class BundleWorker:
    """Builds the bundles of changed projects in its own thread.

    ``changed(project_ids)`` is all the sync loop does; the worker waits for the debounce,
    then publishes. At start it publishes what is missing (projects without a bundle yet, or
    whose last build was cut short). A failed build is tried again after the next debounce;
    a source or store that cannot be opened is retried with backoff. ``on_results`` gets each
    round's results (for metrics and logs)."""

    def __init__(self, config: BundleConfig, open_parts: Callable[[], tuple[Source, Store]], *,
                 scope: Callable[[], list[int] | None], transfers: int, changed: Iterable[int | None] = (),
                 on_results: Callable[[list[PublishedBundle]], None] = lambda results: None):
        self.config = config
        self.scheduler = BundleScheduler(config.debounce)
        self.scheduler.mark_changed(changed, time.monotonic())  # rebuilt in the first round
        self._open_parts = open_parts
        self._scope = scope  # the projects this process builds for ([]: all; None: none now)
        self._transfers = transfers
        self._on_results = on_results
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="syncd-bundles", daemon=True)
        self._thread.start()

    def changed(self, project_ids: Iterable[int | None]) -> None:
        ids = [p for p in project_ids if p is not None]
        if ids:
            self.scheduler.mark_changed(ids, time.monotonic())
            self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        parts: tuple[Source, Store] | None = None
        backoff = Backoff()
        missing_done = False
        try:
            while not self._stop.is_set():
                wait = self.scheduler.next_due(time.monotonic()) if missing_done else 0.0
                if wait is None or wait > 0:
                    self._wake.wait(wait)
                    self._wake.clear()
                    continue
                # The first round: every changed project, and what is missing anywhere.
                due = self.scheduler.due(time.monotonic() if missing_done else float("inf"))
                scope = self._scope()
                if scope:  # sharing the target: the projects this process holds
                    due = [p for p in due if p in scope]
                if (missing_done and not due) or scope is None:
                    missing_done = True
                    continue
                try:
                    if parts is None:
                        parts = self._open_parts()
                    source, store = parts
                    results = publish_changed(source, store, self.config, due,
                                              only=due if missing_done else scope,
                                              transfers=self._transfers, stop=self._stop)
                    missing_done = True
                    backoff.reset()
                except Exception as exc:  # noqa: BLE001 - a lost database or target: the thread must go on
                    self.scheduler.mark_changed(due, time.monotonic())
                    log.error("bundles: %s; trying again", " ".join(str(exc).split()) or type(exc).__name__)
                    parts = _close(parts)
                    self._stop.wait(backoff.next())
                    continue
                failed = {b.project_id for b in results if b.status == "failed"}
                if failed:
                    self.scheduler.mark_changed(failed, time.monotonic())  # try again after the next debounce
                self._on_results(results)
        finally:
            _close(parts)


def _close(parts: tuple[Source, Store] | None) -> None:
    for part in parts or ():
        try:
            part.close()
        except Exception as exc:  # noqa: BLE001 - closing after a lost connection: the next build reconnects
            log.debug("while closing: %s", exc)
    return None
