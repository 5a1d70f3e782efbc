"""``syncd resync``: reconcile the target with Label Studio once, print a summary, exit."""

from __future__ import annotations

import argparse
import logging

from syncd import logs
from syncd.bundles.build import PublishedBundle, publish_changed
from syncd.cli.args import add_common, config_from
from syncd.config import Config
from syncd.errors import ConfigError, SourceError, SyncdError, one_line
from syncd.ops.events import Events, bundle_event_data
from syncd.ops.metrics import Metrics
from syncd.ops.notify import open_notifications
from syncd.session import open_bundle_source, open_session
from syncd.sources import is_directory
from syncd.stores import public_url
from syncd.syncer import Summary

log = logging.getLogger("syncd")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("resync", help="write every new or changed labeled task once, then exit",
                       description="Reconcile the target with Label Studio once: write new and changed "
                       "documents, handle deleted ones, print a summary. Exit codes: 0 everything "
                       "written, 1 some tasks failed, 2 usage/config error or the source/target "
                       "cannot be used.")
    add_common(p)
    p.add_argument("--project", metavar="ID", type=int, action="append", dest="projects",
                   help="only this project (repeat for several; default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--verify-remote", action="store_true",
                   help="compare with the target's listing and stored hashes instead of the local state "
                   "(for a lost or new state file, or a target someone else changed)")
    p.add_argument("--no-audit", action="store_true",
                   help="skip comparing the checkpoint with the target's listing (when you know nothing else "
                   "touched the target; the marker is still checked)")
    p.add_argument("--checksum", action="store_true",
                   help="build and hash every document instead of skipping tasks whose rows are unchanged "
                   "(slower; catches edits that change neither a timestamp nor a size)")
    p.add_argument("--metrics-file", metavar="PATH",
                   help="write the run's Prometheus metrics here (temp file + rename), e.g. for node "
                   "exporter's textfile collector")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    metrics = Metrics()
    events = Events()
    notifications = None
    try:
        cfg = config_from(args)
        if not args.dry_run:
            notifications = open_notifications(cfg.notify, events, process=logs.process_name,
                                               target=public_url(cfg.target), one_shot=True)
        summary, bundles_line = _resync(cfg, args, metrics, events)
        if summary.ok and notifications is not None:
            notifications.ping()  # a cron job's dead-man switch: pinged after every clean run
    except SyncdError as exc:
        events.publish("sync.failed", error=one_line(exc))
        if args.metrics_file:  # a cron job's monitoring must see the failed run too
            metrics.failed_run("database" if isinstance(exc, SourceError) else
                               "other" if isinstance(exc, ConfigError) else "storage")
            metrics.write_textfile(args.metrics_file)
        raise
    finally:
        if notifications is not None:
            notifications.close()  # the run's events are sent before it exits
    if args.dry_run:
        for action in summary.plan:
            print(action.describe())
    for note in summary.notes:
        log.warning("%s", note)
    logs.summary(f"syncd resync{' (dry run)' if args.dry_run else ''}: {summary.line(args.dry_run)}",
                 **{k: v for k, v in summary.event_data(full=True).items() if k not in ("projects", "failures")},
                 dry_run=args.dry_run)
    if bundles_line:
        logs.summary(bundles_line)
    if args.metrics_file:
        metrics.record(summary, full=True)
        metrics.write_textfile(args.metrics_file)
    return 0 if summary.ok else 1


def _resync(cfg: Config, args: argparse.Namespace, metrics: Metrics, events: Events) -> tuple[Summary, str | None]:
    progress = logs.Progress("resync")
    with open_session(cfg, one_shot=True, events=events, dry_run=args.dry_run, verify_remote=args.verify_remote,
                      checksum=args.checksum, audit=not args.no_audit) as session:
        if session.leases is not None:  # sharing the target: take what no running syncd holds
            projects = cfg.projects or list(session.source.projects())
            session.leases.tick(projects)
            session.leases.keep(projects)  # renewed while the run lasts
            others = sorted(set(projects) - session.leases.held())
            if others:
                log.warning("projects %s are held by running syncd processes (see syncd status); left to them",
                            ", ".join(map(str, others)))
        try:
            summary = session.syncer.full(progress)
        finally:
            progress.finish()
        session.syncer.close()  # every acknowledged write recorded before the count
        metrics.tasks.set(session.checkpoint.count())
        bundles_line = None
        if cfg.bundles and not args.dry_run:
            bundles_line = _publish_bundles(cfg, session.store, summary, events)
    if not args.dry_run:
        events.publish("sync.completed", **summary.event_data(full=True))
    return summary, bundles_line


def _publish_bundles(cfg: Config, store, summary: Summary, events: Events) -> str | None:
    if is_directory(cfg.db):
        log.info("bundles: not built from a directory source (they need the database's labeling configs)")
        return None
    source = open_bundle_source(cfg)
    try:
        bundles: list[PublishedBundle] = publish_changed(source, store, cfg.bundles, summary.changed_projects,
                                                         cfg.projects, transfers=cfg.transfers)
    finally:
        source.close()
    if not bundles:
        return None
    for bundle in bundles:
        if bundle.status != "skipped":
            events.publish(f"bundle.{bundle.status}", **bundle_event_data(bundle))
    count = {status: sum(1 for b in bundles if b.status == status) for status in ("published", "skipped", "failed")}
    if count["failed"]:
        summary.fail(f"{count['failed']} bundle(s) could not be published (see the errors above)", reason="bundle")
    return f"bundles: {count['published']} published, {count['skipped']} skipped, {count['failed']} failed"
