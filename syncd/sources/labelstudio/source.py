"""The Label Studio database source: labeled tasks read from Label Studio's own tables.

A task is "labeled" when it has at least one annotation row (cancelled ones count), exactly
as Label Studio's own JSON export decides. Tasks are read in id order, in batches; each batch
(its tasks, annotations, predictions, drafts and comment authors) is read inside one short
read transaction, so every task is consistent and Label Studio is never blocked for long.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from syncd.document import DocumentOptions, TaskDocument, build_document
from syncd.errors import BadTask, SourceError, one_line
from syncd.keys import slugify
from syncd.sources.base import Cursor, Feed, Project, Wake, batched
from syncd.sources.labelstudio import notify
from syncd.sources.labelstudio.builders import MIN_TASKS, DocumentBuilders
from syncd.sources.labelstudio.database import Column, Database, NotUtf8, format_timestamp, row_errors, sqlite_path
from syncd.sources.watch import watch_paths

log = logging.getLogger("syncd")

DEFAULT_BATCH = 500


@dataclass
class TaskRows:
    """One task's rows, decoded to Python values, keyed by column name."""

    task: dict[str, Any]
    annotations: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    drafts: list[dict[str, Any]] = field(default_factory=list)
    comment_authors: list[int] = field(default_factory=list)
    file_upload: str | None = None
    errors: list[str] = field(default_factory=list)  # what could not be decoded
    fingerprint: str = ""  # see LabelStudioSource.fingerprints

    @property
    def id(self) -> int:
        return self.task["id"]

    @property
    def project_id(self) -> int | None:
        return self.task.get("project_id")


@dataclass
class User:
    id: int
    email: str
    first_name: str
    last_name: str


class LabelStudioSource:
    """Reads labeled tasks from an open Label Studio ``Database``; documents are made with
    ``options`` (``syncd.document.build_document``)."""

    def __init__(self, db: Database, batch_size: int = DEFAULT_BATCH, options: DocumentOptions | None = None,
                 workers: int = 0):
        self.db = db
        self.batch_size = batch_size
        self.options = options or DocumentOptions()
        self._users: dict[int, User] | None = None
        self._db_file = sqlite_path(db.connect_url) if db.dialect == "sqlite" else None
        # Processes building documents for big passes (``builders``); 0: all in this one.
        self._builders = DocumentBuilders(db.connect_url, batch_size, self.options, workers) if workers else None

    @property
    def url(self) -> str:
        return self.db.url

    # -------------------------------------------------------------- the Source interface

    def documents(self, task_ids: Iterable[int] | None = None,
                  project_ids: Iterable[int] = ()) -> Iterator[TaskDocument | BadTask]:
        projects = list(project_ids)
        if task_ids is None:
            chunks: Iterable[list[int]] = self._labeled_ids(projects)
        else:
            ids = sorted(set(task_ids))
            chunks = batched(ids, self.batch_size)
            if self._builders is not None and not self._builders.broken and len(ids) >= MIN_TASKS:
                here = functools.partial(self.build_batch, project_ids=projects, known=self.projects())
                try:
                    return self._builders.documents(chunks, projects, here)
                except OSError as exc:  # no /dev/shm for the pool's locks, a process limit
                    log.warning("cannot start document builder processes (%s); building documents in "
                                "this process (set build_workers: 0 to silence this)", one_line(exc))
                    self._builders = None
            elif self._builders is not None:
                self._builders.idle()
        return self._documents(chunks, projects)

    def _documents(self, chunks: Iterable[list[int]], projects: list[int]) -> Iterator[TaskDocument | BadTask]:
        known = self.projects()
        for chunk in chunks:
            yield from self.build_batch(chunk, projects, known)

    def build_batch(self, ids: list[int], project_ids: list[int],
                    known: dict[int, Project]) -> list[TaskDocument | BadTask]:
        """The documents of one batch of tasks, read in one short transaction (``known``: the
        projects, for data fields named ``$undefined$``)."""
        batch = self._read_isolated(ids, project_ids)
        users = self._users_for([rows for rows in batch if isinstance(rows, TaskRows)])
        built: list[TaskDocument | BadTask] = []
        for rows in batch:
            if isinstance(rows, BadTask):
                built.append(rows)
                continue
            try:
                built.append(build_document(rows, known.get(rows.project_id), users, self.options))
            except BadTask as exc:
                built.append(exc)
        return built

    def _read_isolated(self, ids: list[int], project_ids: list[int]) -> list[TaskRows | BadTask]:
        """``read_tasks``; when a row of the batch cannot be read at all, each task on its own,
        so that only the task the row belongs to fails (a lost connection still raises)."""
        try:
            return list(self.read_tasks(ids, project_ids))
        except row_errors() as exc:
            if len(ids) == 1:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                return [BadTask(ids[0], f"its rows cannot be read ({reason}); fix them in Label Studio, the "
                                        "other tasks still sync")]
        return [item for task_id in ids for item in self._read_isolated([task_id], project_ids)]

    def _labeled_ids(self, project_ids: list[int]) -> Iterator[list[int]]:
        """The ids of every labeled task, in id order, ``batch_size`` at a time."""
        where, params = _labeled_filter(project_ids)
        last_id = 0
        while True:
            ids = [r[0] for r in self.db.query(f"SELECT t.id FROM task t WHERE t.id > ? AND {where} "
                                               "ORDER BY t.id LIMIT ?", [last_id, *params, self.batch_size])]
            if not ids:
                return
            yield ids
            last_id = ids[-1]

    def refresh(self) -> None:
        pass  # every read is a fresh short transaction

    complete = True  # a task missing from the database is gone
    problems: list[str] = []  # a row that cannot be read belongs to a task: a BadTask

    def watch(self, wake: Callable[[Wake], None]) -> Feed | None:
        """SQLite: file events on the database and its journal/WAL. PostgreSQL: LISTEN/NOTIFY
        when ``syncd install-triggers`` installed the triggers; else nothing (polled)."""
        if self._db_file is not None:
            files = [self._db_file, Path(f"{self._db_file}-wal"), Path(f"{self._db_file}-journal")]
            return watch_paths([f.parent for f in files], lambda: wake(Wake()), only=files)
        if notify.installed(self.db):
            log.info("PostgreSQL triggers found: woken by LISTEN/NOTIFY")
            return notify.Listener(self.db.connect_url, lambda task_id: wake(Wake(frozenset((task_id,)))),
                                   lambda why: wake(Wake(lost=why)))
        return None

    def close(self) -> None:
        try:
            if self._builders is not None:
                self._builders.close()
        finally:
            self.db.close()

    def _users_for(self, batch: list[TaskRows]) -> dict[int, User]:
        users = self.users()
        if any(d.get("user_id") not in users for rows in batch for d in rows.drafts if d.get("user_id") is not None):
            self._users = None  # a user who signed up since: read them again
            users = self.users()
        return users

    # -------------------------------------------------------------- metadata

    def projects(self) -> dict[int, Project]:
        cols = self.db.columns("project")
        wanted = [c for c in ("id", "title", "label_config", "data_types") if c in cols]
        rows = self.db.query(f"SELECT {_select(wanted)} FROM project ORDER BY id")
        projects = {}
        for row in rows:
            values = dict(zip(wanted, row, strict=True))
            data_types = values.get("data_types")
            if isinstance(data_types, str):
                try:
                    data_types = json.loads(data_types)
                except (ValueError, RecursionError):
                    data_types = {}
            label_config = values.get("label_config") or ""
            # A title or name with bytes that are not UTF-8 is shown with U+FFFD; a labeling
            # config is not guessed at: the project's bundles fail, naming it.
            problem = (f"project {values['id']}: its labeling config is not valid UTF-8 text; fix it in "
                       "Label Studio") if isinstance(label_config, NotUtf8) else None
            projects[values["id"]] = Project(
                id=values["id"], title=str(values.get("title") or ""),
                slug=slugify(values.get("title"), values["id"]),
                label_config=str(label_config), data_types=data_types if isinstance(data_types, dict) else {},
                label_config_error=problem)
        return projects

    def users(self) -> dict[int, User]:
        if self._users is None:
            self._users = {}
            if "htx_user" in self.db.tables:
                for uid, email, first, last in self.db.query(
                        "SELECT id, email, first_name, last_name FROM htx_user"):
                    self._users[uid] = User(uid, email or "", first or "", last or "")
        return self._users

    def count_labeled(self, project_ids: Iterable[int] = ()) -> int:
        where, params = _labeled_filter(list(project_ids))
        return self.db.query(f"SELECT COUNT(*) FROM task t WHERE {where}", params)[0][0]

    def count_labeled_by_project(self, project_ids: Iterable[int] = ()) -> dict[int | None, int]:
        where, params = _labeled_filter(list(project_ids))
        return dict(self.db.query(f"SELECT t.project_id, COUNT(*) FROM task t WHERE {where} GROUP BY t.project_id",
                                  params))

    # -------------------------------------------------------------- streaming

    def read_tasks(self, task_ids: Iterable[int], project_ids: Iterable[int] = ()) -> list[TaskRows]:
        """These tasks, where they exist and are labeled (the others are simply absent)."""
        ids = sorted(set(task_ids))
        found: list[TaskRows] = []
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start:start + self.batch_size]
            where, params = _labeled_filter(list(project_ids))
            found += self._read(f"t.id IN ({_marks(chunk)}) AND {where} ORDER BY t.id", [*chunk, *params])
        return found

    def _read(self, condition: str, params: list[Any]) -> list[TaskRows]:
        task_cols = self.db.columns("task")
        names = list(task_cols)
        file_join = "data_import_fileupload" in self.db.tables and "file_upload_id" in task_cols
        select = ", ".join(f't."{n}"' for n in names)
        if file_join:
            select += ", f.file"
            source = "task t LEFT JOIN data_import_fileupload f ON f.id = t.file_upload_id"
        else:
            source = "task t"
        with self.db.snapshot():
            rows = self.db.query(f"SELECT {select} FROM {source} WHERE {condition}", params)
            if not rows:
                return []
            tasks: dict[int, TaskRows] = {}
            for row in rows:
                errors: list[str] = []
                task = _decode(task_cols, names, row[:len(names)], "task", errors)
                item = TaskRows(task=task, errors=errors)
                if file_join and row[-1]:
                    item.file_upload = str(row[-1]).replace("\\", "/").rsplit("/", 1)[-1]
                tasks[task["id"]] = item
            ids = list(tasks)
            self._attach(ids, tasks, "task_completion", "annotations")
            self._attach(ids, tasks, "prediction", "predictions")
            self._attach(ids, tasks, "tasks_annotationdraft", "drafts")
            if "task_comment_authors" in self.db.tables:
                for task_id, user_id in self.db.query(
                        f"SELECT task_id, user_id FROM task_comment_authors WHERE task_id IN "
                        f"({_marks(ids)}) ORDER BY id", ids):
                    tasks[task_id].comment_authors.append(user_id)
            for task_id, (_project, fingerprint) in self._fingerprints(ids).items():
                tasks[task_id].fingerprint = fingerprint
        return list(tasks.values())

    # -------------------------------------------------------------- what changed

    def fingerprints(self, project_ids: Iterable[int] = (), bare: bool = False, after_id: int = 0,
                     batch: int = 5000) -> Iterator[tuple[int, int | None, str]]:
        """``(task_id, project_id, fingerprint)`` of every labeled task after ``after_id``, in id order
        (``bare``: with ``""`` for the fingerprint, not computed).

        The rows' fingerprint digests per-task aggregates of every row a document is made of
        (counts, id sums, latest ``updated_at``, stored sizes, ground-truth and cancelled flags),
        so it changes when a row is added, deleted or edited, even by a bulk UPDATE that leaves
        ``updated_at`` alone. Computing it is a few grouped scans, far cheaper than building the
        documents. The document options are part of it, so a change of options or of syncd's
        document format counts as a change too."""
        projects = list(project_ids)
        where, params = _labeled_filter(projects)
        last_id = after_id
        while True:
            if bare:
                rows = self.db.query(f"SELECT t.id, t.project_id FROM task t WHERE t.id > ? AND {where} "
                                     "ORDER BY t.id LIMIT ?", [last_id, *params, batch])
                yield from ((task_id, project_id, "") for task_id, project_id in rows)
                if not rows:
                    return
                last_id = rows[-1][0]
                continue
            with self.db.snapshot():
                ids = [r[0] for r in self.db.query(
                    f"SELECT t.id FROM task t WHERE t.id > ? AND {where} ORDER BY t.id LIMIT ?",
                    [last_id, *params, batch])]
                if not ids:
                    return
                found = self._fingerprints(ids)
            for task_id in ids:
                if task_id in found:
                    project_id, fingerprint = found[task_id]
                    yield task_id, project_id, self.options.fingerprint(fingerprint)
            last_id = ids[-1]

    def _fingerprints(self, ids: list[int]) -> dict[int, tuple[int | None, str]]:
        parts: dict[int, list[Any]] = {}
        projects: dict[int, int | None] = {}
        for row in self.db.query(f"SELECT id, project_id, {self._aggregates('task', per_row=True)} FROM task "
                                 f"WHERE id IN ({_marks(ids)})", ids):
            projects[row[0]] = row[1]
            parts[row[0]] = [tuple(row[1:])]
        for table in ("task_completion", "prediction", "tasks_annotationdraft"):
            if table not in self.db.tables:
                continue
            found = {row[0]: tuple(row[1:]) for row in self.db.query(
                f"SELECT task_id, {self._aggregates(table)} FROM {table} "
                f"WHERE task_id IN ({_marks(ids)}) GROUP BY task_id", ids)}
            for task_id, values in parts.items():
                values.append(found.get(task_id))
        return {task_id: (projects[task_id], hashlib.sha1(repr(values).encode()).hexdigest()[:20])
                for task_id, values in parts.items()}

    def _aggregates(self, table: str, per_row: bool = False) -> str:
        cols = self.db.columns(table)
        size = "LENGTH(CAST({} AS BLOB))" if self.db.dialect == "sqlite" else "pg_column_size({})"
        terms: list[str] = []
        if per_row:
            terms += [f'"{c}"' for c in ("updated_at", "file_upload_id", "updated_by_id") if c in cols]
            terms += [size.format(f'"{c}"') for c in ("data", "meta") if c in cols]
            return ", ".join(terms) or "1"
        terms += ["COUNT(*)", "SUM(id)", "MAX(updated_at)" if "updated_at" in cols else "0"]
        terms += [f"SUM({size.format(chr(34) + c + chr(34))})" for c in ("result", "prediction") if c in cols]
        terms += [f'SUM(CASE WHEN "{c}" THEN id ELSE 0 END)' for c in ("ground_truth", "was_cancelled") if c in cols]
        return ", ".join(terms)

    def changes_since(self, cursor: Cursor, lookback: float = 10.0) -> tuple[set[int], Cursor]:
        """Ids of tasks touched since ``cursor`` (high-water marks of id and ``updated_at`` per
        table), and the new cursor. ``None`` starts from now.

        On SQLite, ``PRAGMA data_version`` tells at no cost whether another connection committed
        since the last look; nothing else is read when it did not. A database file that was
        replaced (restored from a backup) or removed raises ``SourceError``: reconnect.

        A transaction can commit a row whose ``updated_at`` is older than one already seen, so
        each poll looks ``lookback`` seconds behind the mark; re-reading a task costs little
        because unchanged documents are not written again. What no timestamp shows (deletions,
        bulk flag updates) is left to the periodic fingerprint reconciliation."""
        # (table, its task id column, scan updated_at?) New rows are found through the primary
        # key, which costs the same at any size. Updates are found through task.updated_at,
        # which Label Studio bumps for every annotation and prediction change (a BRIN index
        # on PostgreSQL), and through the drafts table, which is small (drafts are removed
        # on submit). Annotation rows are not scanned for updates: they are the largest
        # table, and the task row tells.
        tables = [("task", "id", True), ("task_completion", "task_id", False),
                  ("prediction", "task_id", False), ("tasks_annotationdraft", "task_id", True)]
        version = self._file_version(cursor)
        if cursor is not None and version is not None and version == cursor.get("version"):
            return set(), cursor
        new_cursor: dict[str, Any] = {"version": version}
        touched: set[int] = set()
        recent: dict[tuple[str, int], Any] = {}
        with self.db.snapshot():
            for table, task_col, scan_updates in tables:
                cols = self.db.columns(table)
                if not cols:
                    continue
                scan_updates = scan_updates and "updated_at" in cols
                max_id = self.db.query(f"SELECT MAX(id) FROM {table}")[0][0] or 0  # primary key: cheap
                if cursor is None or table not in cursor:
                    max_updated = None
                    if scan_updates:
                        max_updated = self.db.query(f"SELECT MAX(updated_at) FROM {table}")[0][0]
                        # Start the look-back memory now, so the first poll does not re-read
                        # every row of the last few seconds.
                        since = _minus_seconds(max_updated, lookback)
                        if since is not None:
                            for _task_id, row_id, updated in self.db.query(
                                    f"SELECT {task_col}, id, updated_at FROM {table} WHERE updated_at > ?", [since]):
                                recent[(table, row_id)] = updated
                    new_cursor[table] = (max_id, max_updated)
                    continue
                last_id, last_updated = cursor[table]
                since = _minus_seconds(last_updated, lookback) if scan_updates else None
                if since is None:
                    if max_id > last_id:
                        touched.update(r[0] for r in self.db.query(
                            f"SELECT {task_col} FROM {table} WHERE id > ?", [last_id]) if r[0] is not None)
                    new_cursor[table] = (max_id, last_updated)
                    continue
                # One pass finds new and updated rows and the new high-water mark. Rows inside the
                # look-back window were seen already unless their updated_at moved: remember them
                # so a burst is not re-read on every poll.
                seen_before = cursor.get("recent", {})
                newest = last_updated
                for task_id, row_id, updated in self.db.query(
                        f"SELECT {task_col}, id, updated_at FROM {table} WHERE id > ? OR updated_at > ?",
                        [last_id, since]):
                    recent[(table, row_id)] = updated
                    if updated is not None and (newest is None or updated > newest):
                        newest = updated
                    if task_id is not None and (row_id > last_id or seen_before.get((table, row_id)) != updated):
                        touched.add(task_id)
                new_cursor[table] = (max_id, newest)
        new_cursor["recent"] = recent
        return touched, new_cursor

    def _file_version(self, cursor: Cursor) -> tuple | None:
        """SQLite: the database file's identity and ``PRAGMA data_version`` (a per-connection
        counter that moves when another connection commits); None on PostgreSQL."""
        if self._db_file is None:
            return None
        try:
            st = os.stat(self._db_file)
            identity = (st.st_dev, st.st_ino)
        except OSError:
            identity = None
        previous = cursor.get("version") if cursor else None
        if previous is not None and identity != previous[0]:
            raise SourceError(f"database file {self._db_file} was replaced or removed; reconnecting")
        return identity, self.db.query("PRAGMA data_version")[0][0]

    def _attach(self, ids: list[int], tasks: dict[int, TaskRows], table: str, attr: str) -> None:
        if table not in self.db.tables:
            return
        cols = self.db.columns(table)
        names = list(cols)
        for row in self.db.query(f"SELECT {_select(names)} FROM {table} WHERE task_id IN ({_marks(ids)}) "
                                 "ORDER BY task_id, id", ids):
            item = tasks[row[names.index("task_id")]]
            getattr(item, attr).append(_decode(cols, names, row, table, item.errors))


def _select(names: list[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _marks(values: list[Any]) -> str:
    return ", ".join("?" for _ in values)


def _labeled_filter(project_ids: list[int]) -> tuple[str, list[Any]]:
    where = "EXISTS (SELECT 1 FROM task_completion c WHERE c.task_id = t.id)"
    if project_ids:
        where = f"t.project_id IN ({_marks(project_ids)}) AND {where}"
    return where, list(project_ids)


_json_text = json.JSONDecoder().decode  # json.loads for a str, without its per-call checks


def _decode(cols: dict[str, Column], names: list[str], row: tuple, table: str,
            errors: list[str]) -> dict[str, Any]:
    """One row as Python values; what cannot be read is noted in ``errors`` (the task fails)."""
    out: dict[str, Any] = dict(zip(names, row, strict=True))
    for name, value in out.items():
        if value is None:
            continue
        if type(value) is NotUtf8:
            errors.append(f"{table}.{name} of row {out.get('id', '?')} is not valid UTF-8 text")
            value = out[name] = str(value)
        kind = cols[name].kind
        if kind == "plain":
            continue
        if kind == "json":
            if isinstance(value, (str, bytes)):
                try:
                    out[name] = _json_text(value) if type(value) is str else json.loads(value)
                except ValueError as exc:
                    errors.append(f"{table}.{name} of row {out.get('id', '?')} is not valid JSON ({exc})")
                    out[name] = None
                except RecursionError:
                    errors.append(f"{table}.{name} of row {out.get('id', '?')} nests deeper than syncd "
                                  f"reads JSON (about {sys.getrecursionlimit()} levels)")
                    out[name] = None
        elif kind == "datetime":
            try:
                out[name] = format_timestamp(value)
            except ValueError:
                errors.append(f"{table}.{name} of row {out.get('id', '?')} is not a timestamp ({value!r})")
                out[name] = None
        elif kind == "bool":
            out[name] = bool(value)
        elif kind == "uuid":
            try:
                out[name] = str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
            except ValueError:
                out[name] = str(value)
    return out


def _minus_seconds(value: Any, seconds: float) -> Any:
    """A stored timestamp moved back by ``seconds``, in the form the database compares."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value - timedelta(seconds=seconds)
    try:
        moved = datetime.fromisoformat(str(value)) - timedelta(seconds=seconds)
    except ValueError:
        return None
    return moved.strftime("%Y-%m-%d %H:%M:%S.%f")
