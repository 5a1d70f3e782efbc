"""The change source for a directory of Label Studio task files (``source: dir:///path``).

The directory is usually one that Label Studio's Local Files *target storage* writes. Label
Studio 1.23 writes it in one of two layouts (``io_storages/base_models.py``,
``ExportStorage._get_serialized_data`` and ``ExportStorageLink.get_key``):

- per task, with ``FUTURE_SAVE_TASK_TO_STORAGE=true``: ``<task_id>.json`` (``<task_id>`` when
  ``FUTURE_SAVE_TASK_TO_STORAGE_JSON_EXT=false``) holding the task as the JSON export prints it,
  except that ``annotations[].completed_by`` is expanded to ``{id, email, first_name,
  last_name}`` and ``drafts`` is a list of draft ids;
- per annotation, the default: ``<annotation_id>`` (no extension) holding the *annotation*
  (``io_storages.serializers.StorageAnnotationSerializer``) with its task nested under ``task``
  (without ``annotations``, ``predictions`` or ``drafts``), ``completed_by`` expanded.

It may also be any directory of Label Studio task JSON: a file holds one task object or a JSON
array of tasks (Label Studio's JSON export). Files of one task are merged: the document's
``annotations`` are the union of the annotations found (one per annotation id, the copy with the
latest ``updated_at`` winning, in id order); its task-level fields come from the task object
with the latest ``updated_at`` (then the newest file). Only tasks with at least one annotation
are documents, as in Label Studio's own export.

**The export shape** (``syncd.document.to_export_shape``): every object is turned into the task
object of Label Studio's JSON export, so a document is the same whichever way Label Studio wrote it:

- ``annotations[].completed_by`` ``{id, ...}`` becomes the user id;
- ``drafts`` becomes a list of draft ids: the storage files only have the ids and cannot be
  expanded without the database (the export's full draft objects are reduced to their ids,
  too; Label Studio does not rewrite a storage file when a draft is saved anyway);
- ``predictions`` are kept as written (Label Studio 1.23 writes ids in both the export and the
  storage files; the database source's ``predictions: full`` cannot apply here);
- per-annotation files: the annotation's ``task`` becomes the task id; the fields only that
  serializer writes (``created_username``, ``created_ago``, ``state``; the task's
  ``is_labeled``, ``overlap``, ``precomputed_agreement`` and ``file_upload`` as a numeric id)
  are left out. What that layout never holds (``predictions``, ``drafts``, the upload's file
  name, ``annotations[].prediction``/``result_count``/``unique_id``) is absent, not invented;
- keys come in the export's order (unknown keys after, as written), annotations in id order.

**Half-written files are never used.** A file is read only once its size, mtimes and inode have
not changed for ``settle_seconds``: by this source's clock between scans, or because its mtime
is already that old (so the first scan after a start uses the files that are at rest). Until
then it is *pending* and the tasks it contributed keep their previous content. A file that is
at rest but is not valid JSON, or holds anything that is not a Label Studio task (an array: any
item), gets one error line naming it, and its previous good version stays in effect.

**Deletions.** A task whose files are all gone leaves ``documents``; an annotation whose file
was deleted leaves its task's document. A task can also be missing only because the files that
would give it are pending or unreadable and were never read by this process (just after a
start): ``DirScan.unresolved`` counts those files, and while it is not zero the caller must not
delete or orphan objects of tasks missing from ``documents``.

Unchanged files are not read again: a scan lists the directory and compares each file's
``(mtime_ns, size, inode, ctime_ns)`` with what it saw before (the inode catches a file renamed
into place, the ctime a ``chmod`` that makes an unreadable file readable); only the tasks of
files that changed are rebuilt. Hidden files and directories, ``*.tmp`` and ``*~`` files, and
files whose name has an extension other than ``.json`` are ignored; symbolic links to files are
followed, to directories not. One ``DirectorySource`` is used from one thread.

Label Studio's per-task layout has a flaw this source cannot hide: deleting one annotation
deletes the whole ``<task_id>.json``, even if the task keeps other annotations, until the next
annotation save or storage sync writes it again; meanwhile the task is gone from ``documents``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from stat import S_ISREG
from typing import Any
from urllib.parse import unquote

from syncd.document import TaskDocument, encode_document, is_int, to_export_shape
from syncd.errors import BadTask, ConfigError, SourceError
from syncd.sources.base import Cursor, Feed, Project, Wake
from syncd.sources.watch import watch_paths

# Bumped when the same files would give other documents: it is part of every fingerprint.
DIR_FORMAT = "dir1"

MAX_PROBLEMS = 3  # per error line

FileSig = tuple[int, int, int, int]  # (mtime_ns, size, inode, ctime_ns)


@dataclass
class DirScan:
    """What the directory holds now."""

    documents: dict[int, TaskDocument]  # every task with at least one annotation
    fingerprints: dict[int, str]  # per task, from its files' paths, mtimes, sizes and inodes
    pending: int = 0  # files not yet at rest (not read yet)
    errors: list[str] = field(default_factory=list)  # one line per bad file (or task)
    # Pending or bad files (and unlisted directories, unbuildable tasks) for which no earlier
    # good version is known: tasks they hold may be missing from ``documents``. Delete or
    # orphan nothing while this is not zero.
    unresolved: int = 0
    changed: set[int] = field(default_factory=set)  # tasks whose document changed, appeared or left
    read: int = 0  # files read by this scan
    files: int = 0  # files considered


@dataclass(frozen=True, slots=True)
class _Annotation:
    id: int | None
    updated: float | None  # updated_at as a timestamp
    body: bytes  # the normalised annotation, as JSON


@dataclass(frozen=True, slots=True)
class _Part:
    """What one file says about one task."""

    task_id: int
    project_id: int | None
    updated: float | None  # the task's updated_at as a timestamp
    fields: bytes  # the normalised task without id and annotations, as JSON
    annotations: tuple[_Annotation, ...]


@dataclass(slots=True)
class _File:
    rel: str  # path relative to the directory (for fingerprints)
    sig: FileSig  # as last listed
    seen: float  # clock() when ``sig`` was first listed
    checked: bool = False  # ``sig`` was read (and used, or found bad)
    error: str | None = None  # what is wrong with the content of ``sig``
    used: FileSig | None = None  # the version whose parts are in effect
    parts: tuple[_Part, ...] = ()


class DirectorySource:
    """Reads labeled tasks from a directory of Label Studio task files; see the module doc."""

    def __init__(self, path: str | os.PathLike[str], *, settle_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, wait_settled: bool = False):
        if settle_seconds < 0:
            raise ConfigError(f"settle_seconds must be >= 0, not {settle_seconds}")
        self.root = os.path.abspath(os.fspath(path))
        self._prefix = len(self.root.rstrip(os.sep)) + 1  # of a listed path, for its relative path
        self.settle_seconds = settle_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._files: dict[str, _File] = {}
        self._task_files: dict[int, set[str]] = {}  # task id -> paths whose used version has it
        self._docs: dict[int, TaskDocument] = {}
        self._fingerprints: dict[int, str] = {}
        self._task_errors: dict[int, str] = {}
        self.wait_settled = wait_settled  # refresh() waits (a little) for files being written
        self._last: DirScan | None = None

    @property
    def url(self) -> str:
        return f"dir://{self.root}"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DirectorySource:
        """``dir:///absolute/path`` (or ``dir://relative/path``, ``dir://~/path``)."""
        if not url.startswith("dir://") or not url[len("dir://"):]:
            raise ConfigError(f"{url!r} is not a directory URL; write dir:///path/to/directory")
        return cls(os.path.expanduser(unquote(url[len("dir://"):])), **options)

    # -------------------------------------------------------------- the Source interface

    def projects(self) -> dict[int, Project]:
        return {}  # task files name their project by id only

    def count_labeled(self, project_ids: Iterable[int] = ()) -> int:
        return sum(1 for _ in self._selected(project_ids))

    def count_labeled_by_project(self, project_ids: Iterable[int] = ()) -> dict[int | None, int]:
        return dict(Counter(doc.project_id for doc in self._selected(project_ids)))

    def fingerprints(self, project_ids: Iterable[int] = (),
                     bare: bool = False) -> Iterator[tuple[int, int | None, str]]:
        for doc in self._selected(project_ids):
            yield doc.task_id, doc.project_id, doc.fingerprint

    def documents(self, task_ids: Iterable[int] | None = None,
                  project_ids: Iterable[int] = ()) -> Iterator[TaskDocument | BadTask]:
        yield from self._selected(project_ids, task_ids)

    def _selected(self, project_ids: Iterable[int], task_ids: Iterable[int] | None = None) -> list[TaskDocument]:
        wanted = set(project_ids)
        ids = sorted(self._docs) if task_ids is None else sorted(set(task_ids) & self._docs.keys())
        return [doc for doc in (self._docs[i] for i in ids) if not wanted or doc.project_id in wanted]

    def changes_since(self, cursor: Cursor) -> tuple[set[int], Cursor]:
        """Rescan (unchanged files cost one ``stat`` each): the tasks whose document changed."""
        if cursor is None:
            self.refresh()
            return set(), 1
        self._last = self.scan()
        return set(self._last.changed), cursor + 1

    def refresh(self) -> None:
        self._last = settled_scan(self) if self.wait_settled else self.scan()

    @property
    def complete(self) -> bool:
        return self._last is not None and self._last.unresolved == 0

    @property
    def problems(self) -> list[str]:
        return list(self._last.errors) if self._last is not None else []

    def watch(self, wake: Callable[[Wake], None]) -> Feed | None:
        return watch_paths([Path(self.root)], lambda: wake(Wake()), recursive=True)

    def close(self) -> None:
        pass

    # -------------------------------------------------------------- scanning

    def scan(self) -> DirScan:
        """List the directory, read what changed and is at rest, and return every task."""
        now = self._clock()
        listing, unlisted, walk_errors = self._list()
        result = DirScan(documents={}, fingerprints={}, errors=list(walk_errors),
                         unresolved=len(unlisted), files=len(listing))
        dirty: set[int] = set()
        for path in [p for p in self._files if p not in listing]:
            if any(path.startswith(d + os.sep) for d in unlisted):
                continue  # its directory could not be listed: not known to be gone
            state = self._files.pop(path)
            self._use(path, state, (), dirty)
        for path, sig in listing.items():
            state = self._files.get(path)
            if state is None:
                state = self._files[path] = _File(path[self._prefix:], sig, now)
            elif state.sig != sig:
                state.sig, state.seen, state.checked, state.error = sig, now, False, None
            if not state.checked:
                if self._at_rest(state, now):
                    result.read += 1
                    self._load(path, state, now, dirty)
                if not state.checked:
                    result.pending += 1
                    result.unresolved += state.used is None
                    continue
            if state.error:
                result.errors.append(state.error)
                result.unresolved += state.used is None
        result.errors.sort()
        result.changed = self._rebuild(dirty)
        for task_id in sorted(self._task_errors):
            result.errors.append(self._task_errors[task_id])
            result.unresolved += task_id not in self._docs
        result.documents = dict(self._docs)
        result.fingerprints = dict(self._fingerprints)
        return result

    def _list(self) -> tuple[dict[str, FileSig], list[str], list[str]]:
        files: dict[str, FileSig] = {}
        unlisted: list[str] = []
        errors: list[str] = []
        stack = [self.root]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:  # the hot loop of a rescan: kept lean
                        name = entry.name
                        if name[0] == "." or name[-1] == "~" or name.endswith(".tmp"):
                            continue
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(entry.path)
                                continue
                            if "." in name and not _wanted(name):
                                continue
                            st = entry.stat()  # follows a symbolic link
                        except OSError:  # vanished while listing: gone
                            continue
                        if S_ISREG(st.st_mode):
                            files[entry.path] = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
            except OSError as exc:
                if directory == self.root:
                    raise SourceError(f"cannot list directory {self.root} ({_reason(exc)}); "
                                      f"check source: dir://") from None
                unlisted.append(directory)
                errors.append(f"{directory}: cannot list directory ({_reason(exc)})")
        return files, unlisted, errors

    def _at_rest(self, state: _File, now: float) -> bool:
        settle = self.settle_seconds
        return (now - state.seen >= settle
                or self._wall_clock() - state.sig[0] / 1e9 >= settle)

    def _load(self, path: str, state: _File, now: float, dirty: set[int]) -> None:
        """Read a file at rest; use it if it is good, else note what is wrong with it."""
        try:
            data, sig = self._read_file(path)
        except FileNotFoundError:  # deleted since listed: the next scan sees it gone
            return
        except OSError as exc:
            state.checked, state.error = True, f"{path}: cannot read ({_reason(exc)})"
            return
        if sig != state.sig:  # changed since listed: wait for it to settle again
            state.sig, state.seen = sig, now
            return
        state.checked = True
        try:
            value = json.loads(data, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            state.error = f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            return
        except (ValueError, UnicodeDecodeError) as exc:
            state.error = f"{path}: not valid JSON ({exc})"
            return
        parts, problems = [], []
        for index, item in enumerate(value if isinstance(value, list) else [value]):
            try:
                parts.append(_part(item))
            except ValueError as exc:
                problems.append(f"item {index}: {exc}" if isinstance(value, list) else str(exc))
        if problems:  # a bad file as a whole: what it held before stays in effect
            state.error = f"{path}: {_summary(problems)}"
            return
        state.error = None
        self._use(path, state, tuple(parts), dirty)
        state.used = sig

    def _read_file(self, path: str) -> tuple[bytes, FileSig]:
        """The file's bytes, and its ``FileSig`` once read."""
        with open(path, "rb") as f:
            data = f.read()
            st = os.fstat(f.fileno())
        return data, (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)

    def _use(self, path: str, state: _File, parts: tuple[_Part, ...], dirty: set[int]) -> None:
        """Put ``parts`` in effect for ``path`` (none: the file is gone)."""
        old = {p.task_id for p in state.parts}
        new = {p.task_id for p in parts}
        for task_id in old - new:
            paths = self._task_files.get(task_id)
            if paths is not None:
                paths.discard(path)
                if not paths:
                    del self._task_files[task_id]
        for task_id in new - old:
            self._task_files.setdefault(task_id, set()).add(path)
        state.parts = parts
        dirty |= old | new

    # -------------------------------------------------------------- merging

    def _rebuild(self, dirty: set[int]) -> set[int]:
        changed: set[int] = set()
        for task_id in dirty:
            before = self._docs.get(task_id)
            paths = self._task_files.get(task_id, ())
            sources = [(path, self._files[path]) for path in sorted(paths)]
            self._task_errors.pop(task_id, None)
            try:
                doc = _merge(task_id, sources)
            except BadTask as exc:
                self._task_errors[task_id] = f"{exc} (from {', '.join(sorted(paths))}); its previous " \
                                             "version, if any, stays in effect"
                continue
            if doc is None:
                self._docs.pop(task_id, None)
                self._fingerprints.pop(task_id, None)
            else:
                self._fingerprints[task_id] = _fingerprint(sources)
                self._docs[task_id] = replace(doc, fingerprint=self._fingerprints[task_id])
            if (before.sha256 if before else None) != (doc.sha256 if doc else None):
                changed.add(task_id)
        return changed


def _merge(task_id: int, sources: list[tuple[str, _File]]) -> TaskDocument | None:
    """The document of one task from the parts its files hold (None: no annotation)."""
    best: tuple | None = None
    best_part: _Part | None = None
    annotations: dict[Any, tuple[tuple, _Annotation]] = {}
    for path, state in sources:
        mtime = state.used[0] if state.used else 0
        for part in state.parts:
            if part.task_id != task_id:
                continue
            rank = (part.updated is not None, part.updated or 0.0, mtime, path)
            if best is None or rank > best:
                best, best_part = rank, part
            for index, ann in enumerate(part.annotations):
                key = ann.id if ann.id is not None else (path, index)
                ann_rank = (ann.updated is not None, ann.updated or 0.0, mtime, path)
                if key not in annotations or ann_rank > annotations[key][0]:
                    annotations[key] = (ann_rank, ann)
    if best_part is None or not annotations:
        return None
    ordered = sorted(annotations.items(), key=lambda kv: _annotation_order(kv[0]))
    doc: dict[str, Any] = {"id": task_id, "annotations": [json.loads(a.body) for _, (_, a) in ordered]}
    doc.update(json.loads(best_part.fields))
    return encode_document(task_id, best_part.project_id, doc)


def _annotation_order(key: Any) -> tuple:
    return (0, key, "", 0) if isinstance(key, int) else (1, 0, *key)


def _fingerprint(sources: list[tuple[str, _File]]) -> str:
    h = hashlib.sha256(DIR_FORMAT.encode())
    for _path, state in sorted(sources, key=lambda s: s[1].rel):
        mtime, size, inode, _ctime = state.used or (0, 0, 0, 0)
        h.update(f"\0{state.rel}\0{mtime}\0{size}\0{inode}".encode("utf-8", "surrogateescape"))
    return f"{DIR_FORMAT}:{h.hexdigest()[:32]}"


def _part(obj: Any) -> _Part:
    task = to_export_shape(obj)
    task_id = task.pop("id")
    annotations = tuple(
        _Annotation(a.get("id") if is_int(a.get("id")) else None, _timestamp(a.get("updated_at")),
                    _dumps(a))
        for a in task.pop("annotations"))
    project = task.get("project")
    return _Part(task_id, project if is_int(project) else None, _timestamp(task.get("updated_at")),
                 _dumps(task), annotations)


def _dumps(value: Any) -> bytes:
    # surrogatepass: a lone surrogate read from a \ud800 escape fails later, naming the task
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


# ------------------------------------------------------------------ helpers


def _wanted(name: str) -> bool:
    """Label Studio's names (``123``, ``123.json``) and any ``*.json``."""
    return "." not in name or name.lower().endswith(".json")


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _summary(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_PROBLEMS])
    more = len(problems) - MAX_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def settled_scan(source: DirectorySource, attempts: int = 10) -> DirScan:
    """A scan for a one-shot run: while files are still being written, wait for them to settle
    (a few times at most) so the run sees a quiet directory."""
    scan = source.scan()
    for _ in range(attempts):
        if not scan.pending:
            break
        time.sleep(max(source.settle_seconds, 0.05))
        scan = source.scan()
    return scan
