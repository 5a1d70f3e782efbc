"""``syncd run``: reconcile once, then keep the target in step until told to stop.

The loop (litestream's shape): wait for a file event or the poll interval; confirm cheaply
that the database changed; sync the tasks whose rows moved; every ``reconcile_interval``
compare row fingerprints with the checkpoint to catch what timestamps miss. A database or
storage outage is retried with capped exponential backoff, logged once when it starts, at a
limited rate while it lasts, and once when it ends; ``/readyz`` and the lag metric show it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from syncd import triggers
from syncd.bundles import BundleScheduler, publish_changed
from syncd.checkpoint import Checkpoint
from syncd.config import Config
from syncd.database import connect, default_db_url, driver_errors, sqlite_path
from syncd.dir_source import DirectorySource, is_dir_url
from syncd.document import DocumentOptions
from syncd.errors import ConfigError, SourceError, StoreError, SyncdError
from syncd.ops import Health, Metrics, Notifier, serve
from syncd.resync import FatalStoreError, Summary, Syncer
from syncd.source import LabelStudioSource
from syncd.stores import open_store, scheme_of
from syncd.watch import Waker

log = logging.getLogger("syncd")

SHUTDOWN_GRACE = 9.0  # seconds to drain in-flight writes after SIGTERM (systemd waits 10 s+)
MAX_BACKOFF = 60.0
# After a file event, wait until the database has been quiet this long (Label Studio saves the
# task row ~50 ms after the annotation row), so one change costs one write, not two.
COMMIT_SETTLE = 0.06


class Reload(Exception):
    """SIGHUP: start a new session with the re-read configuration."""


class Daemon:
    def __init__(self, cfg: Config, reload_config, options_from):
        self.cfg = cfg
        self.reload_config = reload_config  # () -> Config, raises ConfigError
        self.options_from = options_from  # Config -> ResyncOptions
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.waker = Waker()
        self.health = Health()
        self.metrics = Metrics()
        self.notifier = Notifier()
        self.retry_at: dict[int, tuple[float, int]] = {}  # task id -> (when, attempts)
        self.behind_since: float | None = None
        self.metrics.lag.set_function(lambda: time.time() - self.behind_since if self.behind_since else 0.0)
        self.metrics.queue.set_function(lambda: len(self.retry_at))
        self.metrics.ready.set_function(lambda: 1.0 if self.health.get()[0] else 0.0)
        self._signals = 0
        self.bundles = BundleScheduler(cfg.bundles.debounce if cfg.bundles else 30.0)
        self._notified_ids: set[int] = set()  # task ids from PostgreSQL NOTIFY, if triggers are installed
        self._notified_lock = threading.Lock()
        self.failing_since: float | None = None  # monotonic time the current outage began
        self.backoff = 1.0  # seconds before the next reconnect; doubles up to MAX_BACKOFF
        self._announced_ready = False

    # -------------------------------------------------------------- process control

    def _on_signal(self, signum, _frame) -> None:
        if signum == signal.SIGHUP:
            log.info("SIGHUP: reloading the configuration")
            self.reload.set()
            self.waker.wake()
            return
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting at once (the next start redoes unrecorded writes)")
            os._exit(1)
        log.info("%s: finishing in-flight writes, then exiting", signal.Signals(signum).name)
        self.notifier.stopping()
        self.stop.set()
        self.waker.wake()
        timer = threading.Timer(SHUTDOWN_GRACE, self._give_up)
        timer.daemon = True
        timer.start()

    def _give_up(self) -> None:
        log.warning("in-flight writes did not finish within %.0fs; exiting (they are redone on the next start)",
                    SHUTDOWN_GRACE)
        logging.shutdown()
        os._exit(0)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        server = serve(self.cfg.listen, self.health, self.metrics) if self.cfg.listen else None
        if server:
            log.info("serving /healthz, /readyz and /metrics on http://%s", self.cfg.listen)
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
                    continue
                except ConfigError:
                    raise
                except (SyncdError, *driver_errors()) as exc:
                    if self.stop.is_set():
                        break
                    now = time.monotonic()
                    reason = _one_line(exc)
                    self.health.set(False, reason)
                    self.behind_since = self.behind_since or time.time()
                    self.metrics.failures.labels(_reason(exc)).inc()
                    if self.failing_since is None:
                        self.failing_since, last_logged = now, now
                        log.error("%s; retrying with backoff", reason)
                    elif now - last_logged >= 60:
                        last_logged = now
                        log.error("still failing after %.0fs: %s", now - self.failing_since, reason)
                    self._sleep(self.backoff)
                    self.backoff = min(MAX_BACKOFF, self.backoff * 2)
        finally:
            self.notifier.stopping()
            self.waker.close()
            if server:
                server.shutdown()
        log.info("stopped")
        return 0

    # -------------------------------------------------------------- one connected session

    def _session(self) -> None:
        cfg = self.cfg
        store = open_store(cfg.target, cfg.backend_options(scheme_of(cfg.target)), transfers=cfg.transfers)
        if is_dir_url(cfg.db):
            self._dir_session(store)
            return
        db = checkpoint = syncer = listener = None
        try:
            db = connect(cfg.db)
            state = cfg.state_path(store.url)
            checkpoint = Checkpoint(state, store.url)
            source = LabelStudioSource(db, batch_size=cfg.batch_size)
            syncer = Syncer(source, store, checkpoint, self.options_from(cfg), stop=self.stop)
            db_file = sqlite_path(db.url) if db.dialect == "sqlite" else None
            if db_file is not None:
                self.waker.close()
                self.waker.watch_files([db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-journal")])
            elif triggers.installed(db):
                listener = triggers.Listener(cfg.db or default_db_url(), self._notified)
                log.info("PostgreSQL triggers found: woken by LISTEN/NOTIFY")
            self._loop(syncer, source, db_file, checkpoint, listener)
        finally:
            _close(syncer, checkpoint, listener, db, store)

    def _sleep(self, seconds: float) -> None:
        """Wait (interrupted by a signal), still pinging systemd's watchdog: an outage is not a hang."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.waker.wait(min(left, 1.0))
            self.notifier.beat()

    def _dir_session(self, store) -> None:
        """A session on the ``dir://`` source: rescan on file events and polls (unchanged files
        cost one stat each), sync what changed, and fully reconcile every ``reconcile_interval``."""
        cfg = self.cfg
        checkpoint = syncer = None
        try:
            source = DirectorySource.from_url(cfg.db)
            state = cfg.state_path(store.url)
            checkpoint = Checkpoint(state, store.url)
            syncer = Syncer(None, store, checkpoint, self.options_from(cfg), stop=self.stop)
            self.waker.close()
            self.waker.watch_directory(source.root)
            store.check_writable()
            self.behind_since = self.behind_since or time.time()
            scan = source.scan()
            self._account(syncer.sync_documents(scan.documents, scan.fingerprints, None, scan.unresolved == 0))
            self._became_ready()
            last_reconcile = time.monotonic()
            reported: set[str] = set(scan.errors)
            while not self.stop.is_set():
                if self.reload.is_set():
                    raise Reload()
                self.waker.wait(cfg.poll_interval)
                self.notifier.beat()
                if self.stop.is_set():
                    return
                scan = source.scan()
                for error in set(scan.errors) - reported:
                    log.error("%s", error)
                reported = set(scan.errors)
                full = time.monotonic() - last_reconcile >= cfg.reconcile_interval
                if full or scan.changed:
                    if self.behind_since is None:
                        self.behind_since = time.time()
                    self._account(syncer.sync_documents(scan.documents, scan.fingerprints,
                                                        None if full else scan.changed, scan.unresolved == 0))
                    if full:
                        last_reconcile = time.monotonic()
                        self.metrics.tasks.set(checkpoint.count())
                self.health.set(True)
        finally:
            _close(syncer, checkpoint, store)

    def _became_ready(self) -> None:
        self.health.set(True)
        if self.failing_since is not None:
            log.info("recovered after %.0fs", time.monotonic() - self.failing_since)
            self.failing_since = None
        self.backoff = 1.0
        if not self._announced_ready:
            self._announced_ready = True
            self.notifier.ready()
        log.info("in step; watching for changes")

    def _notified(self, task_id: int) -> None:
        with self._notified_lock:
            self._notified_ids.add(task_id)
        self.waker.wake()

    def _loop(self, syncer: Syncer, source: LabelStudioSource, db_file: Path | None,
              checkpoint: Checkpoint, listener: triggers.Listener | None) -> None:
        cfg = self.cfg
        _, cursor = source.changes_since(None)  # before the full pass: nothing falls in between
        self.behind_since = self.behind_since or time.time()
        self._account(syncer.full(progress=lambda done, total: self.notifier.beat()))
        self.metrics.tasks.set(checkpoint.count())
        if self.stop.is_set():
            return
        if cfg.bundles:
            self.bundles.debounce = cfg.bundles.debounce
            # Projects without bundles yet (or whose last build was cut short) are due at once.
            self._publish_bundles(syncer, source, force=True)
        identity = _file_identity(db_file)
        version = source.data_version()
        last_reconcile = time.monotonic()
        self._became_ready()
        while not self.stop.is_set():
            if self.reload.is_set():
                raise Reload()
            next_bundle = self.bundles.next_due(time.monotonic()) if cfg.bundles else None
            self.waker.wait(cfg.poll_interval if next_bundle is None else min(cfg.poll_interval, next_bundle),
                            settle=COMMIT_SETTLE)
            self.notifier.beat()
            if self.stop.is_set():
                return
            if cfg.bundles:
                self._publish_bundles(syncer, source)
            now = time.monotonic()
            due_reconcile = now - last_reconcile >= cfg.reconcile_interval
            due_retry = [t for t, (when, _) in self.retry_at.items() if when <= now]
            if db_file is not None:
                if _file_identity(db_file) != identity:
                    raise SourceError(f"database file {db_file} was replaced or removed; reconnecting")
                current = source.data_version()
                if current == version and not due_retry and not due_reconcile:
                    self.health.set(True)
                    continue
                version = current
            if listener is not None and not listener.alive:
                raise SourceError("the LISTEN connection to PostgreSQL was lost; reconnecting")
            touched, cursor = source.changes_since(cursor)
            with self._notified_lock:
                touched |= self._notified_ids
                self._notified_ids = set()
            if touched and self.behind_since is None:
                self.behind_since = time.time()
            if touched or due_retry:
                self._account(syncer.sync_tasks(touched | set(due_retry)), retried=set(due_retry))
            if due_reconcile:
                self._account(syncer.reconcile())
                last_reconcile = time.monotonic()
            if due_reconcile:  # a count of the checkpoint costs a scan: not on every change
                self.metrics.tasks.set(checkpoint.count())
            self.health.set(True)

    def _publish_bundles(self, syncer: Syncer, source: LabelStudioSource, force: bool = False) -> None:
        """Rebuild the bundles of projects whose changes have settled (``force``: of every project
        that has no bundle yet, plus the pending ones, now)."""
        cfg = self.cfg
        now = time.monotonic()
        due = set(self.bundles.due(float("inf") if force else now))
        if not due and not force:
            return
        options = DocumentOptions(predictions=cfg.predictions)
        results = publish_changed(source, syncer.store, cfg.bundles, options, due,
                                  only=cfg.projects if force else due, transfers=cfg.transfers, stop=self.stop)
        failed = {b.project_id for b in results if b.status == "failed"}
        if failed:
            self.metrics.failures.labels("bundle").inc(len(failed))
            self.bundles.mark_changed(failed, now)  # try again after the next debounce
        published = [b for b in results if b.status == "published"]
        if published:
            log.info("bundles published: %s", ", ".join(f"project {b.project_id} {b.format}" for b in published))

    def _account(self, summary: Summary, retried: set[int] = frozenset()) -> None:
        self.metrics.record(summary)
        if self.cfg.bundles:
            self.bundles.mark_changed(summary.changed_projects, time.monotonic())
        now = time.monotonic()
        for task_id in retried - summary.failed_tasks:
            self.retry_at.pop(task_id, None)
        for task_id in summary.failed_tasks:
            _, attempts = self.retry_at.get(task_id, (0.0, 0))
            self.retry_at[task_id] = (now + min(300.0, 2.0 ** attempts), attempts + 1)
        if summary.written or summary.deleted:
            log.info("synced: %d written, %d deleted, %d failed", summary.written, summary.deleted, summary.failed)
        if not summary.failed and not self.retry_at:
            self.behind_since = None
            self.metrics.last_success.set(time.time())


def _close(*parts) -> None:
    """Close what a session opened, in order (the syncer first: it records acknowledged writes
    in the checkpoint); a failure while closing one part does not keep the others open."""
    for part in parts:
        if part is None:
            continue
        try:
            part.close()
        except SyncdError as exc:
            log.debug("while closing: %s", exc)


def _file_identity(path: Path | None):
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return (st.st_dev, st.st_ino)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (FatalStoreError, StoreError)):
        return "storage"
    if isinstance(exc, SourceError) or isinstance(exc, driver_errors()):
        return "database"
    return "other"

