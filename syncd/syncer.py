"""The syncer: source -> task documents -> plan -> store -> checkpoint, for any source.

``Syncer`` does the work of every mode: ``full()`` is ``syncd resync`` (every labeled task
whose fingerprint changed is read and encoded), ``sync_tasks()`` is the daemon's incremental
step (only the tasks a change touched), ``reconcile()`` is the daemon's periodic check of what
change feeds miss. In all three, only documents whose bytes differ from what the checkpoint
says was written are put; the checkpoint is updated after each acknowledged write; keys whose
task is gone are deleted (or reported as orphaned) only by a pass that had no errors, and only
when the source's view is ``complete``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from syncd.audit import AuditResult, adopt, audit, keep_marker, trusted
from syncd.checkpoint import Checkpoint, Entry
from syncd.document import TaskDocument
from syncd.errors import BadTask, StoreError, SyncdError
from syncd.keys import UnsafeKey, render_key
from syncd.leases import ProjectLeases
from syncd.logs import OBJECTS
from syncd.ops.events import Events
from syncd.plan import Action, Removals, plan_document, plan_removals, removal
from syncd.sources.base import Source
from syncd.stores.base import Store
from syncd.transfer import Transfers

log = logging.getLogger("syncd")
objects_log = logging.getLogger(OBJECTS)

CHUNK = 2000  # tasks compared with the checkpoint (and documents planned) at a time
MAX_LISTED = 100  # orphans a summary names
GROUP = 64  # objects a store with put_many (a local directory) makes durable together


@dataclass
class ResyncOptions:
    key_template: str = "{task_id}.json"
    projects: list[int] = field(default_factory=list)
    delete: bool = False
    max_delete: int | None = None
    transfers: int = 8
    dry_run: bool = False
    verify_remote: bool = False
    checksum: bool = False  # build and hash every document instead of trusting row fingerprints
    audit: bool = True  # compare the checkpoint with the target's listing before a full pass
    orphan_lines: bool = True  # a -v line per orphan on every pass (the daemon reports each once itself)


@dataclass
class ProjectTally:
    """One project's share of a run (for the status page and notifications)."""

    written: int = 0
    deleted: int = 0
    failed: int = 0
    last_error: str | None = None
    failed_tasks: set[int] = field(default_factory=set)  # not in events: for the status page

    def event_data(self) -> dict:
        return {"written": self.written, "deleted": self.deleted, "failed": self.failed,
                "last_error": self.last_error}


@dataclass
class Summary:
    scanned: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    orphaned: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)  # failures by reason (syncd_failures_total)
    failed_tasks: set[int] = field(default_factory=set)
    changed_projects: set[int] = field(default_factory=set)  # projects with a written or deleted object
    notes: list[str] = field(default_factory=list)
    plan: list[Action] = field(default_factory=list)  # filled in a dry run
    audit: AuditResult | None = None  # of a full pass
    orphans: list[Action] = field(default_factory=list)  # left in place (the first MAX_LISTED)
    projects: dict[int, ProjectTally] = field(default_factory=dict)  # the projects written, deleted or failed
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def fail(self, message: str, task_id: int | None = None, reason: str = "write",
             project_id: int | None = None) -> None:
        """Count one failure: ``reason`` is ``write`` (the store refused an object), ``task`` (a
        task's rows cannot be read), ``key`` (the key template makes an unsafe key), ``source``
        (a file of the source cannot be read), ``bundle`` or ``other``."""
        self.failed += 1
        self.reasons[reason] += 1
        self.failures.append(message)
        if task_id is not None:
            self.failed_tasks.add(task_id)
        if project_id is not None:
            tally = self.tally(project_id)
            tally.failed += 1
            tally.last_error = message
            if task_id is not None:
                tally.failed_tasks.add(task_id)
        log.error("%s", message)

    def tally(self, project_id: int) -> ProjectTally:
        return self.projects.setdefault(project_id, ProjectTally())

    def event_data(self, full: bool = False) -> dict:
        """The ``sync.completed`` event's data (``syncd.ops.events``)."""
        return {"scanned": self.scanned, "written": self.written, "unchanged": self.unchanged,
                "deleted": self.deleted, "orphaned": self.orphaned, "failed": self.failed,
                "seconds": round(self.seconds, 3), "full": full,
                "projects": {pid: t.event_data() for pid, t in sorted(self.projects.items())},
                "failures": self.failures[:MAX_LISTED]}

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
    """The target as a whole cannot be used (missing bucket, access denied, disk full, or not
    reachable when a run starts). ``retryable``: it may pass (a network error, throttling)."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class Syncer:
    """Keeps one target in step with one source (any ``Source``), through one checkpoint."""

    def __init__(self, source: Source, store: Store, checkpoint: Checkpoint, options: ResyncOptions,
                 stop: threading.Event | None = None, leases: ProjectLeases | None = None,
                 events: Events | None = None):
        self.source = source
        self.events = events or Events()  # target.audit_mismatch
        self.leases = leases  # sharing the target with other processes: work on the projects held
        self.store = store
        self.checkpoint = checkpoint
        self.options = options
        self.stop = stop or threading.Event()
        self.transfers = Transfers(options.transfers)
        self._fatal: list[StoreError] = []
        self._summary = Summary()
        self._reported: set[str] = set()  # the source's problems already counted as failures
        # Keys written this pass over another task's entry (a template that renders one key for
        # two tasks; rare): that entry, perhaps read as gone already, must not remove the key.
        self._claimed: set[str] = set()
        # A store that can make a batch durable at once (LocalStore.put_many): puts are grouped.
        self._put_many: Callable[[list[tuple[str, bytes, str]]], list] | None = getattr(store, "put_many", None)
        self._group: list[tuple[Action, str]] = []
        self.projects: dict = {}

    def close(self) -> None:
        try:
            # Record what the store already acknowledged, even when a pass was cut short.
            self._submit_group()
            self.transfers.drain(self._done)
        finally:
            self.transfers.close()
            if not self.options.dry_run:
                self.checkpoint.flush()

    # -------------------------------------------------------------- the three passes

    def _scope(self, only: Iterable[int] | None = None) -> list[int] | None:
        """The projects a pass works on: the configured ones ([]: all) or, sharing the target,
        those this process holds (of ``only``); None when that is none."""
        if self.leases is None:
            return self.options.projects
        held = self.leases.held()
        projects = sorted(held & set(only) if only is not None else held)
        return projects or None

    def full(self, progress: Callable[[int, int], None] | None = None,
             projects: Iterable[int] | None = None) -> Summary:
        """Reconcile every labeled task (``syncd resync``, and the daemon's start), or those of
        ``projects`` (a process that took over projects)."""
        summary = self._begin()
        if not self.options.dry_run:
            try:
                self.store.check_writable()
            except StoreError as exc:  # the target cannot be used: no object would fare better
                raise FatalStoreError(str(exc), retryable=exc.retryable) from None
        if projects is None and (self.leases is None or self.leases.holds_target()):
            summary.audit = self.audit(listing=self.options.audit)  # (sharing: one process does it)
        self.source.refresh()
        projects = self._scope(projects)
        if projects is None:
            return self._end()
        total = self.source.count_labeled(projects)

        def report() -> None:
            progress(summary.scanned, max(total, summary.scanned))

        if not self._pass(projects, reconcile=False, progress=report if progress else None):
            raise SyncdError("interrupted; the next run continues where this one stopped")
        return self._end()

    def sync_tasks(self, task_ids: Iterable[int]) -> Summary:
        """Bring these tasks up to date: rewrite changed ones, remove the ones no longer labeled."""
        ids = set(task_ids)
        self._begin()
        projects = self._scope()
        if ids and projects is not None:
            seen: set[str] = set()
            self._plan(self.source.documents(ids, projects), seen)
            self._drain()
            wanted = set(projects)
            if not self.stop.is_set():  # (stopped: some documents were not planned, so not seen)
                with Removals() as gone:
                    for entry in self.checkpoint.for_tasks(ids):
                        if entry.key not in seen and (not wanted or entry.project_id in wanted):
                            gone.add(entry)
                    self._remove(gone)
        return self._end()

    def audit(self, listing: bool = True) -> AuditResult | None:
        """Make sure the checkpoint says what the target holds (``syncd.audit``): rebuild it from
        the target's listing when the target's marker does not match it (or with
        ``verify_remote``), else compare the two when ``listing``. What is missing or differs
        is forgotten, so the pass that follows writes it again."""
        ok, found = trusted(self.store, self.checkpoint)
        if self.options.verify_remote or not ok:
            result = adopt(self.store, self.checkpoint, self.options.key_template, self.options.transfers)
        elif listing:
            result = audit(self.store, self.checkpoint, self.options.key_template)
        else:
            result = None
        if not self.options.dry_run:
            keep_marker(self.store, self.checkpoint, found)
        if result is not None:
            level = logging.WARNING if result.mismatched else \
                logging.INFO if result.adopted or result.foreign else logging.DEBUG
            log.log(level, "%s", result.line(self.store.url))
            if result.mismatched:
                self.events.publish("target.audit_mismatch", missing=result.missing, differing=result.differs,
                                    rewritten=result.missing + result.differs, checked=result.checked,
                                    adopted=result.adopted)
        return result

    def reconcile(self) -> Summary:
        """Find what change feeds miss (deleted rows, bulk updates that leave ``updated_at``
        alone, edits made with SQL) by comparing fingerprints with the checkpoint: the tasks
        with an entry whose fingerprint differs, without an entry, or with entries but no
        longer labeled are synced again (the others are not counted as scanned)."""
        projects = self._scope()
        if projects is None:
            return self.sync_tasks(())
        self._begin()
        self._pass(projects, reconcile=True)  # (stopped: the daemon is ending, nothing removed)
        return self._end()

    def _pass(self, projects: list[int], reconcile: bool, progress: Callable[[], None] | None = None) -> bool:
        """Compare the source's fingerprints with the checkpoint's entries, both streamed in task
        id order (a merge: memory stays flat in the number of tasks), a chunk at a time; sync
        the tasks that differ; then remove what the source no longer has. False when stopped
        before the end (nothing is removed then)."""
        with Removals() as gone:
            def forget(entry: Entry) -> None:
                if self.leases is None or self.leases.valid(entry.project_id):
                    gone.add(entry)

            def settle(documents: Iterable[TaskDocument | BadTask], kept: set[str],
                       entries: dict[int, list[Entry]]) -> None:
                self._plan(documents, kept)
                for task_entries in entries.values():
                    for entry in task_entries:
                        if entry.key not in kept:
                            forget(entry)
                if progress:
                    progress()

            stored = _ByTask(self.checkpoint.entries(projects))
            # Nothing recorded yet (a first sync), or --checksum: every task is built, and no
            # fingerprint of the listing is compared (each document carries its own).
            bare = stored.empty or (self.options.checksum and not reconcile)
            listing = self.source.fingerprints(projects, bare=bare)
            # A chunk's documents are asked for before the previous chunk's are planned: a source
            # that builds them in other processes (a Label Studio database) works on them while
            # this one writes and checkpoints.
            previous: tuple | None = None
            while not self.stop.is_set():
                chunk = list(itertools.islice(listing, CHUNK))
                if not chunk:
                    break
                last_id = chunk[-1][0]
                if self.leases is not None:  # projects handed to a process that joined are its now
                    chunk = [row for row in chunk if self.leases.valid(row[1])]
                entries = stored.upto(last_id, {row[0] for row in chunk}, forget)
                kept: set[str] = set()  # keys of this chunk's tasks that stay
                stale = self._stale(chunk, entries, kept, reconcile)
                documents = self.source.documents(stale, projects) if stale else ()
                if previous is not None:
                    settle(*previous)
                previous = (documents, kept, entries)
            if previous is not None and not self.stop.is_set():
                settle(*previous)
            self._drain()
            if self.stop.is_set():
                return False
            for entry in stored.rest():
                forget(entry)
            self._remove(gone)
        return True

    def _stale(self, listing: list[tuple[int, int | None, str]], stored: dict[int, list[Entry]], kept: set[str],
               reconcile: bool) -> list[int]:
        """Tasks whose fingerprint changed since their document was written (``stored``: their
        entries); the keys of the others go to ``kept``. In a full pass they count as unchanged
        without being read or encoded (with ``checksum``, all are stale); ``reconcile`` checks
        every entry of a task and does not count the unchanged."""
        if self.options.checksum and not reconcile:
            return [task_id for task_id, _, _ in listing]
        stale = []
        for task_id, project_id, fingerprint in listing:
            entries = stored.get(task_id, ())
            if reconcile:
                if entries and all(e.fingerprint == fingerprint for e in entries):
                    kept.update(e.key for e in entries)
                else:
                    stale.append(task_id)
                continue
            try:
                key = self._render(task_id, project_id)
            except UnsafeKey:
                key = None  # read as stale: _plan reports it
            entry = next((e for e in entries if e.key == key), None)
            if entry and fingerprint and entry.fingerprint == fingerprint:
                kept.add(entry.key)
                self._summary.scanned += 1
                self._summary.unchanged += 1
            else:
                stale.append(task_id)
        return stale

    # -------------------------------------------------------------- internals

    def _begin(self) -> Summary:
        self._summary = Summary()
        self._started = time.monotonic()
        self._fatal.clear()
        self._claimed.clear()
        self.projects = self.source.projects()
        return self._summary

    def _end(self) -> Summary:
        self._drain()
        if self.leases is not None and not self.options.dry_run:
            self.checkpoint.flush()  # other processes read these records (a project handed over)
        problems = self.source.problems
        for problem in problems:
            if problem not in self._reported:
                self._summary.fail(problem, reason="source")
        self._reported = set(problems)
        self._summary.seconds = time.monotonic() - self._started
        return self._summary

    def _drain(self) -> None:
        self._submit_group()
        self.transfers.drain(self._done)
        if self._fatal:
            raise FatalStoreError(str(self._fatal[0]))

    def _render(self, task_id: int, project_id: int | None) -> str:
        project = self.projects.get(project_id)
        return render_key(self.options.key_template, task_id, project_id,
                          project.slug if project else f"project-{project_id}")

    def _plan(self, documents: Iterable[TaskDocument | BadTask], seen: set[str]) -> None:
        """PUT the documents whose bytes differ from what the checkpoint says was written."""
        planned: list[tuple[TaskDocument, str]] = []
        for doc in documents:
            if self.stop.is_set():
                # Stopping (SIGTERM, a fatal store error): what is planned but not yet handed to
                # the store is left to the next pass; the caller removes nothing.
                return
            self._summary.scanned += 1
            try:
                key = self._render(doc.task_id, doc.project_id) if isinstance(doc, TaskDocument) else None
            except UnsafeKey as exc:
                self._summary.fail(f"task {doc.task_id}: unsafe key ({exc}); change key_template", doc.task_id, "key",
                                   doc.project_id)
                continue
            if isinstance(doc, BadTask):
                # A task that cannot be built keeps its object: mark its key seen.
                seen.update(e.key for e in self.checkpoint.for_tasks([doc.task_id]))
                self._summary.fail(str(doc), doc.task_id, "task", doc.project_id)
                continue
            seen.add(key)
            planned.append((doc, key))
            if len(planned) >= CHUNK:
                self._put_changed(planned)
                planned = []
        self._put_changed(planned)

    def _put_changed(self, planned: list[tuple[TaskDocument, str]]) -> None:
        previous = self.checkpoint.get_many(key for _, key in planned)
        for doc, key in planned:
            before = previous.get(key)
            if before is not None and before.task_id != doc.task_id:
                self._claimed.add(key)
            action = plan_document(doc, key, before)
            if action.kind != "skip":
                self._apply(action, doc.fingerprint)
                continue
            self._summary.unchanged += 1
            if before.sha256 != doc.sha256:  # known by its ETag only (read from a listing): now by hash
                self.checkpoint.record_put(key, doc.task_id, doc.project_id, doc.sha256, len(doc.body),
                                           doc.fingerprint, before.etag)
            elif doc.fingerprint and before.fingerprint != doc.fingerprint:
                self.checkpoint.record_fingerprint(key, doc.fingerprint)

    def _remove(self, gone: Removals) -> None:
        summary = self._summary
        count = sum(1 for entry in gone if entry.key not in self._claimed) if self._claimed else gone.count
        if count and not self.source.complete:
            summary.orphaned += count
            summary.notes.append(f"{count} deletion(s) held back: some files are still being "
                                 "written or cannot be read")
            return
        kind, held_back = plan_removals(count, self.options.delete, summary.failed > 0, self.options.max_delete)
        if held_back:
            summary.notes.append(held_back)
            if "max_delete" in held_back:
                summary.fail(held_back, reason="other")
        for entry in gone:
            if entry.key in self._claimed:
                continue
            action = removal(kind, entry)
            if action.kind == "orphan":
                summary.orphaned += 1
                if self.options.orphan_lines:
                    object_line("orphaned %s (task %d is no longer labeled or was deleted; left in place)",
                                action, "orphan")
                if len(summary.orphans) < MAX_LISTED:
                    summary.orphans.append(action)
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
        if self.leases is not None and not self.leases.valid(action.project_id):
            # The project's lease ran out (a stall, a lost connection): its new holder writes it.
            log.debug("%s %s: project %s is no longer held here; left to its holder", action.kind, action.key,
                      action.project_id)
            return
        store = self.store
        if action.kind == "put" and self._put_many is not None:
            self._group.append((action, fingerprint))
            if len(self._group) >= GROUP:
                self._submit_group()
            return
        if action.kind == "put":
            doc = action.document

            def op() -> str | None:
                return store.put(action.key, doc.body, doc.sha256)  # the etag, recorded by _done
        else:
            def op() -> None:
                store.delete(action.key)
        self.transfers.submit(op, (action, fingerprint), self._done)

    def _submit_group(self) -> None:
        """Hand the grouped puts to the store as one batch (each recorded in the checkpoint
        only once the whole batch is durable)."""
        if not self._group:
            return
        group, self._group = self._group, []
        put_many = self._put_many
        items = [(action.key, action.document.body, action.document.sha256) for action, _ in group]
        self.transfers.submit(lambda: put_many(items), group, self._done)

    def _done(self, tag: tuple[Action, str] | list[tuple[Action, str]], future: Future) -> None:
        exc = future.exception()
        if isinstance(tag, list):  # a group of puts: one etag or error per object
            results = [exc] * len(tag) if exc is not None else future.result()
            for (action, fingerprint), result in zip(tag, results, strict=True):
                self._finish(action, fingerprint, result)
        else:
            self._finish(*tag, exc if exc is not None else future.result())

    def _finish(self, action: Action, fingerprint: str, result: object) -> None:
        """Count one acknowledged write or delete (``result``: the etag of a put) and record it,
        or count its failure (``result``: the exception)."""
        summary = self._summary
        if not isinstance(result, BaseException):
            tally = summary.tally(action.project_id) if action.project_id is not None else None
            if tally is not None:
                summary.changed_projects.add(action.project_id)
            if action.kind == "put":
                doc = action.document
                self.checkpoint.record_put(action.key, action.task_id, action.project_id, doc.sha256,
                                           len(doc.body), fingerprint, result)
                summary.written += 1
                if tally is not None:
                    tally.written += 1
                object_line("wrote %s (task %d, project %s, %d bytes)", action, "put", len(doc.body))
            else:
                self.checkpoint.record_delete(action.key)
                summary.deleted += 1
                if tally is not None:
                    tally.deleted += 1
                object_line("deleted %s (task %d, project %s)", action, "delete")
            return
        if isinstance(result, StoreError) and result.fatal:
            self._fatal.append(result)
            self.stop.set()
        summary.fail(f"{action.kind} {action.key} (task {action.task_id}) failed: {result}", action.task_id,
                     project_id=action.project_id)


class _ByTask:
    """The checkpoint's entries, streamed in task id order, handed out a range of ids at a time."""

    def __init__(self, entries: Iterator[Entry]):
        self._entries = entries
        self._next = next(entries, None)

    def upto(self, last_id: int, wanted: set[int], other: Callable[[Entry], None]) -> dict[int, list[Entry]]:
        """The entries of the ``wanted`` tasks up to ``last_id``, by task; those of the other
        tasks up to there (not in the source) go to ``other`` as they come, never held."""
        found: dict[int, list[Entry]] = {}
        while self._next is not None and self._next.task_id <= last_id:
            entry = self._next
            if entry.task_id in wanted:
                found.setdefault(entry.task_id, []).append(entry)
            else:
                other(entry)
            self._next = next(self._entries, None)
        return found

    @property
    def empty(self) -> bool:
        """No entry left (before the first ``upto``: none at all)."""
        return self._next is None

    def rest(self) -> Iterator[Entry]:
        while self._next is not None:
            yield self._next
            self._next = next(self._entries, None)


def object_line(message: str, action: Action, kind: str, size: int | None = None) -> None:
    """One ``-v`` line per object (``syncd.logs.OBJECTS``), like ``rclone -v``; JSON lines carry
    the key, task, project and size as fields."""
    if not objects_log.isEnabledFor(logging.INFO):
        return
    fields = {"action": kind, "key": action.key, "task_id": action.task_id, "project_id": action.project_id}
    args: tuple = (action.key, action.task_id, action.project_id)
    if size is not None:
        fields["bytes"] = size
        args += (size,)
    elif kind == "orphan":
        args = (action.key, action.task_id)
    objects_log.info(message, *args, extra={"fields": fields})


def resync(source: Source, store: Store, checkpoint: Checkpoint, options: ResyncOptions,
           progress: Callable[[int, int], None] | None = None,
           stop: threading.Event | None = None) -> Summary:
    """One full reconcile (``syncd resync``)."""
    syncer = Syncer(source, store, checkpoint, options, stop)
    try:
        return syncer.full(progress)
    finally:
        syncer.close()
