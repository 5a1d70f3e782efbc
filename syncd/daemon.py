"""``syncd run``: reconcile once, then keep the target in step until told to stop.

One loop (litestream's shape): wait for the next change event (a file event or a PostgreSQL
notification from the source's change feeds, a signal) or for the next tick (poll, retry,
reconcile); ask the source what changed since the cursor; sync those tasks; on the reconcile
tick compare fingerprints with the checkpoint to catch what the feeds miss. Bundles are built
by a worker thread of their own (``syncd.bundles.scheduler``), never in this loop.

A database or storage outage ends the session: it is retried with capped, jittered backoff,
logged once when it starts, at a limited rate while it lasts, and once when it ends; ``/readyz``
and the lag metric show it.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable

from syncd import logs
from syncd.bundles.build import PublishedBundle
from syncd.bundles.scheduler import BundleWorker
from syncd.config import Config
from syncd.errors import ConfigError, SourceError, StoreError, SyncdError, one_line
from syncd.ops.events import Events, bundle_event_data
from syncd.ops.health import Health
from syncd.ops.http import serve
from syncd.ops.metrics import Metrics
from syncd.ops.notify import Notifications, open_notifications
from syncd.ops.status import StatusBoard
from syncd.ops.systemd import Notifier
from syncd.retry import Backoff, delay
from syncd.session import Session, close_all, open_bundle_parts, open_session
from syncd.sources.base import Wake
from syncd.sources.labelstudio.database import MissingDatabase, driver_errors, mask_url
from syncd.stores import public_url
from syncd.syncer import FatalStoreError, Summary

log = logging.getLogger("syncd")

SHUTDOWN_GRACE = 9.0  # seconds to drain in-flight writes after SIGTERM (systemd waits 10 s+)
MAX_BACKOFF = 60.0  # seconds: the longest wait before reconnecting to a lost database or target
MAX_RECENT_BATCHES = 10_000  # batches of changed tasks remembered for a takeover (_remember)
# After a change event, wait until the source has been quiet this long (Label Studio saves the
# task row ~50 ms after the annotation row), so one change costs one write, not two.
COMMIT_SETTLE = 0.06
MAX_SETTLE = 0.25


class Reload(Exception):
    """SIGHUP: start a new session with the re-read configuration."""


class Daemon:
    def __init__(self, cfg: Config, reload_config: Callable[[], Config]):
        self.cfg = cfg
        self.reload_config = reload_config  # raises ConfigError
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.wakes: queue.SimpleQueue[Wake] = queue.SimpleQueue()  # from change feeds, signals, leases
        self.events = Events()  # what happened, for the status page and notifications
        self.health = Health(on_change=lambda ready, reason: self.events.publish("health", ready=ready,
                                                                                 reason=reason))
        self.metrics = Metrics(daemon=True)
        self.notifier = Notifier()
        self.retry_at: dict[int, tuple[float, int]] = {}  # task id -> (when, failures so far)
        self.fenced_seen = 0  # checkpoint records dropped by fencing, already counted
        self.recent: collections.deque[tuple[float, frozenset[int]]] = collections.deque()  # see _remember
        self.behind_since: float | None = None
        self.metrics.lag.set_function(lambda: time.time() - self.behind_since if self.behind_since else 0.0)
        self.metrics.queue.set_function(lambda: len(self.retry_at))
        self.metrics.ready.set_function(lambda: 1.0 if self.health.get()[0] else 0.0)
        self.bundles: BundleWorker | None = None
        self.notifications: Notifications | None = None  # opened per configuration (_notify)
        self.status = StatusBoard(self.events, process=logs.process_name, ready=self.health.get,
                                  lag=lambda: time.time() - self.behind_since
                                  if self.behind_since and not self.health.get()[0] else 0.0)
        self.metrics.process.labels(logs.process_name()).set(1)  # as logs name it
        self.failing_since: float | None = None  # monotonic time the current outage began
        self.writes_failing_since: float | None = None  # ... the target began refusing writes
        self._writes_failing = ""
        self.holding = ""  # sharing the target: which projects this process holds (for /readyz)
        self._orphans_reported: set[str] = set()
        self.backoff = Backoff(base=1.0, cap=MAX_BACKOFF)
        self._signals = 0
        self._announced_ready = False

    # -------------------------------------------------------------- process control

    def run(self) -> int:
        """Signals, the HTTP endpoints, then ``serve`` until stopped."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        server = serve(self.cfg.listen, self.health, self.metrics, self.status) if self.cfg.listen else None
        if server:
            log.info("status page on http://%s/ (also /status.json, /healthz, /readyz, /metrics)", self.cfg.listen)
        try:
            return self.serve()
        finally:
            if server:
                server.shutdown()

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            log.info("SIGHUP: reloading the configuration")
            self.reload.set()
            self.wakes.put(Wake())
            return
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting at once (the next start redoes unrecorded writes)")
            os._exit(1)
        log.info("%s: finishing in-flight writes, then exiting", signal.Signals(signum).name)
        self.shutdown()
        timer = threading.Timer(SHUTDOWN_GRACE, self._give_up)
        timer.daemon = True
        timer.start()

    def shutdown(self) -> None:
        self.notifier.stopping()
        self.stop.set()
        self.wakes.put(Wake())

    def _give_up(self) -> None:
        log.warning("in-flight writes did not finish within %.0fs; exiting (they are redone on the next start)",
                    SHUTDOWN_GRACE)
        logging.shutdown()
        os._exit(0)

    def serve(self) -> int:
        """Sessions, one after another: a new one after a reload or an outage (with backoff)."""
        last_logged = 0.0
        try:
            while not self.stop.is_set():
                try:
                    self._session()
                except Reload:
                    self.reload.clear()
                    try:
                        self.cfg = self.reload_config()
                        log.info("configuration reloaded")
                    except ConfigError as exc:
                        log.error("new configuration rejected, keeping the old one: %s", exc)
                except ConfigError:
                    raise
                except (SyncdError, *driver_errors()) as exc:
                    if self.stop.is_set():
                        break
                    if isinstance(exc, FatalStoreError) and not exc.retryable:
                        # A missing bucket or denied access does not heal by waiting here; exiting
                        # lets the supervisor (systemd, Kubernetes) restart syncd with its backoff.
                        log.error("%s; exiting", one_line(exc))
                        return 1
                    if isinstance(exc, MissingDatabase) and not self._announced_ready:
                        raise  # a database path that never existed: a configuration error
                    now = time.monotonic()
                    reason = one_line(exc)
                    self.health.set(False, reason)
                    self.behind_since = self.behind_since or time.time()
                    self.metrics.failures.labels(_reason(exc)).inc()
                    if self.failing_since is None:
                        self.failing_since, last_logged = now, now
                        log.error("%s; retrying with backoff", reason)
                        self.events.publish("sync.failed", error=reason)
                    elif now - last_logged >= 60:
                        last_logged = now
                        log.error("still failing after %.0fs: %s", now - self.failing_since, reason)
                    self._sleep(self.backoff.next(getattr(exc, "retry_after", None)))
        finally:
            self.notifier.stopping()
            if self.notifications is not None:
                self.notifications.close()
        log.info("stopped")
        return 0

    def _sleep(self, seconds: float) -> None:
        """Wait (ended by a signal), still pinging systemd's watchdog: an outage is not a hang."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and not self.reload.is_set() and (left := deadline - time.monotonic()) > 0:
            self._next_events(min(left, 1.0))
            self.notifier.beat()

    # -------------------------------------------------------------- one connected session

    def _notify(self) -> None:
        """Notifications for the configuration in effect (a reload may change them)."""
        current = self.notifications
        if current is not None and (current.config, current.target) == (self.cfg.notify, public_url(self.cfg.target)):
            return
        if current is not None:
            current.close()
        self.notifications = open_notifications(self.cfg.notify, self.events, process=logs.process_name,
                                                target=public_url(self.cfg.target), ready=self._in_step)

    def _in_step(self) -> bool:
        """Ready, and nothing waiting: the heartbeat's condition."""
        return self.health.get()[0] and self.behind_since is None

    def _session(self) -> None:
        cfg = self.cfg
        self._notify()
        session = open_session(cfg, one_shot=False, stop=self.stop, events=self.events,
                               audit=cfg.audit_interval > 0, orphan_lines=False)
        feed = None
        try:
            self.status.describe(source=session.source.url, target=public_url(cfg.target),
                                 state=_state_text(cfg, session))
            feed = session.source.watch(self.wakes.put)
            self._loop(session)
        finally:
            bundles, self.bundles = self.bundles, None
            close_all(bundles, feed, session)

    def _loop(self, session: Session) -> None:
        cfg, source, syncer, leases = self.cfg, session.source, session.syncer, session.leases
        _, cursor = source.changes_since(None)  # before the full pass: nothing falls in between
        if leases:
            self._follow_leases(session, first=True)
        self.behind_since = self.behind_since or time.time()
        first = syncer.full(progress=lambda done, total: self.notifier.beat())
        self._account(first, full=True)
        self.metrics.tasks.set(session.checkpoint.count())
        self._refresh_status(session)
        if self.stop.is_set():
            return
        if cfg.bundles:
            scope = (lambda: sorted(leases.held()) or None) if leases else (lambda: cfg.projects)
            self.bundles = BundleWorker(cfg.bundles, lambda: open_bundle_parts(cfg, self.stop), scope=scope,
                                        transfers=cfg.transfers, changed=first.changed_projects,
                                        on_results=self._bundles_done)
        self._became_ready()
        next_reconcile = time.monotonic() + cfg.reconcile_interval
        next_audit = time.monotonic() + cfg.audit_interval if cfg.audit_interval else float("inf")
        while not self.stop.is_set():
            now = time.monotonic()
            next_retry = min((when for when, _ in self.retry_at.values()), default=next_reconcile)
            wait = min(now + cfg.poll_interval, next_reconcile, next_retry, next_audit) - now
            events = self._next_events(max(0.0, wait), settle=COMMIT_SETTLE)
            self.notifier.beat()
            if self.stop.is_set():
                return
            if self.reload.is_set():
                raise Reload()
            lost = next((e.lost for e in events if e.lost), None)
            if lost:
                raise SourceError(lost)
            now = time.monotonic()
            if leases:  # projects taken over from a process that left; metrics of what is held
                self._follow_leases(session)
            touched, cursor = source.changes_since(cursor)
            for event in events:
                touched |= event.task_ids
            due_retry = {t for t, (when, _) in self.retry_at.items() if when <= now}
            if touched and self.behind_since is None:
                self.behind_since = time.time()
            if touched or due_retry:
                self._account(syncer.sync_tasks(touched | due_retry), retried=due_retry, tasks=touched | due_retry)
                if self.status.due():
                    self._refresh_status(session)
            if touched and leases:
                self._remember(touched)
            if now >= next_audit:  # the target, checked against the checkpoint; what it lacks is rewritten
                if leases is None or leases.holds_target():
                    syncer.audit()
                next_audit = time.monotonic() + cfg.audit_interval
                next_reconcile = now
            if now >= next_reconcile:
                if leases:  # projects created in Label Studio since
                    leases.keep(cfg.projects or list(source.projects()))
                self._account(syncer.reconcile(), full=True)
                self.metrics.tasks.set(session.checkpoint.count())  # a scan: not on every change
                self._refresh_status(session)
                next_reconcile = time.monotonic() + cfg.reconcile_interval
            self._set_ready()

    def _follow_leases(self, session: Session, first: bool = False) -> None:
        """Sharing the target: take the first share of the projects (``first``), then sync the
        projects the lease keeper took over since, and show what is held."""
        leases = session.leases
        if first:
            projects = self.cfg.projects or list(session.source.projects())
            leases.tick(projects)
            leases.keep(projects, on_gain=lambda: self.wakes.put(Wake()))  # taken over: sync them now
            self.fenced_seen = 0  # a new session: a new checkpoint, counting fenced records from 0
            self.metrics.process.clear()
            self.metrics.process.labels(leases.holder).set(1)
        else:
            gained = leases.take_gained()
            if gained:  # the first full pass covers the first share
                # What changed lately first (the previous holder may have died before writing
                # it; this process saw it but did not hold the project), then the full pass.
                recent = frozenset().union(*(ids for _, ids in self.recent))
                if recent:
                    self._account(session.syncer.sync_tasks(recent), tasks=set(recent))
                self._account(session.syncer.full(projects=gained))
                if self.bundles is not None:
                    self.bundles.changed(gained)
        held = sorted(leases.held())
        holding = f"{leases.holder} holds projects {', '.join(map(str, held)) or 'none'}"
        if holding != self.holding:
            self.metrics.projects_held.clear()
            for project_id in held:
                self.metrics.projects_held.labels(str(project_id)).set(1)
            self.holding = holding
        fenced = getattr(session.checkpoint, "fenced", 0)
        if fenced > self.fenced_seen:
            log.warning("%d write(s) not recorded: their project's lease was lost while they were in flight; "
                        "the audit checks those objects", fenced - self.fenced_seen)
            self.metrics.failures.labels("fenced").inc(fenced - self.fenced_seen)
            self.fenced_seen = fenced

    def _refresh_status(self, session: Session) -> None:
        """The status page's counts (and, sharing the target, who holds which project)."""
        leases = session.leases
        held_by = None
        if leases:
            held_by = {pid: holder for target, holder, _, projects, _ in leases.holders()
                       if target == leases.target for pid in projects}
        self.status.refresh(session.source, session.checkpoint, shown=self.cfg.projects or None,
                            synced=sorted(leases.held()) if leases else None, holders=held_by)

    def _remember(self, touched: set[int]) -> None:
        """Keep the tasks changed within the last two leases (bounded): the projects a process
        takes over after another died start with them."""
        now = time.monotonic()
        self.recent.append((now, frozenset(touched)))
        horizon = now - 2 * self.cfg.lease_seconds
        while self.recent and (self.recent[0][0] < horizon or len(self.recent) > MAX_RECENT_BATCHES):
            self.recent.popleft()

    def _next_events(self, timeout: float, settle: float = 0.0) -> list[Wake]:
        """The events that came within ``timeout`` (none: a poll tick). With ``settle``, after
        the first one keep collecting until ``settle`` seconds pass quietly (at most
        ``MAX_SETTLE``): Label Studio commits an annotation and, some 50 ms later, its task row."""
        try:
            events = [self.wakes.get(timeout=timeout) if timeout > 0 else self.wakes.get_nowait()]
        except queue.Empty:
            return []
        deadline = time.monotonic() + MAX_SETTLE
        while settle > 0 and (left := deadline - time.monotonic()) > 0:
            try:
                events.append(self.wakes.get(timeout=min(settle, left)))
            except queue.Empty:
                break
        while True:
            try:
                events.append(self.wakes.get_nowait())
            except queue.Empty:
                return events

    def _set_ready(self) -> None:
        """In step, unless the target is refusing writes."""
        if self.writes_failing_since is None:
            self.health.set(True, self.holding)
        else:
            self.health.set(False, self._writes_failing)

    def _became_ready(self) -> None:
        self._set_ready()
        if self.failing_since is not None:
            log.info("recovered after %.0fs", time.monotonic() - self.failing_since)
            self.failing_since = None
        self.backoff.reset()
        if not self._announced_ready:
            self._announced_ready = True
            self.notifier.ready()
        log.info("in step; watching for changes")

    def _bundles_done(self, results: list[PublishedBundle]) -> None:
        for bundle in results:
            if bundle.status != "skipped":
                self.events.publish(f"bundle.{bundle.status}", **bundle_event_data(bundle))
        failed = {b.project_id for b in results if b.status == "failed"}
        if failed:
            self.metrics.failures.labels("bundle").inc(len(failed))
        published = [b for b in results if b.status == "published"]
        if published:
            log.info("bundles published: %s", ", ".join(f"project {b.project_id} {b.format}" for b in published))

    def _account(self, summary: Summary, retried: set[int] = frozenset(), full: bool = False,
                 tasks: set[int] = frozenset()) -> None:
        self.metrics.record(summary, full=full)
        self.status.record(summary, full=full, tasks=tasks)
        if full or summary.written or summary.deleted or summary.failed:
            self.events.publish("sync.completed", **summary.event_data(full))
        if self.bundles is not None:
            self.bundles.changed(summary.changed_projects)
        now = time.monotonic()
        for task_id in retried - summary.failed_tasks:
            self.retry_at.pop(task_id, None)
        for task_id in summary.failed_tasks:
            _, failures = self.retry_at.get(task_id, (0.0, 0))
            self.retry_at[task_id] = (now + delay(failures + 1, base=2.0, cap=300.0), failures + 1)
        if summary.written or summary.deleted:
            logs.summary(f"synced: {summary.written} written, {summary.deleted} deleted, {summary.failed} failed",
                         written=summary.written, deleted=summary.deleted, failed=summary.failed)
        self._report_orphans(summary)
        self._track_writes(summary)
        if not summary.failed and not self.retry_at:
            self.behind_since = None

    def _report_orphans(self, summary: Summary) -> None:
        """Each object left in place for a task no longer labeled, once (as resync reports them)."""
        for action in summary.orphans:
            if action.key not in self._orphans_reported:
                self._orphans_reported.add(action.key)
                log.warning("orphaned: %s (task %d is no longer labeled or was deleted); left in place, "
                            "delete: true removes such objects", action.key, action.task_id)

    def _track_writes(self, summary: Summary) -> None:
        """Not ready while the target refuses writes: one line when it starts, one when it ends."""
        failed_writes = summary.reasons.get("write", 0)
        if failed_writes and self.writes_failing_since is None:
            self.writes_failing_since = time.monotonic()
            first = next((f for f in summary.failures if " failed: " in f), "")
            self._writes_failing = f"writes to the target are failing: {first}"
            self._set_ready()
            log.error("%s; retrying", self._writes_failing)
        elif not failed_writes and (summary.written or summary.deleted) and self.writes_failing_since is not None:
            log.info("writes to the target recovered after %.0fs", time.monotonic() - self.writes_failing_since)
            self.writes_failing_since = None
            self._set_ready()


def _state_text(cfg: Config, session: Session) -> str:
    """Where the checkpoint is, for the status page (no password)."""
    path = getattr(session.checkpoint, "path", None)
    if session.leases is not None or path is None:
        return f"PostgreSQL {mask_url(session.leases.url if session.leases else str(cfg.state))} " \
               f"(schema {cfg.state_schema})"
    return f"SQLite file {path}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (FatalStoreError, StoreError)):
        return "storage"
    if isinstance(exc, SourceError) or isinstance(exc, driver_errors()):
        return "database"
    return "other"
