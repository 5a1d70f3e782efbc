"""The task document: one labeled task as Label Studio's JSON export prints it.

Fields come in the order Label Studio's export serializer gives them, so a document reads like
the matching object in Label Studio's own export; the JSON values stored by Label Studio
(``data``, ``meta``, ``result`` ...) keep their stored key order. The bytes are UTF-8 compact
JSON, so the same database always gives byte-identical objects and the same sha256.

Deliberate differences from Label Studio's export (documented in the README):
- ``predictions`` holds the full prediction objects (``predictions: ids`` gives bare ids);
- the ``created_ago`` field ("3 minutes") of predictions and drafts is left out: it depends on
  the time of the export, and would make every document change every minute.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from syncd.errors import BadTask
from syncd.source import Project, TaskRows, User

# (export field, database column) in Label Studio 1.23's serializer order. A column that a
# database of another Label Studio version lacks is left out; columns it has beyond these are
# not exported.
TASK_FIELDS = [
    ("data", "data"), ("meta", "meta"), ("created_at", "created_at"), ("updated_at", "updated_at"),
    ("allow_skip", "allow_skip"), ("inner_id", "inner_id"), ("total_annotations", "total_annotations"),
    ("cancelled_annotations", "cancelled_annotations"), ("total_predictions", "total_predictions"),
    ("comment_count", "comment_count"), ("unresolved_comment_count", "unresolved_comment_count"),
    ("last_comment_updated_at", "last_comment_updated_at"), ("project", "project_id"),
    ("updated_by", "updated_by_id"),
]
ANNOTATION_FIELDS = [
    ("id", "id"), ("completed_by", "completed_by_id"), ("result", "result"),
    ("was_cancelled", "was_cancelled"), ("ground_truth", "ground_truth"), ("created_at", "created_at"),
    ("updated_at", "updated_at"), ("draft_created_at", "draft_created_at"), ("lead_time", "lead_time"),
    ("prediction", "prediction"), ("result_count", "result_count"), ("unique_id", "unique_id"),
    ("import_id", "import_id"), ("last_action", "last_action"), ("bulk_created", "bulk_created"),
    ("task", "task_id"), ("project", "project_id"), ("updated_by", "updated_by_id"),
    ("parent_prediction", "parent_prediction_id"), ("parent_annotation", "parent_annotation_id"),
    ("last_created_by", "last_created_by_id"),
]
PREDICTION_FIELDS = [
    ("id", "id"), ("result", "result"), ("model_version", "model_version"), ("score", "score"),
    ("cluster", "cluster"), ("neighbors", "neighbors"), ("mislabeling", "mislabeling"),
    ("created_at", "created_at"), ("updated_at", "updated_at"), ("model", "model_id"),
    ("model_run", "model_run_id"), ("task", "task_id"), ("project", "project_id"),
]
DRAFT_FIELDS = [
    ("id", "id"), ("user", None), ("created_username", None), ("result", "result"),
    ("lead_time", "lead_time"), ("was_postponed", "was_postponed"), ("import_id", "import_id"),
    ("created_at", "created_at"), ("updated_at", "updated_at"), ("task", "task_id"),
    ("annotation", "annotation_id"),
]

# Bumped whenever syncd changes how a document is made from the same rows: stored row
# fingerprints then no longer match, and the next resync rebuilds every document.
DOCUMENT_FORMAT = "1"

# Label Studio replaces this key of task data with the project's first data field on export.
DATA_UNDEFINED_NAME = "$undefined$"


@dataclass(frozen=True)
class TaskDocument:
    task_id: int
    project_id: int | None
    body: bytes
    sha256: str


@dataclass(frozen=True)
class DocumentOptions:
    predictions: str = "full"  # "full" objects or Label Studio's bare "ids"

    def fingerprint(self, rows_fingerprint: str) -> str:
        """What the checkpoint stores: the rows' fingerprint and everything else that shapes
        the document, so a change of options or of syncd's format also counts as a change."""
        return f"{DOCUMENT_FORMAT}:{self.predictions}:{rows_fingerprint}" if rows_fingerprint else ""


def build_document(rows: TaskRows, project: Project | None, users: dict[int, User],
                   options: DocumentOptions) -> TaskDocument:
    """Turn one task's rows into its document; ``BadTask`` if a row cannot be read."""
    if rows.errors:
        raise BadTask(rows.id, "; ".join(rows.errors) + " (fix the row in Label Studio; "
                      "the other tasks still sync)")
    task = rows.task
    doc: dict[str, Any] = {"id": task["id"]}
    doc["annotations"] = [_fields(a, ANNOTATION_FIELDS) for a in rows.annotations]
    if rows.file_upload:
        doc["file_upload"] = rows.file_upload
    doc["drafts"] = [_draft(d, users) for d in rows.drafts]
    if options.predictions == "ids":
        doc["predictions"] = [p["id"] for p in rows.predictions]
    else:
        doc["predictions"] = [_fields(p, PREDICTION_FIELDS) for p in rows.predictions]
    for name, column in TASK_FIELDS:
        if column in task:
            doc[name] = task[column]
    doc["comment_authors"] = list(rows.comment_authors)
    data = doc.get("data")
    if isinstance(data, dict) and DATA_UNDEFINED_NAME in data and project and project.data_types:
        data[next(iter(project.data_types))] = data.pop(DATA_UNDEFINED_NAME)
    return encode_document(task["id"], task.get("project_id"), doc)


def encode_document(task_id: int, project_id: int | None, doc: dict[str, Any]) -> TaskDocument:
    try:
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:  # NaN/Infinity cannot be written as JSON
        raise BadTask(task_id, f"cannot be written as JSON ({exc})") from None
    return TaskDocument(task_id, project_id, body, hashlib.sha256(body).hexdigest())


def _fields(row: dict[str, Any], spec: list[tuple[str, str]]) -> dict[str, Any]:
    return {name: row[column] for name, column in spec if column in row}


def _draft(row: dict[str, Any], users: dict[int, User]) -> dict[str, Any]:
    user = users.get(row.get("user_id"))
    out: dict[str, Any] = {}
    for name, column in DRAFT_FIELDS:
        if name == "user":
            out[name] = user.email if user else None
        elif name == "created_username":
            out[name] = _username(user)
        elif column in row:
            out[name] = row[column]
    return out


def _username(user: User | None) -> str:
    # Label Studio's AnnotationDraftSerializer.get_created_username
    if user is None:
        return ""
    name = user.first_name
    if user.last_name:
        name = f"{name} {user.last_name}"
    return name + (" " if name else "") + f"{user.email}, {user.id}"
