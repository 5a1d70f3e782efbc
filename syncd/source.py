"""The change source for Label Studio's database: streams labeled tasks with their rows.

A task is "labeled" when it has at least one annotation row (cancelled ones count), exactly
as Label Studio's own JSON export decides. Tasks are read in id order, in batches; each batch
(its tasks, annotations, predictions, drafts and comment authors) is read inside one short
read transaction, so every task is consistent and Label Studio is never blocked for long.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from syncd.database import Column, Database, format_timestamp
from syncd.keys import slugify

DEFAULT_BATCH = 500


@dataclass
class Project:
    id: int
    title: str
    slug: str
    label_config: str
    data_types: dict[str, Any]


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
    """Reads labeled tasks from an open Label Studio ``Database``."""

    def __init__(self, db: Database, batch_size: int = DEFAULT_BATCH):
        self.db = db
        self.batch_size = batch_size
        self._users: dict[int, User] | None = None

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
                except ValueError:
                    data_types = {}
            projects[values["id"]] = Project(
                id=values["id"], title=values.get("title") or "",
                slug=slugify(values.get("title"), values["id"]),
                label_config=values.get("label_config") or "",
                data_types=data_types if isinstance(data_types, dict) else {})
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

    # -------------------------------------------------------------- streaming

    def iter_labeled(self, project_ids: Iterable[int] = (), after_id: int = 0) -> Iterator[TaskRows]:
        """Every labeled task with id > ``after_id``, in id order, batch by batch."""
        projects = list(project_ids)
        last_id = after_id
        while True:
            batch = self.read_batch(projects, last_id)
            if not batch:
                return
            yield from batch
            last_id = batch[-1].id

    def read_batch(self, project_ids: list[int], after_id: int) -> list[TaskRows]:
        where, params = _labeled_filter(project_ids)
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
            rows = self.db.query(
                f"SELECT {select} FROM {source} WHERE t.id > ? AND {where} ORDER BY t.id LIMIT ?",
                [after_id, *params, self.batch_size])
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
        return list(tasks.values())

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


def _decode(cols: dict[str, Column], names: list[str], row: tuple, table: str,
            errors: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(names, row, strict=True):
        kind = cols[name].kind
        if value is None or kind == "plain":
            out[name] = value
        elif kind == "json":
            if isinstance(value, (str, bytes)):
                try:
                    value = json.loads(value)
                except ValueError as exc:
                    row_id = out.get("id", "?")
                    errors.append(f"{table}.{name} of row {row_id} is not valid JSON ({exc})")
                    value = None
            out[name] = value
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
        else:
            out[name] = value
    return out
