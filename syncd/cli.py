"""The ``syncd`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml

from converters.cli import register as register_converters
from syncd import __version__, logs, triggers
from syncd import config as config_mod
from syncd.bundles import publish_changed
from syncd.checkpoint import Checkpoint
from syncd.daemon import Daemon
from syncd.database import connect, default_db_url, mask_url
from syncd.dir_source import DirectorySource, is_dir_url, settled_scan
from syncd.document import DocumentOptions
from syncd.errors import ConfigError, SourceError, StoreError, SyncdError
from syncd.resync import FatalStoreError, ResyncOptions, Summary, Syncer, resync
from syncd.source import LabelStudioSource
from syncd.stores import open_store, scheme_of

log = logging.getLogger("syncd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="YAML config file (see config.example.yaml)")
    parser.add_argument("--db", metavar="URL", help="Label Studio database: sqlite:///path/label_studio.sqlite3 "
                        "or postgresql://user:pw@host:port/db (default: from Label Studio's env vars)")
    parser.add_argument("--target", metavar="URL", help="where documents go: a directory, file:///dir, "
                        "s3://bucket/prefix, gs://bucket/prefix or azure://container/prefix")
    parser.add_argument("--state", metavar="PATH", help="checkpoint file (default: "
                        "$XDG_STATE_HOME/syncd/<target>.sqlite3)")
    parser.add_argument("--log-format", choices=("text", "json"), help="log lines as text or JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncd", description="Keeps Label Studio's annotations in "
                                     "cloud storage: one <task_id>.json per labeled task.")
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("resync", help="write every new or changed labeled task once, then exit",
                       description="Reconcile the target with Label Studio once: write new and changed "
                       "documents, handle deleted ones, print a summary. Exit codes: 0 everything "
                       "written, 1 some tasks failed, 2 usage/config error or the source/target "
                       "cannot be used.")
    _common(p)
    p.add_argument("--project", metavar="ID", type=int, action="append", dest="projects",
                   help="only this project (repeat for several; default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--verify-remote", action="store_true",
                   help="compare with the target's listing and stored hashes instead of the local state "
                   "(for a lost or new state file, or a target someone else changed)")
    p.add_argument("--checksum", action="store_true",
                   help="build and hash every document instead of skipping tasks whose rows are unchanged "
                   "(slower; catches edits that change neither a timestamp nor a size)")
    p.add_argument("--metrics-file", metavar="PATH",
                   help="write the run's Prometheus metrics here (temp file + rename), e.g. for node "
                   "exporter's textfile collector")
    p.set_defaults(func=cmd_resync)

    p = sub.add_parser("run", help="keep the target in step with Label Studio until stopped",
                       description="Reconcile once, then watch Label Studio and write every change as it "
                       "happens. SIGTERM/SIGINT: finish in-flight writes and exit 0 (a second signal exits "
                       "at once); SIGHUP: reload the configuration.")
    _common(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="/healthz, /readyz and /metrics (default 127.0.0.1:9187)")
    p.set_defaults(func=cmd_run, projects=None)

    p = sub.add_parser("check", help="check the config, the database and the target, then exit",
                       description="Validate the configuration and connectivity: the database is readable "
                       "and is Label Studio's, the target is reachable and writable (a probe object is "
                       "written and removed), the state file is usable. One line per check; exit 0 only "
                       "if all pass.")
    _common(p)
    p.set_defaults(func=cmd_check)

    for name, verb in (("install-triggers", "install"), ("remove-triggers", "remove")):
        p = sub.add_parser(name, help=f"{verb} PostgreSQL LISTEN/NOTIFY triggers for instant wake-up (writes to DB)",
                           description=f"{verb.capitalize()} the optional triggers that make PostgreSQL notify "
                           "syncd run of every change at once. This is the only syncd command that writes to "
                           "Label Studio's database; without the triggers syncd polls.")
        p.add_argument("--config", metavar="PATH", help="YAML config file (for db:)")
        p.add_argument("--db", metavar="URL", help="postgresql://user:pw@host:port/db (a role that owns the tables)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        p.set_defaults(func=cmd_triggers, verb=verb)

    p = sub.add_parser("config", help="print the default configuration",
                       description="Print the configuration syncd uses when a key is not set "
                       "(config.example.yaml documents each key).")
    p.add_argument("--print-defaults", action="store_true", required=True, help="print every key with its default")
    p.set_defaults(func=cmd_config)

    register_converters(sub)
    return parser


def load_config(args: argparse.Namespace) -> config_mod.Config:
    cfg = config_mod.load(args.config)
    for name in ("db", "target", "state", "log_format", "listen"):
        value = getattr(args, name, None)
        if value:
            setattr(cfg, name, value)
    if getattr(args, "projects", None):
        cfg.projects = list(args.projects)
    if not cfg.target:
        raise ConfigError("no target: pass --target DIR_OR_URL or set target: in the config")
    return config_mod.validate(cfg)


def resync_options(cfg: config_mod.Config, **extra) -> ResyncOptions:
    return ResyncOptions(key_template=cfg.key_template, projects=cfg.projects, delete=cfg.delete,
                         max_delete=cfg.max_delete, transfers=cfg.transfers, predictions=cfg.predictions, **extra)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    logs.setup(cfg.log_format, args.verbose)
    return Daemon(cfg, lambda: load_config(args), resync_options).run()


def cmd_resync(args: argparse.Namespace) -> int:
    try:
        return _resync(args)
    except SyncdError:
        if getattr(args, "metrics_file", None):  # a cron job's monitoring must see the failed run too
            write_resync_metrics(args.metrics_file, Summary(failed=1))
        raise


def _resync(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    logs.setup(cfg.log_format, args.verbose)
    store = open_store(cfg.target, cfg.backend_options(scheme_of(cfg.target)), transfers=cfg.transfers)
    if is_dir_url(cfg.db):
        return _resync_directory(args, cfg, store)
    db = connect(cfg.db)
    state_path = cfg.state_path(store.url)
    scratch = None
    if args.dry_run and args.verify_remote:
        # A dry run must not touch the real checkpoint: plan against a throwaway copy.
        scratch = tempfile.TemporaryDirectory(prefix="syncd-dry-run-")
        state_path = Path(scratch.name) / "state.sqlite3"
    checkpoint = Checkpoint(state_path, store.url)
    progress = logs.Progress("resync")
    try:
        source = LabelStudioSource(db, batch_size=cfg.batch_size)
        options = resync_options(cfg, dry_run=args.dry_run, verify_remote=args.verify_remote,
                                 checksum=args.checksum)
        summary = resync(source, store, checkpoint, options, progress=progress)
        progress.finish()
        bundles = []
        if cfg.bundles and not args.dry_run:
            bundles = publish_changed(source, store, cfg.bundles, DocumentOptions(predictions=cfg.predictions),
                                      summary.changed_projects, cfg.projects, transfers=cfg.transfers)
    finally:
        progress.finish()
        checkpoint.close()
        store.close()
        db.close()
        if scratch is not None:
            scratch.cleanup()
    bundles_line = None
    if bundles:
        count = {status: sum(1 for b in bundles if b.status == status) for status in ("published", "skipped", "failed")}
        if count["failed"]:
            summary.fail(f"{count['failed']} bundle(s) could not be published (see the errors above)")
        bundles_line = f"bundles: {count['published']} published, {count['skipped']} skipped, {count['failed']} failed"
    return _report(args, summary, bundles_line)


def _report(args: argparse.Namespace, summary: Summary, bundles_line: str | None = None) -> int:
    """Print a resync's plan (dry run), notes and summary; write its metrics; return its exit code."""
    if args.dry_run:
        for action in summary.plan:
            print(action.describe())
    for note in summary.notes:
        log.warning("%s", note)
    print(f"syncd resync{' (dry run)' if args.dry_run else ''}: {summary.line(args.dry_run)}")
    if bundles_line:
        print(bundles_line)
    if args.metrics_file:
        write_resync_metrics(args.metrics_file, summary)
    return EXIT_OK if summary.ok else EXIT_FAILED


def _resync_directory(args: argparse.Namespace, cfg: config_mod.Config, store) -> int:
    """``resync`` from a directory of Label Studio task files (``db: dir:///path``)."""
    try:
        scan = settled_scan(DirectorySource.from_url(cfg.db))
        state_path = cfg.state_path(store.url)
        checkpoint = Checkpoint(state_path, store.url)
        syncer = Syncer(None, store, checkpoint, resync_options(cfg, dry_run=args.dry_run))
        try:
            if not args.dry_run:
                store.check_writable()
            summary = syncer.sync_documents(scan.documents, scan.fingerprints, None,
                                            complete=scan.unresolved == 0)
        finally:
            syncer.close()
            checkpoint.close()
    finally:
        store.close()
    for error in scan.errors:
        summary.fail(error)
    return _report(args, summary)


def write_resync_metrics(path: str, summary) -> None:
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    for name, help_text, value in (
            ("syncd_resync_success", "1 if the last resync wrote everything", 1 if summary.ok else 0),
            ("syncd_resync_last_run_timestamp_seconds", "When the last resync finished", time.time()),
            ("syncd_resync_duration_seconds", "How long the last resync took", summary.seconds),
            ("syncd_resync_tasks_scanned", "Labeled tasks seen by the last resync", summary.scanned),
            ("syncd_resync_objects_written", "Objects written by the last resync", summary.written),
            ("syncd_resync_objects_unchanged", "Objects already up to date", summary.unchanged),
            ("syncd_resync_objects_deleted", "Objects deleted by the last resync", summary.deleted),
            ("syncd_resync_objects_orphaned", "Objects of unlabeled or deleted tasks left in place", summary.orphaned),
            ("syncd_resync_failures", "Tasks or objects that failed in the last resync", summary.failed)):
        Gauge(name, help_text, registry=registry).set(value)
    try:
        write_to_textfile(path, registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-file {path}: cannot write it ({exc.strerror})") from None


def cmd_triggers(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    url = args.db or cfg.db or default_db_url()
    if args.verb == "install":
        tables = triggers.install(url)
        print(f"installed LISTEN/NOTIFY triggers on {', '.join(tables)} at {mask_url(url)}")
    else:
        triggers.remove(url)
        print(f"removed syncd's triggers at {mask_url(url)}")
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    defaults = {key: getattr(config_mod.Config(), key) for key in config_mod.KEYS}
    print("# syncd's defaults; config.example.yaml explains every key.")
    print(yaml.safe_dump(defaults, sort_keys=False, allow_unicode=True), end="")
    return EXIT_OK


def _check_source(cfg: config_mod.Config) -> tuple[bool, str]:
    if is_dir_url(cfg.db):
        scan = settled_scan(DirectorySource.from_url(cfg.db))
        problems = f", {len(scan.errors)} unreadable files" if scan.errors else ""
        return not scan.errors, f"directory {cfg.db}: {len(scan.documents)} labeled tasks{problems}"
    db = connect(cfg.db)
    try:
        source = LabelStudioSource(db)
        projects = source.projects()
        labeled = source.count_labeled(cfg.projects)
    finally:
        db.close()
    missing = [p for p in cfg.projects if p not in projects]
    if missing:
        return False, f"database {db.url}: no project {', '.join(map(str, missing))}"
    return True, f"database {db.url}: Label Studio, {len(projects)} projects, {labeled} labeled tasks"


def cmd_check(args: argparse.Namespace) -> int:
    results: list[tuple[bool, str]] = []
    try:
        cfg = load_config(args)
    except ConfigError as exc:
        print(f"FAIL config: {exc}")
        return EXIT_USAGE
    results.append((True, f"config: {cfg.source_file or 'command line'} is valid"))
    try:
        results.append(_check_source(cfg))
    except SyncdError as exc:
        results.append((False, f"database: {exc}"))
    store = None
    try:
        store = open_store(cfg.target, cfg.backend_options(scheme_of(cfg.target)), transfers=cfg.transfers)
        store.check_writable()
        results.append((True, f"target {store.url}: reachable and writable"))
    except SyncdError as exc:
        results.append((False, f"target {cfg.target}: {exc}"))
    finally:
        if store is not None:
            store.close()
    if store is not None:
        state_path = cfg.state_path(store.url)
        try:
            Checkpoint(state_path, store.url).close()
            results.append((True, f"state {state_path}: usable"))
        except SyncdError as exc:
            results.append((False, f"state: {exc}"))
    for ok, line in results:
        print(f"{'ok  ' if ok else 'FAIL'} {line}")
    return EXIT_OK if all(ok for ok, _ in results) else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(getattr(args, "log_format", None) or "text", getattr(args, "verbose", False))
    try:
        return args.func(args)
    except (ConfigError, SourceError, FatalStoreError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except StoreError as exc:
        log.error("%s", exc)
        return EXIT_USAGE if exc.fatal else EXIT_FAILED
    except SyncdError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        log.error("interrupted; the next run continues where this one stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
