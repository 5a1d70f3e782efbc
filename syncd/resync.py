"""Syncing: source -> task documents -> plan -> store -> checkpoint.

``Syncer`` does the work for both modes: ``full()`` is ``syncd resync`` (every labeled task is
read and encoded), ``sync_tasks()`` is the daemon's incremental step (only the tasks a change
touched), ``reconcile()`` is the daemon's periodic check of what timestamps miss. In all three,
only documents whose bytes differ from what the checkpoint says was written are put; the
checkpoint is updated after each acknowledged write; keys whose task is gone are deleted (or
reported as orphaned) only by a pass that had no errors.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field

from syncd.checkpoint import Checkpoint, Entry
from syncd.document import DocumentOptions, TaskDocument, build_document
from syncd.errors import BadTask, StoreError, SyncdError
from syncd.keys import UnsafeKey, render_key, template_pattern, template_prefix
from syncd.plan import Action, plan_document, plan_removals
from syncd.source import LabelStudioSource, TaskRows
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
    checksum: bool = False  # build and hash every document instead of trusting row fingerprints


@dataclass
class Summary:
    scanned: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    orphaned: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    failed_tasks: set[int] = field(default_factory=set)
    changed_projects: set[int] = field(default_factory=set)  # projects with a written or deleted object
    notes: list[str] = field(default_factory=list)
    plan: list[Action] = field(default_factory=list)  # filled in a dry run
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def fail(self, message: str, task_id: int | None = None) -> None:
        self.failed += 1
        self.failures.append(message)
        if task_id is not None:
            self.failed_tasks.add(task_id)
        log.error("%s", message)

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


class Syncer:
    def __init__(self, source: LabelStudioSource | None, store: Store, checkpoint: Checkpoint, options: ResyncOptions,
                 stop: threading.Event | None = None):
        self.source = source
        self.store = store
        self.checkpoint = checkpoint
        self.options = options
        self.stop = stop or threading.Event()
        self.doc_options = DocumentOptions(predictions=options.predictions)
        self.transfers = Transfers(options.transfers)
        self._fatal: list[StoreError] = []
        self._summary = Summary()
        self.projects: dict = {}
        self.users: dict = {}

    def close(self) -> None:
        try:
            # Record what the store already acknowledged, even when a pass was cut short.
            self.transfers.drain(self._done)
        finally:
            self.transfers.close()
            if not self.options.dry_run:
                self.checkpoint.flush()

    # -------------------------------------------------------------- the three passes

    def full(self, progress: Callable[[int, int], None] | None = None) -> Summary:
        """Reconcile every labeled task (``syncd resync``, and the daemon's start)."""
        summary = self._begin()
        if not self.options.dry_run:
            self.store.check_writable()
        if self.options.verify_remote:
            adopt_remote_state(self.store, self.checkpoint, self.options.key_template)
        total = self.source.count_labeled(self.options.projects)
        seen: set[str] = set()
        batch = self.source.batch_size
        listing = self.source.fingerprints(self.options.projects, batch=batch * 4)
        while not self.stop.is_set():
            chunk = list(itertools.islice(listing, batch * 4))
            if not chunk:
                break
            self._plan_rows(self.source.read_tasks(self._stale(chunk, seen), self.options.projects), seen)
            if progress:
                progress(summary.scanned, max(total, summary.scanned))
        self._drain()
        if self.stop.is_set():
            raise SyncdError("interrupted; the next run continues where this one stopped")
        self._remove([e for e in self.checkpoint.entries(self.options.projects) if e.key not in seen])
        return self._end()

    def sync_tasks(self, task_ids: Iterable[int]) -> Summary:
        """Bring these tasks up to date: rewrite changed ones, remove the ones no longer labeled."""
        ids = set(task_ids)
        self._begin()
        if not ids:
            return self._end()
        seen: set[str] = set()
        self._plan_rows(self.source.read_tasks(ids, self.options.projects), seen)
        self._drain()
        self._remove([e for e in self.checkpoint.for_tasks(ids) if e.key not in seen])
        return self._end()

    def sync_documents(self, documents: dict[int, TaskDocument], fingerprints: dict[int, str],
                       changed: set[int] | None = None, complete: bool = True) -> Summary:
        """Bring the target in step with ready-made documents (the ``dir://`` source).

        ``changed``: only these tasks moved (None: all of them, a full reconcile). Tasks missing
        from ``documents`` are removed only when the caller's view is ``complete``: a
        directory with files still being written or unreadable may merely hide them."""
        self._begin()
        summary = self._summary
        wanted = set(self.options.projects)
        ids = set(documents) if changed is None else changed & set(documents)
        seen: set[str] = set()
        planned = []
        for task_id in sorted(ids):
            doc = documents[task_id]
            if wanted and doc.project_id not in wanted:
                continue
            summary.scanned += 1
            key = self._key(task_id, doc.project_id)
            if key is not None:
                seen.add(key)
                planned.append((doc, key, fingerprints.get(task_id, "")))
        self._put_changed(planned)
        self._drain()
        if changed is None:
            candidates = [e for e in self.checkpoint.entries(self.options.projects) if e.key not in seen]
        else:
            candidates = [e for e in self.checkpoint.for_tasks(changed) if e.key not in seen
                          and (not wanted or e.project_id in wanted)]
        if candidates and not complete:
            summary.orphaned += len(candidates)
            summary.notes.append(f"{len(candidates)} deletion(s) held back: some files are still being "
                                 "written or cannot be read")
        else:
            self._remove(candidates)
        return self._end()

    def _stale(self, listing: list[tuple[int, int | None, str]], seen: set[str]) -> list[int]:
        """Tasks whose rows changed since their document was written (by fingerprint); the
        others count as unchanged without being read or encoded. With ``checksum``, all."""
        if self.options.checksum:
            return [task_id for task_id, _, _ in listing]
        keys = {}
        for task_id, project_id, _ in listing:
            project = self.projects.get(project_id)
            try:
                keys[task_id] = render_key(self.options.key_template, task_id, project_id,
                                           project.slug if project else f"project-{project_id}")
            except UnsafeKey:
                keys[task_id] = None  # read as stale: _plan_rows reports it
        previous = self.checkpoint.get_many(k for k in keys.values() if k)
        stale = []
        for task_id, _, fingerprint in listing:
            entry = previous.get(keys[task_id]) if keys[task_id] else None
            if entry and entry.task_id == task_id and entry.fingerprint == self.doc_options.fingerprint(fingerprint):
                seen.add(entry.key)
                self._summary.scanned += 1
                self._summary.unchanged += 1
            else:
                stale.append(task_id)
        return stale

    def reconcile(self) -> Summary:
        """Find what timestamps miss (deleted rows, bulk updates that leave ``updated_at``
        alone, edits made with SQL) by comparing row fingerprints with the checkpoint."""
        stored: dict[int, list[Entry]] = {}
        for entry in self.checkpoint.entries(self.options.projects):
            stored.setdefault(entry.task_id, []).append(entry)
        changed: set[int] = set()
        for task_id, _project_id, fingerprint in self.source.fingerprints(self.options.projects):
            entries = stored.pop(task_id, None)
            expected = self.doc_options.fingerprint(fingerprint)
            if not entries or any(e.fingerprint != expected for e in entries):
                changed.add(task_id)
        changed.update(stored)  # in the checkpoint, but no longer labeled (or gone)
        return self.sync_tasks(changed)

    # -------------------------------------------------------------- internals

    def _begin(self) -> Summary:
        self._summary = Summary()
        self._started = time.monotonic()
        self._fatal.clear()
        if self.source is not None:  # the dir:// source brings ready-made documents
            self.projects = self.source.projects()
            self.users = self.source.users()
        return self._summary

    def _end(self) -> Summary:
        self._drain()
        self._summary.seconds = time.monotonic() - self._started
        return self._summary

    def _drain(self) -> None:
        self.transfers.drain(self._done)
        if self._fatal:
            raise FatalStoreError(str(self._fatal[0]))

    def _key(self, task_id: int, project_id: int | None) -> str | None:
        """The task's object key; None (reported as a failure) when the template makes it unsafe."""
        project = self.projects.get(project_id)
        try:
            return render_key(self.options.key_template, task_id, project_id,
                              project.slug if project else f"project-{project_id}")
        except UnsafeKey as exc:
            self._summary.fail(f"task {task_id}: unsafe key ({exc}); change key_template", task_id)
            return None

    def _plan_rows(self, batch: list[TaskRows], seen: set[str]) -> None:
        planned = []
        for rows in batch:
            self._summary.scanned += 1
            key = self._key(rows.id, rows.project_id)
            if key is None:
                continue
            # Mark the key seen before building: a task that fails to build keeps its object.
            seen.add(key)
            try:
                doc = build_document(rows, self.projects.get(rows.project_id), self.users, self.doc_options)
            except BadTask as exc:
                self._summary.fail(str(exc), rows.id)
                continue
            planned.append((doc, key, self.doc_options.fingerprint(rows.fingerprint)))
        self._put_changed(planned)

    def _put_changed(self, planned: list[tuple[TaskDocument, str, str]]) -> None:
        """PUT the documents whose bytes differ from what the checkpoint says was written."""
        previous = self.checkpoint.get_many(key for _, key, _ in planned)
        for doc, key, fingerprint in planned:
            before = previous.get(key)
            action = plan_document(doc, key, before)
            if action.kind != "skip":
                self._apply(action, fingerprint)
                continue
            self._summary.unchanged += 1
            if fingerprint and before is not None and before.fingerprint != fingerprint and not self.options.dry_run:
                self.checkpoint.record_fingerprint(key, fingerprint)

    def _remove(self, gone: list[Entry]) -> None:
        summary = self._summary
        removals, held_back = plan_removals(gone, self.options.delete, summary.failed > 0, self.options.max_delete)
        if held_back:
            summary.notes.append(held_back)
            if "max_delete" in held_back:
                summary.fail(held_back)
        for action in removals:
            if action.kind == "orphan":
                summary.orphaned += 1
                if self.options.dry_run:
                    summary.plan.append(action)
            else:
                self._apply(action)
        self._drain()

    def _apply(self, action: Action, fingerprint: str = "") -> None:
        # The one place that touches the store: a dry run stops here.
        summary = self._summary
        if self.options.dry_run:
            summary.plan.append(action)
            if action.kind == "put":
                summary.written += 1
            elif action.kind == "delete":
                summary.deleted += 1
            return
        store, stop = self.store, self.stop
        if action.kind == "put":
            doc = action.document

            def op() -> None:
                with_retries(lambda: store.put(action.key, doc.body, doc.sha256), action.key, stop=stop)
        else:
            def op() -> None:
                with_retries(lambda: store.delete(action.key), action.key, stop=stop)
        self.transfers.submit(op, (action, fingerprint), self._done)

    def _done(self, tag: tuple[Action, str], future: Future) -> None:
        action, fingerprint = tag
        summary = self._summary
        exc = future.exception()
        if exc is None:
            if action.project_id is not None:
                summary.changed_projects.add(action.project_id)
            if action.kind == "put":
                doc = action.document
                self.checkpoint.record_put(action.key, action.task_id, action.project_id, doc.sha256,
                                           len(doc.body), fingerprint)
                summary.written += 1
            else:
                self.checkpoint.record_delete(action.key)
                summary.deleted += 1
            return
        if isinstance(exc, StoreError) and exc.fatal:
            self._fatal.append(exc)
            self.stop.set()
        summary.fail(f"{action.kind} {action.key} (task {action.task_id}) failed: {exc}", action.task_id)


def resync(source: LabelStudioSource, store: Store, checkpoint: Checkpoint, options: ResyncOptions,
           progress: Callable[[int, int], None] | None = None,
           stop: threading.Event | None = None) -> Summary:
    """One full reconcile (``syncd resync``)."""
    syncer = Syncer(source, store, checkpoint, options, stop)
    try:
        return syncer.full(progress)
    finally:
        syncer.close()


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
