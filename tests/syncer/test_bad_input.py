"""A corpus of bad rows, on copies of the fixture databases (SQLite and PostgreSQL): each fails
only the task (or the project's bundles) it belongs to, with one line naming project, task and
column, and every other task's object equals the one a clean run writes."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_DB, run_syncd
from tests.daemon_helpers import RunningSyncd, wait_for

DEEP = "[" * 1500 + "]" * 1500  # valid for SQLite's json_valid and PostgreSQL's jsonb; past Python's decoder


@dataclass
class Case:
    engines: tuple[str, ...]
    statements: list[str]  # {t0}, {t1}... are labeled tasks of project {p}, in id order
    failed: list[int]  # which of those tasks fail
    words: list[str]  # in the failing task's error line
    bundles_failed: bool = False
    changed: str = ""  # a task (t0...) whose document changes, not fails: {"key": value} it now holds


CASES = {
    "data-nested-too-deep": Case(("sqlite", "postgres"),
                                 ["UPDATE task SET data = '{{\"image\": \"x\", \"deep\": " + DEEP
                                  + "}}' WHERE id = {t0}"], [0], ["task.data", "nests deeper"]),
    # (PostgreSQL's jsonb holds 1e400 as an exact decimal, which JSON can write.)
    "number-json-cannot-hold": Case(("sqlite",),
                                    ["UPDATE task_completion SET result = '[{{\"value\": {{\"x\": 1e400}}}}]' "
                                     "WHERE task_id = {t1}"], [1], ["task_completion.result", "JSON"]),
    "nulls-where-values-are-expected": Case(("sqlite", "postgres"),
                                            ["UPDATE task_completion SET result = NULL, completed_by_id = NULL, "
                                             "lead_time = NULL WHERE task_id = {t2}",
                                             "UPDATE task SET meta = NULL, updated_by_id = NULL WHERE id = {t2}"],
                                            [], [], changed="t2"),
    "result-not-utf8": Case(("sqlite",),
                            ["UPDATE task_completion SET result = CAST(X'5B7B2274657874223A2268E9227D5D' AS TEXT) "
                             "WHERE task_id = {t3}"], [3], ["task_completion.result", "UTF-8"]),
    "data-not-utf8": Case(("sqlite",), ["UPDATE task SET data = CAST(X'7B2274657874223A2268E9227D' AS TEXT) "
                                        "WHERE id = {t4}"], [4], ["task.data", "UTF-8"]),
    # Shown with U+FFFD (the user's email in a draft): nothing fails.
    "names-not-utf8": Case(("sqlite",), ["UPDATE project SET title = CAST(X'426164E9' AS TEXT) WHERE id = {p}",
                                         "UPDATE htx_user SET email = CAST(X'61E940782E636F6D' AS TEXT) || id",
                                         "INSERT INTO tasks_annotationdraft (result, created_at, updated_at, task_id, "
                                         "user_id, was_postponed) VALUES ('[]', '2026-11-25 12:00:00', "
                                         "'2026-11-25 12:00:00', {t5}, 1, 0)"], [], [], changed="t5"),
    "label-config-not-utf8": Case(("sqlite",), ["UPDATE project SET label_config = CAST(X'3C566965773EE93C2F566965"
                                                 "773E' AS TEXT) WHERE id = {p}"], [], ["labeling config"],
                                  bundles_failed=True),
    "label-config-unparsable": Case(("sqlite", "postgres"), ["UPDATE project SET label_config = '<View><Unclosed' "
                                                             "WHERE id = {p}"], [], ["labeling config"],
                                    bundles_failed=True),
}


def labeled(db: str, engine: str) -> tuple[int, list[int]]:
    """The bounding-box project (it has the most labeled tasks) and its labeled tasks."""
    query = ("SELECT t.project_id, t.id FROM task t JOIN project p ON p.id = t.project_id WHERE p.title = "
             "'Street scenes — object detection' AND EXISTS (SELECT 1 FROM task_completion c WHERE c.task_id = t.id) "
             "ORDER BY t.id")
    rows = execute(db, engine, [query])
    return rows[0][0], [r[1] for r in rows]


def execute(db: str, engine: str, statements: list[str]) -> list[tuple]:
    if engine == "sqlite":
        with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
            conn.execute("PRAGMA ignore_check_constraints = ON")
            rows = [row for statement in statements for row in conn.execute(statement).fetchall()]
        conn.close()
        return rows
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        rows = []
        for statement in statements:
            cur = conn.execute(statement)
            rows += cur.fetchall() if cur.description else []
        return rows


@pytest.fixture
def database(request, tmp_path) -> tuple[str, str]:
    """(URL of a private copy of the fixture database, engine); the engine is the test's parameter."""
    if request.param == "sqlite":
        path = tmp_path / "label_studio.sqlite3"
        shutil.copyfile(EXAMPLE_DB, path)
        return f"sqlite:///{path}", "sqlite"
    return request.getfixturevalue("pg_label_studio"), "postgres"


def config(tmp_path: Path, db: str, name: str, **extra) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({"db": db, "target": str(tmp_path / name), "state": str(tmp_path / f"{name}.state"),
                                **extra}))
    return str(path)


def objects(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("*.json")}


# PostgreSQL's text and jsonb types hold UTF-8 only, and jsonb no number JSON cannot write: those
# cases are SQLite's.
@pytest.mark.parametrize(("name", "database"), [(name, engine) for name, case in sorted(CASES.items())
                                               for engine in case.engines], indirect=["database"])
def test_a_bad_row_fails_only_its_task(name, database, tmp_path):
    db, engine = database
    case = CASES[name]
    clean = run_syncd("resync", "--config", config(tmp_path, db, "clean"))
    assert clean.returncode == 0, clean.stderr
    project, tasks = labeled(db, engine)
    ids = {f"t{i}": task_id for i, task_id in enumerate(tasks)}
    execute(db, engine, [s.format(p=project, **ids) for s in case.statements])

    bundles = {"bundles": ["JSON"]} if case.bundles_failed else {}
    bad = run_syncd("resync", "--config", config(tmp_path, db, "bad", **bundles))
    failed = {tasks[i] for i in case.failed}
    assert bad.returncode == (1 if failed or case.bundles_failed else 0), bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    errors = [line for line in bad.stderr.splitlines() if " ERROR " in line]
    for task_id in failed:
        [line] = [e for e in errors if f"task {task_id} (project {project})" in e]
        assert all(word in line for word in case.words), line
    if case.bundles_failed:
        assert any(f"project {project}" in e and all(w in e for w in case.words) for e in errors), errors
    assert f"{len(failed) + case.bundles_failed} failed" in bad.stderr
    expected = {key: body for key, body in objects(tmp_path / "clean").items()
                if int(key.split(".")[0]) not in failed}
    got = objects(tmp_path / "bad")
    if case.changed:  # that task is written as it now is
        key = f"{ids[case.changed]}.json"
        doc = json.loads(got.pop(key))
        expected.pop(key)
        if name == "names-not-utf8":
            assert [d["user"] for d in doc["drafts"]] == ["a\ufffd@x.com1"]
        else:
            assert {a["result"] for a in doc["annotations"]} == {None} and doc["meta"] is None
    assert got == expected
    if failed:  # retried on the next run, and still reported
        again = run_syncd("resync", "--config", config(tmp_path, db, "bad"))
        assert again.returncode == 1 and f"{len(failed)} failed" in again.stderr


def test_the_daemon_stays_ready_and_syncs_the_rest(tmp_path):
    db_path = tmp_path / "label_studio.sqlite3"
    shutil.copyfile(EXAMPLE_DB, db_path)
    db = f"sqlite:///{db_path}"
    project, tasks = labeled(db, "sqlite")
    execute(db, "sqlite", [CASES["data-not-utf8"].statements[0].format(p=project, t4=tasks[4]),
                           CASES["data-nested-too-deep"].statements[0].format(p=project, t0=tasks[0])])
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, db, str(out))
    try:
        daemon.wait_ready()
        assert len(list(out.glob("*.json"))) == 38 - 2
        wait_for(lambda: daemon.metric('syncd_failures_total{reason="task"}') >= 2, 10, "the failures counted")
        assert daemon.get("/readyz")[0] == 200
    finally:
        assert daemon.stop() == 0
    logs = daemon.logs()
    assert f"task {tasks[4]} (project {project}): task.data" in logs and "Traceback" not in logs


def test_convert_from_a_database_skips_the_bad_task_and_exits_1(tmp_path):
    db_path = tmp_path / "label_studio.sqlite3"
    shutil.copyfile(EXAMPLE_DB, db_path)
    db = f"sqlite:///{db_path}"
    project, tasks = labeled(db, "sqlite")
    execute(db, "sqlite", [CASES["data-nested-too-deep"].statements[0].format(p=project, t0=tasks[0])])
    result = run_syncd("convert", db, "--project", str(project), "--format", "JSON", "--out", str(tmp_path / "o"))
    assert result.returncode == 1, result.stderr
    [warning] = result.stderr.splitlines()
    assert warning.startswith(f"warning: task {tasks[0]} skipped") and "task.data" in warning
    converted = json.loads((tmp_path / "o" / "result.json").read_text())
    assert sorted(t["id"] for t in converted) == tasks[1:]
