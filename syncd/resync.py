"""A full reconcile: source -> task documents -> plan -> store -> checkpoint.

Every labeled task is read and encoded; only documents whose bytes differ from what the
checkpoint says was written are put; the checkpoint is updated after each acknowledged write;
keys whose task is gone are deleted (or reported) only after a complete, error-free scan.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from syncd.checkpoint import Checkpoint
from syncd.document import DocumentOptions, build_document
from syncd.errors import BadTask, StoreError, SyncdError
from syncd.keys import UnsafeKey, render_key, template_pattern, template_prefix
from syncd.plan import Action, plan_document, plan_removals
from syncd.source import LabelStudioSource
from syncd.stores.base import Store
from syncd.transfer import Transfers, with_retries

log = logging.getLogger("syncd")


@dataclass
class ResyncOptions:
    key_template: str = "{task_id}.json"
    projects: list[int] = field(default_factory=list)
    delete: bool = False
    max_delete: int | None = None
    transfers: int = 8
    dry_run: bool = False
    predictions: str = "full"
    verify_remote: bool = False


@dataclass
class Summary:
    scanned: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    orphaned: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plan: list[Action] = field(default_factory=list)  # filled in a dry run
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def line(self, dry_run: bool = False) -> str:
        verb = "would write" if dry_run else "written"
        dverb = "would delete" if dry_run else "deleted"
        if self.written == 0 and self.deleted == 0 and self.failed == 0 and not dry_run:
            head = f"{self.scanned} tasks scanned: nothing to write ({self.unchanged} unchanged)"
        else:
            head = f"{self.scanned} tasks scanned: {self.written} {verb}, {self.unchanged} unchanged"
        return (f"{head}, {self.deleted} {dverb}, {self.orphaned} orphaned, {self.failed} failed "
                f"({self.seconds:.1f}s)")


class FatalStoreError(SyncdError):
    """The target as a whole failed (missing bucket, access denied, disk full)."""


def resync(source: LabelStudioSource, store: Store, checkpoint: Checkpoint, options: ResyncOptions,
           progress: Callable[[int, int], None] | None = None,
           stop: threading.Event | None = None) -> Summary:
    started = time.monotonic()
    summary = Summary()
    stop = stop or threading.Event()
    if not options.dry_run:
        store.check_writable()
    if options.verify_remote:
        adopt_remote_state(store, checkpoint, options.key_template)
    projects = source.projects()
    users = source.users()
    doc_options = DocumentOptions(predictions=options.predictions)
    total = source.count_labeled(options.projects)
    seen: set[str] = set()
    fatal: list[StoreError] = []
    transfers = Transfers(options.transfers)

    def done(action: Action, future: Future) -> None:
        exc = future.exception()
        if exc is None:
            if action.kind == "put":
                doc = action.document
                checkpoint.record_put(action.key, action.task_id, action.project_id, doc.sha256, len(doc.body))
                summary.written += 1
            else:
                checkpoint.record_delete(action.key)
                summary.deleted += 1
            return
        if isinstance(exc, StoreError) and exc.fatal:
            fatal.append(exc)
            stop.set()
        summary.failed += 1
        message = f"{action.kind} {action.key} (task {action.task_id}) failed: {exc}"
        summary.failures.append(message)
        log.error("%s", message)

    def apply(action: Action) -> None:
        # The one place that touches the store: a dry run stops here.
        if options.dry_run:
            summary.plan.append(action)
            if action.kind == "put":
                summary.written += 1
            elif action.kind == "delete":
                summary.deleted += 1
            return
        if action.kind == "put":
            doc = action.document

            def op() -> None:
                with_retries(lambda: store.put(action.key, doc.body, doc.sha256), action.key, stop=stop)
        else:
            def op() -> None:
                with_retries(lambda: store.delete(action.key), action.key, stop=stop)
        transfers.submit(op, action, done)

    try:
        batch: list = []
        for rows in source.iter_labeled(options.projects):
            batch.append(rows)
            if len(batch) >= source.batch_size:
                _process_batch(batch, projects, users, doc_options, options, checkpoint, seen, summary, apply)
                batch = []
                if progress:
                    progress(summary.scanned, total)
            if stop.is_set():
                break
        if batch and not stop.is_set():
            _process_batch(batch, projects, users, doc_options, options, checkpoint, seen, summary, apply)
        if progress:
            progress(summary.scanned, max(total, summary.scanned))
        transfers.drain(done)
        if fatal:
            raise FatalStoreError(f"{fatal[0]}")
        if stop.is_set():
            raise SyncdError("interrupted; the next run continues where this one stopped")

        gone = [e for e in checkpoint.entries(options.projects) if e.key not in seen]
        removals, held_back = plan_removals(gone, options.delete, summary.failed > 0, options.max_delete)
        if held_back:
            summary.notes.append(held_back)
            if "max_delete" in held_back:
                summary.failed += 1
                summary.failures.append(held_back)
        for action in removals:
            if action.kind == "orphan":
                summary.orphaned += 1
                if options.dry_run:
                    summary.plan.append(action)
            else:
                apply(action)
        transfers.drain(done)
        if fatal:
            raise FatalStoreError(f"{fatal[0]}")
    finally:
        transfers.close()
        if not options.dry_run:
            checkpoint.flush()
    summary.seconds = time.monotonic() - started
    return summary


def adopt_remote_state(store: Store, checkpoint: Checkpoint, key_template: str) -> int:
    """Replace the checkpoint with what the target holds (``--verify-remote``).

    For a lost or new state file, or a bucket someone else touched: the store's listing and
    stored hashes become the truth, so only what differs is uploaded. Objects whose key the
    template could not have produced are not syncd's and are left alone. Returns how many
    objects were adopted.
    """
    pattern = template_pattern(key_template)
    checkpoint.forget_all()
    adopted = 0
    for info in store.list(template_prefix(key_template)):
        match = pattern.match(info.key)
        if not match:
            continue
        project = match.groupdict().get("project_id")
        checkpoint.record_put(info.key, int(match["task_id"]),
                              int(project) if project and project.isdigit() else None,
                              info.sha256 or "", info.size)
        adopted += 1
    checkpoint.flush()
    log.info("verify-remote: %d objects found at the target", adopted)
    return adopted


def _process_batch(batch, projects, users, doc_options, options, checkpoint, seen, summary, apply) -> None:
    planned: list[tuple] = []
    for rows in batch:
        summary.scanned += 1
        project = projects.get(rows.project_id)
        slug = project.slug if project else f"project-{rows.project_id}"
        try:
            key = render_key(options.key_template, rows.id, rows.project_id, slug)
        except UnsafeKey as exc:
            summary.failed += 1
            summary.failures.append(f"task {rows.id}: unsafe key ({exc}); change key_template")
            log.error("%s", summary.failures[-1])
            continue
        # Mark the key seen before building: a task that fails to build keeps its object.
        seen.add(key)
        try:
            doc = build_document(rows, project, users, doc_options)
        except BadTask as exc:
            summary.failed += 1
            summary.failures.append(str(exc))
            log.error("%s", exc)
            continue
        planned.append((doc, key))
    previous = checkpoint.get_many(key for _, key in planned)
    for doc, key in planned:
        action = plan_document(doc, key, previous.get(key))
        if action.kind == "skip":
            summary.unchanged += 1
        else:
            apply(action)
