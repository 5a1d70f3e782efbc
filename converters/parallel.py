"""Per-task work on several processes, results in task order.

A per-task format is written as a *job*: ``job.process(task, warn, main)`` turns one task document
into a payload (pure: it changes nothing shared), ``job.combine(payloads)`` joins the payloads of
consecutive tasks into one *chunk* (less to send between processes, fewer Python steps for the
consumer), and the format's ``convert`` consumes the chunks in task order (writes them, numbers
them...). ``results(tasks, ...)`` yields those chunks:

* in this process, one task after the other, for any iterable of tasks; or
* from worker processes, when ``tasks`` is an :class:`ArrayFile` (a JSON export file, as the CLI
  reads it) big enough to pay for starting them, and ``ConvertOptions.workers`` allows it.
  This process only cuts the file into batches of about 1 MB of whole tasks
  (``jsonstream.iter_array_batches``, no parsing) and sends their offsets to the workers, which
  read, parse and process them, and combine each batch's payloads. At most a few batches are in
  flight, so memory does not grow with the file. A job that works on whole batches
  (``Job.whole_batch``: JSON) is run in the same batches in this process when there are no
  workers.

Both ways give the same payloads in the same order (chunked differently), with the same warnings:

* a job may raise :class:`Redo` in a worker when a task needs shared state that only the main
  process has (a label missing from the config gets the next free class id): that task is
  processed here, in order;
* a batch that is not a run of whole JSON values (braces inside strings fooled the cutter)
  stops the parallel run: the results before it are kept and the rest of the file is read
  here, the exact way (which also reports invalid JSON as the sequential reader does);
* so does a worker that dies (killed, out of memory), from the first batch not yet taken.

Workers are forked (no re-import of the caller's ``__main__``, fast start), and only when no
other thread runs in this process (forking a threaded program is unsafe: syncd's daemon, for
one, converts in this process). Each works with the caller's job object as it was at the fork
(``job.start_worker()``, if the job has it, is called first in each worker).
Without ``fork`` (Windows) or without orjson everything runs in this process. With msgspec
installed, a worker decodes a batch into only the fields its job reads (``Job.fields``).
"""

from __future__ import annotations

import gc
import io
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

from . import jsonstream
from .base import ConvertOptions, logger

try:  # optional accelerator, never required
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - depends on the environment
    _msgspec = None  # type: ignore[assignment]

__all__ = ["ArrayFile", "Job", "Redo", "register_job", "results"]

OWN_THREAD_PREFIX = "converters-"  # our own threads (fastio.SmallFiles) do not prevent forking
MIN_PARALLEL_BYTES = 32 << 20  # smaller inputs are converted in this process
_BATCH_BYTES = 1 << 20  # raw bytes per batch sent to a worker


class Redo(Exception):
    """Raised by ``Job.process`` in a worker: this task must be processed in the main process."""


class Job(Protocol):
    """``fields`` (optional): a msgspec type (a TypedDict) of the part of a task that ``process``
    reads; workers then decode tasks into just that part (see ``items.ItemTask``).
    ``whole_batch(array, offset, length, main)`` (optional): the chunk of a whole batch (``array``
    is ``[`` + its bytes + ``]``, found at ``offset`` in the file), or None to process its tasks
    one by one (JSON copies a batch that needs no change instead of encoding it); ``main``: run
    in this process, not in a worker. A job that has it works in the same batches with or
    without workers (an export file), so its output cannot depend on their number."""

    def process(self, task: Any, warn: Callable[[object, str], None], main: bool) -> Any:
        """The payload of one task (None: nothing to write). With ``main`` False it may raise Redo."""

    def combine(self, payloads: list[Any]) -> Any:
        """One chunk made of the (not None) payloads of consecutive tasks, in task order."""


_PARALLEL: set[str] = set()


def register_job(fmt: str) -> None:
    """Let ``fmt``'s job run in worker processes (its ``convert`` uses ``results``)."""
    _PARALLEL.add(fmt)


class ArrayFile:
    """The tasks of a JSON export file holding one array (iterating parses them here)."""

    def __init__(self, path: str | os.PathLike[str], chunk: int = 1 << 22,
                 on_error: Callable[[jsonstream.JSONStreamError], BaseException] | None = None) -> None:
        self.path = Path(path)
        self.chunk = chunk
        self.on_error = on_error  # turns a reader error into the caller's exception

    def __iter__(self) -> Iterator[Any]:
        return self.iter_from(None)

    def iter_from(self, offset: int | None) -> Iterator[Any]:
        """The tasks from the element starting at byte ``offset`` on (None: all). An element that
        is itself a list gives its items, as ``cli.iter_input_tasks`` always did."""
        with open(self.path, "rb") as f:
            if offset is not None:
                f.seek(offset)
            try:
                for value in jsonstream.iter_array_file(f, self.chunk, inside=offset is not None):
                    if isinstance(value, list):
                        yield from value
                    else:
                        yield value  # (an Unreadable too: the converter warns of it)
            except jsonstream.JSONStreamError as exc:
                if self.on_error is None:
                    raise
                raise self.on_error(exc) from None


def _can_fork() -> bool:
    """Workers are forked (cheap, and nothing of the caller's script is run again), which is safe
    only while no other thread runs; otherwise everything stays in this process."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    main = threading.main_thread()
    return all(t is main or t.name.startswith(OWN_THREAD_PREFIX) for t in threading.enumerate())


def worker_count(tasks: Iterable[Any], options: ConvertOptions) -> int:
    """How many worker processes to use for these tasks (0: none)."""
    wanted = options.workers
    if wanted is not None and wanted <= 1 or options.image_info is not None:
        return 0
    if not isinstance(tasks, ArrayFile) or not jsonstream.have_orjson() or not _can_fork():
        return 0
    try:
        size = tasks.path.stat().st_size
    except OSError:
        return 0
    if wanted is None:
        if size < MIN_PARALLEL_BYTES:
            return 0
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        wanted = min(cpus, 4)
    return wanted if wanted > 1 else 0


_RUN = 256  # tasks per chunk in this process


def results(tasks: Iterable[Any], fmt: str, job: Job, options: ConvertOptions) -> Iterator[Any]:
    """The chunks (``job.combine``) of the payloads of ``job.process`` for every task, in task
    order (tasks without a payload left out)."""
    workers = worker_count(tasks, options) if fmt in _PARALLEL else 0
    if workers:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_init_worker, initargs=(job, tasks.path))  # type: ignore[attr-defined]
        yield from _batches(tasks, job, options, pool, 2 * workers + 1)  # type: ignore[arg-type]
        return
    if isinstance(tasks, ArrayFile) and getattr(job, "whole_batch", None) is not None:
        # the same batches as with workers, run here: the output does not depend on the workers
        yield from _batches(tasks, job, options, _ThisProcess(BatchRunner(job, tasks.path, main=True)), 1)
        return
    yield from _here(tasks, job, options.warn)


def _here(tasks: Iterable[Any], job: Job, warn: Callable[[object, str], None]) -> Iterator[Any]:
    """The chunks of ``tasks``, processed in this process."""
    process = job.process
    run: list[Any] = []
    for task in tasks:
        payload = process(task, warn, True)
        if payload is not None:
            run.append(payload)
            if len(run) >= _RUN:
                yield job.combine(run)
                run = []
    if run:
        yield job.combine(run)


# ------------------------------------------------------------------------------ batch side

class BatchRunner:
    """Processes batches of an export file (``run``): in each worker process, or in this one for
    a job that works on whole batches (``whole_batch``) when there are no workers, so that the
    output does not depend on how many processes made it."""

    def __init__(self, job: Job, path: Path, main: bool) -> None:
        self.job = job
        self.main = main  # in this process (whole batches written here, not to part files)
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        fields = getattr(job, "fields", None)
        # a msgspec decoder of a batch into the job's fields, if it has any
        self.decoder = _msgspec.json.Decoder(list[fields]) if fields is not None and _msgspec is not None else None
        self.buffer = bytearray()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def decode_fields(self, array: bytes | memoryview) -> list[Any] | None:
        """The tasks of a batch (as a JSON array) holding only the job's fields, or None (no
        decoder, or JSON that the schema does not fit: the batch is then parsed whole)."""
        if self.decoder is None:
            return None
        try:
            return self.decoder.decode(array)
        except _msgspec.DecodeError:  # also ValidationError
            return None

    def read_array(self, offset: int, length: int) -> memoryview:
        """The batch at ``offset`` as a JSON array, ``[`` + its bytes + ``]``, in a buffer kept from
        batch to batch: a new megabyte for each batch would be mapped and unmapped by malloc every
        time, and its page faults cost more than reading the bytes."""
        if len(self.buffer) < length + 2:
            self.buffer = bytearray(length + 2 + (length >> 2))
        buf = self.buffer
        view = memoryview(buf)
        end = 1  # buf[1:end] is read
        while end < length + 1:
            if _HAVE_PREADV:
                got = os.preadv(self.fd, [view[end:length + 1]], offset + end - 1)
            else:  # pragma: no cover - platforms without preadv
                part = os.pread(self.fd, length + 1 - end, offset + end - 1)
                got = len(part)
                buf[end:end + got] = part
            if not got:
                break  # the file shrank: the batch will not parse
            end += got
        buf[0] = 0x5B  # [
        buf[end] = 0x5D  # ]
        return view[:end + 1]

    def run(self, offset: int, length: int) -> list[tuple[Any, Any]] | None:
        """Process the tasks of the batch at ``offset``: a list of (chunk or None, its tasks'
        warnings) and (_REDO, task) in task order; None if the batch is not a run of whole JSON
        values (a wrong cut, or invalid JSON)."""
        job = self.job
        array = self.read_array(offset, length)
        whole_batch = getattr(job, "whole_batch", None)
        if whole_batch is not None:
            chunk = whole_batch(array, offset, length, self.main)
            if chunk is not None:
                array.release()
                return [(chunk, [])]
        out: list[tuple[Any, Any]] = []
        run: list[Any] = []
        warnings: list[tuple[object, str]] = []
        warn = _collector(warnings)
        tasks: Iterable[Any] | None = self.decode_fields(array)
        if tasks is None:
            # processed while parsing (fewer live objects); all of it is dropped if the batch turns
            # out not to be a run of whole JSON values
            tasks = jsonstream.iter_array_file(io.BytesIO(array), len(array))
        array.release()
        try:
            for task in tasks:
                if isinstance(task, list):  # a list of tasks: the main process goes through it
                    redo = True
                else:
                    seen = len(warnings)
                    try:
                        payload = job.process(task, warn, self.main)
                        redo = False
                    except Redo:
                        del warnings[seen:]  # the main process says them again
                        redo = True
                if redo:
                    if run or warnings:
                        out.append((job.combine(run) if run else None, warnings))
                        run, warnings = [], []
                        warn = _collector(warnings)
                    out.append((_REDO, task))
                elif payload is not None:
                    run.append(payload)
        except jsonstream.JSONStreamError:
            return None
        if run or warnings:
            out.append((job.combine(run) if run else None, warnings))
        return out


_HAVE_PREADV = hasattr(os, "preadv")
_worker: BatchRunner | None = None  # in a worker process: its runner


def _init_worker(job: Job, path: Path) -> None:
    global _worker
    # What was forked stays put (no collector passes over it), and young objects (the decoded
    # tasks: many small dicts and lists, without cycles) are collected less often.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    start = getattr(job, "start_worker", None)
    if start is not None:
        start()
    _worker = BatchRunner(job, path, main=False)  # the caller's own job object (forked, not pickled)


def _run_batch(offset: int, length: int) -> list[tuple[Any, Any]] | None:
    """``BatchRunner.run`` in a worker process."""
    assert _worker is not None
    return _worker.run(offset, length)


def _collector(sink: list[tuple[object, str]]) -> Callable[[object, str], None]:
    return lambda task_id, message: sink.append((task_id, message))


class _RedoMarker:
    def __reduce__(self) -> str:
        return "_REDO"


_REDO = _RedoMarker()


# ------------------------------------------------------------------------------ main side

class _ThisProcess:
    """In place of the worker pool when batches are run in this process: each when submitted."""

    def __init__(self, runner: BatchRunner) -> None:
        self.runner = runner

    def submit(self, fn: Callable[..., Any], offset: int, length: int) -> Future:
        future: Future = Future()
        future.set_result(self.runner.run(offset, length))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self.runner.close()


def _batches(tasks: ArrayFile, job: Job, options: ConvertOptions, pool: ProcessPoolExecutor | _ThisProcess,
             in_flight: int) -> Iterator[Any]:
    """The chunks of ``tasks``, cut into batches that ``pool`` runs (at most ``in_flight`` at a time)."""
    warn = options.warn

    def in_main(task: Any) -> Iterator[Any]:
        return _here(task if isinstance(task, list) else (task,), job, warn)

    try:
        f = open(tasks.path, "rb")  # noqa: SIM115 - closed in finally
    except BaseException:
        pool.shutdown(wait=True)
        raise
    cuts = jsonstream.iter_array_batches(f, _BATCH_BYTES, tasks.chunk)
    pending: deque[tuple] = deque()  # ("value", offset, task, _) | ("batch", offset, future) | ("rest", offset)
    whole = getattr(job, "whole_batch", None) is not None
    restart_at: int | None = None
    error: BaseException | None = None
    try:
        exhausted = False
        while True:
            while not exhausted and sum(1 for p in pending if p[0] == "batch") < in_flight:
                try:
                    cut = next(cuts, None)
                except jsonstream.JSONStreamError as exc:
                    # report it after the tasks before it, as the sequential reader does
                    error = tasks.on_error(exc) if tasks.on_error is not None else exc
                    cut = None
                if cut is None:
                    exhausted = True
                    break
                if cut[0] == "value" and whole and type(cut[2]) is dict:
                    cut = ("batch", cut[1], cut[3])  # one task, cut as the others are (see results)
                if cut[0] == "batch":
                    try:
                        future = pool.submit(_run_batch, cut[1], cut[2])
                    except BrokenProcessPool as exc:
                        # a worker died and the pool knows: the batch fails where its result is
                        # taken, like those in flight
                        future = Future()
                        future.set_exception(exc)
                    cut = ("batch", cut[1], future)
                pending.append(cut)
                if cut[0] == "rest":
                    exhausted = True
            if not pending:
                break
            entry = pending.popleft()
            if entry[0] == "value":
                yield from in_main(entry[2])
                continue
            if entry[0] == "rest":
                restart_at = entry[1]
                break
            try:
                out = entry[2].result()
            except BrokenProcessPool as exc:
                # a worker died (killed, out of memory): this batch and the rest, in this process
                logger.warning("a converter worker process died (%s); converting the rest in this process", exc)
                out = None
            if out is None:  # a wrong cut (or invalid JSON): from here on, the exact way
                restart_at = entry[1]
                error = None
                break
            for chunk, extra in out:
                if chunk is _REDO:
                    yield from in_main(extra)
                    continue
                for task_id, message in extra:
                    warn(task_id, message)
                if chunk is not None:
                    yield chunk
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        cuts.close()
        f.close()
    if restart_at is not None:
        yield from _here(tasks.iter_from(restart_at), job, warn)
        return
    if error is not None:
        raise error
