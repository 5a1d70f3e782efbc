"""Prometheus metrics: one vocabulary for ``syncd run``'s ``/metrics`` and ``syncd resync
--metrics-file``, in a registry of syncd's own.

A *run* is one pass of the syncer: a whole ``resync``, or one cycle of the daemon. The README's
"Metrics" table lists every name; ``failures`` are counted by the reasons of ``Summary.fail``,
plus ``storage`` and ``database`` for a run that stopped because the target or the database
could not be used.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, write_to_textfile

from syncd.errors import ConfigError

disable_created_metrics()  # no *_created series: they would only repeat the start time


class Metrics:
    """The metrics of one process; ``daemon`` adds the gauges only ``syncd run`` can fill."""

    def __init__(self, daemon: bool = False) -> None:
        self.registry = r = CollectorRegistry()
        self.scanned = Counter("syncd_tasks_scanned", "Labeled tasks looked at", registry=r)
        self.written = Counter("syncd_objects_written", "Documents written to the target", registry=r)
        self.unchanged = Counter("syncd_objects_unchanged", "Documents already up to date", registry=r)
        self.deleted = Counter("syncd_objects_deleted", "Objects deleted from the target", registry=r)
        self.failures = Counter("syncd_failures", "Failures by reason", ["reason"], registry=r)
        self.orphaned = Gauge("syncd_objects_orphaned", "Objects of unlabeled or deleted tasks left in place "
                              "(last full pass)", registry=r)
        self.run_success = Gauge("syncd_last_run_success", "1 if the last run wrote everything", registry=r)
        self.run_time = Gauge("syncd_last_run_timestamp_seconds", "When the last run ended", registry=r)
        self.run_duration = Gauge("syncd_last_run_duration_seconds", "How long the last run took", registry=r)
        self.last_success = Gauge("syncd_last_success_timestamp_seconds",
                                  "When a run last ended without errors", registry=r)
        self.tasks = Gauge("syncd_tasks_tracked", "Objects recorded in the checkpoint", registry=r)
        if not daemon:
            return
        self.lag = Gauge("syncd_seconds_behind", "Seconds since the oldest change not yet in the target "
                         "(0 when in step)", registry=r)
        self.queue = Gauge("syncd_queue_depth", "Tasks waiting to be retried", registry=r)
        self.ready = Gauge("syncd_ready", "1 when in step and source and target are reachable", registry=r)
        self.projects_held = Gauge("syncd_projects_held", "1 for each project this process holds when it shares "
                                   "the target with other processes (none: it does not share)", ["project_id"],
                                   registry=r)
        self.process = Gauge("syncd_process_info", "This process (the lease holder name when sharing the target)",
                             ["process"], registry=r)

    def record(self, summary, full: bool = False) -> None:
        """Count one run's summary (``full``: a pass over every task, which knows the orphans)."""
        self.scanned.inc(summary.scanned)
        self.written.inc(summary.written)
        self.unchanged.inc(summary.unchanged)
        self.deleted.inc(summary.deleted)
        for reason, count in summary.reasons.items():
            self.failures.labels(reason).inc(count)
        if full:
            self.orphaned.set(summary.orphaned)
        now = time.time()
        self.run_success.set(0 if summary.failed else 1)
        self.run_time.set(now)
        self.run_duration.set(summary.seconds)
        if not summary.failed:
            self.last_success.set(now)

    def failed_run(self, reason: str) -> None:
        """A run that stopped before it ended (the target or the database could not be used)."""
        self.failures.labels(reason).inc()
        self.run_success.set(0)
        self.run_time.set(time.time())

    def write_textfile(self, path: str) -> None:
        # temp file + rename, so node exporter's textfile collector never reads half a file
        try:
            write_to_textfile(path, self.registry)
            os.chmod(path, 0o644)  # for node exporter, whatever the umask
        except OSError as exc:
            raise ConfigError(f"--metrics-file {path}: cannot write it ({exc.strerror})") from None
