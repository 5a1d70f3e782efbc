"""Task documents equal Label Studio's own JSON export, task by task, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime, timedelta, timezone

from syncd.document import DocumentOptions
from syncd.errors import BadTask
from syncd.sources.labelstudio import LabelStudioSource
from syncd.sources.labelstudio.database import connect, format_timestamp
from tests.conftest import exported_tasks, fixture_projects


def documents(db_url: str, predictions: str = "ids") -> dict[int, bytes]:
    # small batches: exercise the batching
    source = LabelStudioSource(connect(db_url), batch_size=7, options=DocumentOptions(predictions=predictions))
    try:
        return {doc.task_id: doc.body for doc in source.documents()}
    finally:
        source.close()


def test_sqlite_documents_equal_label_studio_export(fixtures_dir, ls_db):
    docs = documents(f"sqlite:///{ls_db}")
    expected_ids = set()
    for slug in fixture_projects(fixtures_dir):
        exported = exported_tasks(fixtures_dir / "exports" / slug / "JSON.annotated-only.json")
        expected_ids |= set(exported)
        for task_id, task in exported.items():
            assert task_id in docs, f"{slug}: task {task_id} is in Label Studio's export but was not synced"
            doc = json.loads(docs[task_id])
            assert doc == task, f"{slug}: task {task_id} differs from Label Studio's export"
            # Same field order as Label Studio, down to the annotations.
            assert list(doc) == list(task)
            assert [list(a) for a in doc["annotations"]] == [list(a) for a in task["annotations"]]
    assert set(docs) == expected_ids, "tasks without annotations must not be synced"


def test_full_predictions_are_label_studio_prediction_objects(fixtures_dir, ls_db):
    full = {tid: json.loads(body) for tid, body in documents(f"sqlite:///{ls_db}", "full").items()}
    ids = {tid: json.loads(body) for tid, body in documents(f"sqlite:///{ls_db}", "ids").items()}
    checked = 0
    for task_id, doc in full.items():
        assert [p["id"] for p in doc["predictions"]] == ids[task_id]["predictions"]
        assert {k: v for k, v in doc.items() if k != "predictions"} == \
               {k: v for k, v in ids[task_id].items() if k != "predictions"}
        for annotation in doc["annotations"]:
            # Label Studio stored its prediction serializer's output in the annotation it seeded.
            stored = annotation["prediction"]
            if stored and annotation["parent_prediction"]:
                prediction = next(p for p in doc["predictions"] if p["id"] == annotation["parent_prediction"])
                stored = {k: v for k, v in stored.items() if k != "created_ago"}
                assert prediction == stored
                checked += 1
    assert checked >= 1


def test_documents_are_deterministic(ls_db):
    assert documents(f"sqlite:///{ls_db}", "full") == documents(f"sqlite:///{ls_db}", "full")


def test_postgres_documents_equal_label_studio_export(fixtures_dir, pg_label_studio):
    docs = {tid: json.loads(body) for tid, body in documents(pg_label_studio).items()}
    expected_ids = set()
    for slug in fixture_projects(fixtures_dir):
        exported = exported_tasks(fixtures_dir / "exports-postgres" / slug / "JSON.json")
        for task_id, task in exported.items():
            if not task["annotations"]:
                assert task_id not in docs
                continue
            expected_ids.add(task_id)
            # PostgreSQL's export order of annotations is arbitrary; syncd orders them by id.
            task["annotations"].sort(key=lambda a: a["id"])
            assert docs[task_id] == task, f"{slug}: task {task_id} differs from Label Studio's export"
    assert set(docs) == expected_ids


def test_timestamps_print_as_label_studio_does():
    assert format_timestamp("2026-11-24 23:22:19.635151") == "2026-11-24T23:22:19.635151Z"
    assert format_timestamp("2026-11-24 23:22:19") == "2026-11-24T23:22:19Z"
    aware = datetime(2026, 11, 25, 1, 22, 19, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(aware) == "2026-11-24T23:22:19.000005Z"
    assert format_timestamp(None) is None


def test_undefined_data_key_takes_the_projects_data_field(ls_db):
    # Label Studio imports a bare value as {"$undefined$": ...} and names it on export.
    with sqlite3.connect(ls_db) as conn:
        conn.execute("""UPDATE task SET data = '{"$undefined$": "hello"}' WHERE id = 39""")
        data_types = json.loads(conn.execute("SELECT data_types FROM project WHERE id = 6").fetchone()[0])
    doc = json.loads(documents(f"sqlite:///{ls_db}")[39])
    assert doc["data"] == {next(iter(data_types)): "hello"}


def test_invalid_stored_json_is_a_bad_task_naming_it(ls_db):
    with sqlite3.connect(ls_db) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE task_completion SET result = '[{broken' WHERE id = 7")
    source = LabelStudioSource(connect(f"sqlite:///{ls_db}"))
    docs = {doc.task_id: doc for doc in source.documents([7, 8])}
    source.close()
    assert isinstance(docs[7], BadTask)
    assert re.match(r"task 7 \(project 2\): task_completion.result of row 7 is not valid JSON", str(docs[7]))
    assert not isinstance(docs[8], BadTask)  # the other tasks are still fine
