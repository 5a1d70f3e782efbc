"""The task document: one labeled task as Label Studio's JSON export prints it.

Label Studio's export shape is defined here, once, and every document is made here:
``build_document`` from database rows (the Label Studio source), ``to_export_shape`` from the
objects Label Studio writes to files (the directory source), ``label_studio_export`` for task
documents handed to the JSON converter (bare prediction and user ids, as Label Studio's export).

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
from typing import TYPE_CHECKING, Any, TypedDict, Union

from syncd.errors import BadTask

if TYPE_CHECKING:
    from syncd.sources.base import Project
    from syncd.sources.labelstudio.source import TaskRows, User

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


# Key order of a whole task and of an annotation in Label Studio 1.23's JSON export.
TASK_ORDER = ["id", "annotations", "file_upload", "drafts", "predictions",
              *(name for name, _ in TASK_FIELDS), "comment_authors"]
ANNOTATION_ORDER = [name for name, _ in ANNOTATION_FIELDS]

# Written only by Label Studio's per-annotation storage files (StorageAnnotationSerializer and
# the task nested in it), never by its export.
PER_ANNOTATION_ONLY = ("created_username", "created_ago", "state")
NESTED_TASK_ONLY = ("is_labeled", "overlap", "precomputed_agreement")


@dataclass(frozen=True)
class TaskDocument:
    task_id: int
    project_id: int | None
    body: bytes
    sha256: str
    fingerprint: str = ""  # of what the document was made from (rows, files): unchanged inputs, same document


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
                      "the other tasks still sync)", rows.project_id)
    try:
        return _build(rows, project, users, options)
    except BadTask as exc:
        column = _unencodable_column(rows)
        if column is None:
            raise
        raise BadTask(rows.id, f"{column} {str(exc).split(': ', 1)[1]}; fix the row in Label Studio, the other "
                      "tasks still sync", rows.project_id) from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:  # rows unlike Label Studio's
        raise BadTask(rows.id, f"its rows cannot be made into a document ({type(exc).__name__}: {exc})",
                      rows.project_id) from None


def _unencodable_column(rows: TaskRows) -> str | None:
    """Which ``table.column of row N`` holds what JSON cannot hold (for the error line)."""
    tables = [("task", [rows.task]), ("task_completion", rows.annotations), ("prediction", rows.predictions),
              ("tasks_annotationdraft", rows.drafts)]
    for table, table_rows in tables:
        for row in table_rows:
            for column, value in row.items():
                try:
                    json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
                except (ValueError, RecursionError, UnicodeEncodeError, TypeError):
                    return f"{table}.{column} of row {row.get('id', '?')}"
    return None


def _build(rows: TaskRows, project: Project | None, users: dict[int, User], options: DocumentOptions) -> TaskDocument:
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
    return encode_document(task["id"], task.get("project_id"), doc, options.fingerprint(rows.fingerprint))


def encode_document(task_id: int, project_id: int | None, doc: dict[str, Any], fingerprint: str = "") -> TaskDocument:
    try:
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except UnicodeEncodeError as exc:  # a lone surrogate from a \ud800 escape
        raise BadTask(task_id, f"cannot be written as JSON: it holds text that is not UTF-8 ({exc.reason})",
                      project_id) from None
    except ValueError as exc:  # NaN/Infinity (a number JSON cannot hold, such as 1e400)
        raise BadTask(task_id, f"cannot be written as JSON ({exc})", project_id) from None
    except RecursionError:
        raise BadTask(task_id, "nests too deep to be written as JSON", project_id) from None
    return TaskDocument(task_id, project_id, body, hashlib.sha256(body).hexdigest(), fingerprint)


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


# ------------------------------------------------------------------ objects from Label Studio's files


def to_export_shape(obj: Any) -> dict[str, Any]:
    """One object of a Label Studio file as the task object of Label Studio's JSON export.

    ``obj`` is a task (export or per-task storage file: ``completed_by`` expanded to a user,
    ``drafts`` as ids) or an annotation with its task nested (per-annotation storage file).
    ``completed_by`` becomes the user id, ``drafts`` draft ids, keys come in the export's order
    (unknown keys after, as written) and annotations in id order. ``ValueError`` (a short
    reason) if ``obj`` is neither a task nor an annotation."""
    if not isinstance(obj, dict):
        raise ValueError(f"not a Label Studio task (a JSON {_kind(obj)}, not an object)")
    if isinstance(obj.get("task"), dict) and "result" in obj:
        task = dict(obj["task"])
        annotation = {k: v for k, v in obj.items() if k not in PER_ANNOTATION_ONLY}
        annotation["task"] = task.get("id")
        for name in NESTED_TASK_ONLY:
            task.pop(name, None)
        if not isinstance(task.get("file_upload"), str):
            task.pop("file_upload", None)  # the upload's id; the export gives its file name
        nested = task.get("annotations")
        task["annotations"] = [*(nested if isinstance(nested, list) else []), annotation]
        obj = task
    task_id = obj.get("id")
    if not is_int(task_id):
        raise ValueError("not a Label Studio task (no integer \"id\")")
    annotations = obj.get("annotations", [])
    if not isinstance(obj.get("data"), dict) and "annotations" not in obj:
        raise ValueError(f"task {task_id}: not a Label Studio task (no \"data\" object)")
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise ValueError(f"task {task_id}: \"annotations\" is not a list of objects")
    out: dict[str, Any] = dict(obj)
    out["annotations"] = sorted((_annotation(a) for a in annotations), key=_annotation_sort_key)
    drafts = out.get("drafts")
    if isinstance(drafts, list):
        out["drafts"] = [d["id"] if isinstance(d, dict) and is_int(d.get("id")) else d for d in drafts]
    return _ordered(out, TASK_ORDER)


def label_studio_export(task: dict) -> dict:
    """A task document as Label Studio's JSON export prints it: bare prediction ids (syncd's
    documents may hold full prediction objects) and user ids (storage files expand the users).
    The task itself when nothing needs to change."""
    preds = task.get("predictions")
    changed = False
    if isinstance(preds, list) and any(isinstance(p, dict) for p in preds):
        preds = [p.get("id") if isinstance(p, dict) else p for p in preds]
        changed = True
    anns = task.get("annotations")
    if isinstance(anns, list) and any(isinstance(a, dict) and isinstance(a.get("completed_by"), dict) for a in anns):
        anns = [{**a, "completed_by": _user_id(a["completed_by"])}
                if isinstance(a, dict) and isinstance(a.get("completed_by"), dict) else a for a in anns]
        changed = True
    if not changed:
        return task
    out = dict(task)
    if "predictions" in task:
        out["predictions"] = preds
    if "annotations" in task:
        out["annotations"] = anns
    return out


_NotAnObject = Union[int, float, str, bool, None, list]  # noqa: UP007 - (msgspec reads it at run time)


class _AnnotationByUserId(TypedDict, total=False):
    completed_by: _NotAnObject


class _ExportShaped(TypedDict, total=False):
    predictions: list[_NotAnObject]
    annotations: list[_AnnotationByUserId]


# a type that a task fits only when label_studio_export leaves it as it is: the JSON converter
# decodes a batch of an export with it (msgspec) to learn that it may copy the batch, without
# decoding the rest (see converters.base.ConvertOptions.task_shape)
label_studio_export.unchanged_type = _ExportShaped  # type: ignore[attr-defined]


def _user_id(user: dict) -> Any:
    return user["id"] if "id" in user else user


def _annotation(ann: dict[str, Any]) -> dict[str, Any]:
    out = dict(ann)
    user = out.get("completed_by")
    if isinstance(user, dict) and is_int(user.get("id")):
        out["completed_by"] = user["id"]
    return _ordered(out, ANNOTATION_ORDER)


def _annotation_sort_key(ann: dict[str, Any]) -> tuple[int, int]:
    ann_id = ann.get("id")
    return (0, ann_id) if is_int(ann_id) else (1, 0)  # stable: id-less ones keep their order


def _ordered(obj: dict[str, Any], order: list[str]) -> dict[str, Any]:
    out = {name: obj[name] for name in order if name in obj}
    out.update((k, v) for k, v in obj.items() if k not in out)
    return out


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")
