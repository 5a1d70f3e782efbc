"""Worker processes that read tasks' rows and build their documents, a batch each.

A full resync spends most of its CPU reading Label Studio's rows, decoding their JSON and
encoding the documents (BENCHMARKS.md: SQLite's fetch, JSON decoding and encoding took about
10 of a 100k-task run's 18 s), all on one core. ``DocumentBuilders`` moves that work into
processes of their own, each with its own read-only connection: the main process hands out
lists of task ids and gets back finished documents (bytes, sha256, fingerprint), in order,
while it writes and checkpoints the previous ones.

Each batch is still read in one short read transaction of its own, as in the main process, so
what a document holds is exactly what the main process would have built. Workers are started
with ``spawn`` (never ``fork``: the daemon has threads whose locks a forked child would
inherit held), and only for work worth their start-up (``MIN_TASKS``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from syncd.document import DocumentOptions, TaskDocument
from syncd.errors import BadTask, SourceError, SyncdError, one_line

if TYPE_CHECKING:
    from syncd.sources.labelstudio.source import LabelStudioSource

log = logging.getLogger("syncd")

MIN_TASKS = 1000  # fewer tasks than this are built in the calling process: a worker's start costs more
MAX_WORKERS = 4  # past this the main process (writes, checkpoint) is the bottleneck
IDLE_SECONDS = 120.0  # workers unused this long are stopped (see DocumentBuilders.idle)


def default_workers() -> int:
    """One per CPU this process may use, up to ``MAX_WORKERS``; none on a single CPU (a worker
    would only take turns with the main process)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus < 2 else min(cpus, MAX_WORKERS)


# A built batch travels as plain tuples (pickling them is cheaper than dataclasses, and a
# BadTask's message is formatted already): ("doc", task_id, project_id, body, sha256, fingerprint)
# or ("bad", task_id, message, project_id).
Built = tuple


class DocumentBuilders:
    """A pool of ``workers`` processes building documents from the database at ``connect_url``."""

    def __init__(self, connect_url: str, batch_size: int, options: DocumentOptions, workers: int):
        self.connect_url = connect_url
        self.batch_size = batch_size
        self.options = options
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._generation = 0  # bumped per documents() call: workers re-read the projects then
        self._used = 0.0
        self.broken = False  # a worker died: everything is built in the calling process since

    def documents(self, batches: Iterable[list[int]], project_ids: list[int],
                  here: Callable[[list[int]], list[TaskDocument | BadTask]]) -> Iterator[TaskDocument | BadTask]:
        """The documents of each batch of task ids, in order. The first batches are handed to
        the workers at once (before iteration starts), so they are built while the caller
        finishes its previous work; later ones as earlier ones are taken. ``OSError`` before
        any batch is taken when worker processes cannot be started here. When a worker dies
        (killed, out of memory, or it cannot start), the batches not yet built are built by
        ``here`` in this process, and so is all later work: the run goes on, a little slower."""
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker,
                                             initargs=(self.connect_url, self.batch_size, self.options))
            log.info("building documents in %d worker processes (build_workers)", self.workers)
        self._generation += 1
        self._used = time.monotonic()
        return self._in_order(_Ahead(self._pool, iter(batches), (self._generation, project_ids), 2 * self.workers),
                              here)

    def _in_order(self, ahead: _Ahead,
                  here: Callable[[list[int]], list[TaskDocument | BadTask]]) -> Iterator[TaskDocument | BadTask]:
        for ids, future in ahead:
            try:
                built = future.result()
            except BrokenProcessPool as exc:
                log.warning("a document builder process died (%s); building documents in this process "
                            "from here on", one_line(exc))
                self.broken = True
                if self._pool is ahead.pool:  # (not a pool started since, by a later call)
                    self.close(wait=False)
                yield from here(ids)
                for ids, _ in ahead.rest():
                    yield from here(ids)
                return
            for item in built:
                if item[0] == "doc":
                    yield TaskDocument(*item[1:])
                else:
                    yield BadTask(item[1], item[2], item[3])

    def idle(self) -> None:
        """Called on work too small for the workers: after ``IDLE_SECONDS`` without big work
        (the daemon past its first pass) they are let go, with their connections."""
        if self._pool is not None and time.monotonic() - self._used > IDLE_SECONDS:
            self.close()

    def close(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None


class _Ahead:
    """Batches submitted ``ahead`` at a time (from the start), taken in submission order with
    their futures."""

    def __init__(self, pool: ProcessPoolExecutor, batches: Iterator[list[int]], args: tuple, ahead: int):
        self.pool = pool
        self._batches = batches
        self._args = args
        self._pending: deque[tuple[list[int], Future]] = deque()
        for _ in range(ahead):
            self._submit_next()

    def _submit_next(self) -> None:
        ids = next(self._batches, None)
        if ids is None:
            return
        try:
            future = self.pool.submit(_build_batch, ids, *self._args)
        except BrokenProcessPool as exc:
            # A worker died and the pool already knows: it takes no more work. The batch fails
            # where its result is taken, like those in flight, and is built in this process.
            future = Future()
            future.set_exception(exc)
        self._pending.append((ids, future))

    def __iter__(self) -> Iterator[tuple[list[int], Future]]:
        while self._pending:
            item = self._pending.popleft()
            self._submit_next()
            yield item

    def rest(self) -> Iterator[tuple[list[int], None]]:
        """What is left, not to be submitted: the pending batches, then the others."""
        while self._pending:
            yield self._pending.popleft()[0], None
        for ids in self._batches:
            yield ids, None


# ---------------------------------------------------------------- in the worker process

_source: LabelStudioSource | None = None
_projects: tuple[int, dict] = (0, {})


def _start_worker(connect_url: str, batch_size: int, options: DocumentOptions) -> None:
    global _source
    # Ctrl-C in a terminal and systemd's stop signal reach the whole process group: the main
    # process handles them and stops its workers itself (no traceback from each worker).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from syncd.sources.labelstudio.database import connect
    from syncd.sources.labelstudio.source import LabelStudioSource

    _source = LabelStudioSource(connect(connect_url), batch_size=batch_size, options=options)


def _build_batch(ids: list[int], generation: int, project_ids: list[int]) -> list[Built]:
    global _projects
    assert _source is not None
    try:
        if _projects[0] != generation:
            _projects = (generation, _source.projects())
        built: list[Built] = []
        for doc in _source.build_batch(ids, project_ids, _projects[1]):
            if isinstance(doc, BadTask):
                built.append(("bad", doc.task_id, doc.reason, doc.project_id))
            else:
                built.append(("doc", doc.task_id, doc.project_id, doc.body, doc.sha256, doc.fingerprint))
        return built
    except SyncdError:
        raise
    except Exception as exc:  # noqa: BLE001 - a driver's error may not survive pickling: say it in a line
        raise SourceError(f"database {_source.url}: {one_line(exc)}") from None
