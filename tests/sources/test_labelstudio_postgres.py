"""Reading Label Studio's database: PostgreSQL end to end, and read-only sessions on both engines."""

from __future__ import annotations

import json

import pytest

from syncd.sources.labelstudio.database import connect
from tests.conftest import exported_tasks, fixture_projects, run_syncd


def test_resync_from_postgres_equals_label_studio_export(pg_label_studio, fixtures_dir, tmp_path):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    config = tmp_path / "c.yaml"
    config.write_text("predictions: ids\n")
    args = ["resync", "--config", str(config), "--db", pg_label_studio, "--target", str(out), "--state", str(state)]
    first = run_syncd(*args)
    assert first.returncode == 0, first.stderr
    expected = {}
    for slug in fixture_projects(fixtures_dir):
        for task_id, task in exported_tasks(fixtures_dir / "exports-postgres" / slug / "JSON.json").items():
            if task["annotations"]:
                task["annotations"].sort(key=lambda a: a["id"])
                expected[f"{task_id}.json"] = task
    written = {p.name: json.loads(p.read_bytes()) for p in out.glob("*.json")}
    assert written == expected
    second = run_syncd(*args)
    assert second.returncode == 0 and "nothing to write" in second.stderr


def test_postgres_session_is_read_only(pg_label_studio):
    import psycopg

    db = connect(pg_label_studio)
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            db.query("DELETE FROM task_completion WHERE id = 1")
    finally:
        db.close()


def test_sqlite_connection_is_read_only(ls_db):
    import sqlite3

    db = connect(f"sqlite:///{ls_db}")
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            db.query("DELETE FROM task_completion WHERE id = 1")
    finally:
        db.close()
