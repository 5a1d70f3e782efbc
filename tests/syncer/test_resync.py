"""``syncd resync`` end to end: the real command line, a real Label Studio database, a directory."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import exported_tasks, fixture_projects, run_syncd


@pytest.fixture
def exported(fixtures_dir) -> dict[int, dict]:
    tasks: dict[int, dict] = {}
    for slug in fixture_projects(fixtures_dir):
        tasks.update(exported_tasks(fixtures_dir / "exports" / slug / "JSON.annotated-only.json"))
    return tasks


def resync(db: Path, out: Path, state: Path, *extra: str, config: str | None = None):
    args = ["resync", "--db", f"sqlite:///{db}", "--target", str(out), "--state", str(state),
            "--config", config or _write_config(state.parent / "syncd.yaml", {})]
    return run_syncd(*args, *extra)


def _write_config(path: Path, values: dict) -> str:
    path.write_text(json.dumps(values))  # JSON is YAML
    return str(path)


def objects(out: Path) -> dict[str, dict]:
    """The documents in a target directory (not syncd's own files: its marker, its temporary files)."""
    return {str(p.relative_to(out)): json.loads(p.read_bytes()) for p in out.rglob("*.json")
            if not {".syncd-tmp", ".syncd"} & set(p.parts)}


def delete_annotations(db: Path, *annotation_ids: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany("DELETE FROM task_completion WHERE id = ?", [(i,) for i in annotation_ids])


def test_first_resync_writes_every_labeled_task_then_nothing(ls_db, tmp_path, exported):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    config = _write_config(tmp_path / "c.yaml", {"predictions": "ids"})
    first = resync(ls_db, out, state, config=config)
    assert first.returncode == 0, first.stderr
    assert f"{len(exported)} written" in first.stderr
    assert objects(out) == {f"{tid}.json": task for tid, task in exported.items()}
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}

    second = resync(ls_db, out, state, config=config)
    assert second.returncode == 0, second.stderr
    assert "nothing to write" in second.stderr and f"({len(exported)} unchanged)" in second.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.json")} == mtimes


def test_dry_run_writes_nothing_and_prints_the_plan(ls_db, tmp_path, exported):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    result = resync(ls_db, out, state, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert not out.exists() or not any(out.iterdir())
    plan = [line for line in result.stdout.splitlines() if line.startswith("PUT")]
    assert sorted(line.split()[1] for line in plan) == sorted(f"{t}.json" for t in exported)
    assert f"{len(exported)} would write" in result.stderr
    # and a real run afterwards still writes everything (the dry run recorded nothing)
    assert f"{len(exported)} written" in resync(ls_db, out, state).stderr


def test_deleted_annotation_is_orphaned_by_default_and_deleted_when_asked(ls_db, tmp_path):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    assert resync(ls_db, out, state).returncode == 0
    delete_annotations(ls_db, 7)  # task 7's only annotation

    kept = resync(ls_db, out, state)
    assert kept.returncode == 0, kept.stderr
    assert "1 orphaned" in kept.stderr and (out / "7.json").exists()

    config = _write_config(tmp_path / "delete.yaml", {"delete": True})
    removed = resync(ls_db, out, state, config=config)
    assert removed.returncode == 0, removed.stderr
    assert "1 deleted" in removed.stderr and "0 orphaned" in removed.stderr
    assert not (out / "7.json").exists()
    again = resync(ls_db, out, state, config=config)
    assert "nothing to write" in again.stderr and "0 deleted" in again.stderr


def test_task_keeping_other_annotations_is_rewritten_not_deleted(ls_db, tmp_path, exported):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    config = _write_config(tmp_path / "c.yaml", {"delete": True, "predictions": "ids"})
    assert resync(ls_db, out, state, config=config).returncode == 0
    delete_annotations(ls_db, 9)  # task 8 keeps annotation 8
    result = resync(ls_db, out, state, config=config)
    assert result.returncode == 0, result.stderr
    assert "1 written" in result.stderr and "0 deleted" in result.stderr
    expected = dict(exported[8], annotations=[a for a in exported[8]["annotations"] if a["id"] != 9])
    assert json.loads((out / "8.json").read_bytes()) == expected


def test_reused_task_id_in_another_project_moves_the_object(ls_db, tmp_path):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    config = _write_config(tmp_path / "c.yaml", {"delete": True, "key_template": "{project_id}/{task_id}.json"})
    assert resync(ls_db, out, state, config=config).returncode == 0
    assert (out / "6" / "45.json").exists()
    # Label Studio on SQLite hands a deleted task's id to the next import, even in another project.
    with sqlite3.connect(ls_db) as conn:
        conn.execute("DELETE FROM task_completion WHERE task_id = 45")
        conn.execute("UPDATE task SET project_id = 2, data = '{\"image\": \"/data/upload/2/new.png\"}' WHERE id = 45")
        conn.execute("INSERT INTO task_completion (result, was_cancelled, created_at, updated_at, task_id, "
                     "lead_time, result_count, completed_by_id, ground_truth, project_id, updated_by_id, "
                     "unique_id, bulk_created) VALUES ('[]', 0, '2026-11-25 10:00:00.000001', "
                     "'2026-11-25 10:00:00.000001', 45, 1.0, 0, 1, 0, 2, 1, "
                     "'0123456789abcdef0123456789abcdef', 0)")
    result = resync(ls_db, out, state, config=config)
    assert result.returncode == 0, result.stderr
    assert "1 written" in result.stderr and "1 deleted" in result.stderr
    assert not (out / "6" / "45.json").exists()
    moved = json.loads((out / "2" / "45.json").read_bytes())
    assert moved["project"] == 2 and moved["data"] == {"image": "/data/upload/2/new.png"}
    assert moved["annotations"][0]["unique_id"] == "01234567-89ab-cdef-0123-456789abcdef"


def test_max_delete_holds_back_a_mass_deletion(ls_db, tmp_path):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    config = _write_config(tmp_path / "c.yaml", {"delete": True, "max_delete": 2})
    assert resync(ls_db, out, state, config=config).returncode == 0
    delete_annotations(ls_db, 7, 10, 11)  # three tasks lose their only annotation
    result = resync(ls_db, out, state, config=config)
    assert result.returncode == 1
    assert "max_delete is 2" in result.stderr
    assert all((out / f"{t}.json").exists() for t in (7, 9, 10))


def test_a_run_with_write_errors_deletes_nothing(ls_db, tmp_path):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    config = _write_config(tmp_path / "c.yaml", {"delete": True})
    assert resync(ls_db, out, state, config=config).returncode == 0
    delete_annotations(ls_db, 7)
    with sqlite3.connect(ls_db) as conn:  # change task 8 so it must be rewritten ...
        conn.execute("UPDATE task SET updated_at = '2026-11-25 10:00:00.000000' WHERE id = 8")
    (out / "8.json").unlink()
    (out / "8.json").mkdir()  # ... and make that write fail
    result = resync(ls_db, out, state, config=config)
    assert result.returncode == 1
    assert "8.json" in result.stderr and "failed" in result.stderr
    assert "held back" in result.stderr
    assert (out / "7.json").exists()
    assert "Traceback" not in result.stderr


def test_project_filter(ls_db, tmp_path, fixtures_dir):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    result = resync(ls_db, out, state, "--project", "2", "--project", "6")
    assert result.returncode == 0, result.stderr
    expected = set()
    for slug in ("image-bbox", "text-ner"):
        expected |= set(exported_tasks(fixtures_dir / "exports" / slug / "JSON.annotated-only.json"))
    assert set(objects(out)) == {f"{t}.json" for t in expected}


def test_config_file_with_env_expansion(ls_db, tmp_path):
    config = tmp_path / "syncd.yaml"
    config.write_text("db: sqlite:///${LS_DB}\ntarget: ${OUT_DIR}/labels\nstate: ${OUT_DIR}/state.sqlite3\n"
                      "key_template: '{project_slug}/{task_id}.json'\n")
    result = run_syncd("resync", "--config", str(config), env={"LS_DB": str(ls_db), "OUT_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "labels" / "street-scenes-object-detection" / "7.json").exists()


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("values, expected", [
    ({"tragets": "x"}, "unknown key 'tragets'; did you mean 'target'?"),
    ({"transfers": "many"}, "transfers: must be a whole number from 1 to 256, got 'many'"),
    ({"build_workers": -1}, "build_workers: must be auto or a whole number from 0 to 64, got -1"),
    ({"delete": "maybe"}, "delete: must be true or false, got 'maybe'"),
    ({"predictions": "some"}, "predictions: must be 'full'"),
    ({"key_template": "../{task_id}.json"}, "key_template: '../{task_id}.json' gives unsafe keys"),
    ({"key_template": "{id}.json"}, "unknown field {id}"),
    ({"key_template": "{project_id}.json"}, "must contain {task_id}"),
    ({"state": "${SYNCD_TEST_UNSET_VAR}"}, "state: environment variable SYNCD_TEST_UNSET_VAR is not set"),
])
def test_config_errors_name_the_key(ls_db, tmp_path, values, expected):
    config = _write_config(tmp_path / "bad.yaml", values)
    result = run_syncd("resync", "--db", f"sqlite:///{ls_db}", "--target", str(tmp_path / "o"), "--config", config)
    assert result.returncode == 2
    assert expected in one_error_line(result)


def test_yaml_syntax_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("target: [unclosed\n")
    result = run_syncd("resync", "--config", str(config))
    assert result.returncode == 2
    assert "is not valid YAML at line" in one_error_line(result)


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, ls_db):
    not_ls = tmp_path / "other.sqlite3"
    with sqlite3.connect(not_ls) as conn:
        conn.execute("CREATE TABLE notes (id integer)")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["--db", f"sqlite:///{tmp_path}/missing.sqlite3", "--target", str(tmp_path / "o")], "does not exist"),
        (["--db", f"sqlite:///{not_ls}", "--target", str(tmp_path / "o")], "is not a Label Studio database"),
        (["--db", f"sqlite:///{ls_db}", "--target", "ftp://host/dir"], "unknown URL scheme ftp://"),
        (["--db", "mysql://x/y", "--target", str(tmp_path / "o")], "unknown database URL scheme"),
        (["--db", f"sqlite:///{ls_db}", "--target", str(a_file / "sub")], "cannot be created"),
        (["--db", f"sqlite:///{ls_db}"], "no target"),
        (["--config", str(tmp_path / "nope.yaml"), "--target", str(tmp_path / "o")], "config file"),
    ]
    for args, expected in cases:
        result = run_syncd("resync", "--state", str(tmp_path / "s.sqlite3"), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in one_error_line(result), args


def test_invalid_task_json_fails_that_task_only(ls_db, tmp_path, exported):
    with sqlite3.connect(ls_db) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE task SET data = '{not json' WHERE id = 12")
    out = tmp_path / "out"
    result = resync(ls_db, out, tmp_path / "s.sqlite3")
    assert result.returncode == 1
    assert "task 12 (project 2): task.data of row 12 is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert set(objects(out)) == {f"{t}.json" for t in exported if t != 12}
    assert f"{len(exported) - 1} written" in result.stderr and "1 failed" in result.stderr


def test_database_is_never_written(ls_db, tmp_path):
    before = ls_db.read_bytes()
    os.chmod(ls_db, 0o444)
    result = resync(ls_db, tmp_path / "out", tmp_path / "s.sqlite3")
    assert result.returncode == 0, result.stderr
    assert ls_db.read_bytes() == before
    assert not Path(f"{ls_db}-wal").exists() and not Path(f"{ls_db}-journal").exists()


def test_verify_remote_rebuilds_a_lost_state_from_the_target(ls_db, tmp_path):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    assert resync(ls_db, out, state).returncode == 0
    state.unlink()
    (out / "7.json").write_text('{"tampered": true}')  # someone changed one object
    (out / "notes.txt").write_text("not ours")  # and left a file of their own
    result = resync(ls_db, out, state, "--verify-remote")
    assert result.returncode == 0, result.stderr
    assert "1 written" in result.stderr and "0 orphaned" in result.stderr
    assert json.loads((out / "7.json").read_bytes())["id"] == 7
    assert (out / "notes.txt").read_text() == "not ours"
    assert "nothing to write" in resync(ls_db, out, state).stderr


def test_check_reports_each_part(ls_db, tmp_path):
    good = run_syncd("check", "--db", f"sqlite:///{ls_db}", "--target", str(tmp_path / "out"),
                     "--state", str(tmp_path / "s.sqlite3"))
    assert good.returncode == 0, good.stdout + good.stderr
    assert [line.split()[0] for line in good.stdout.splitlines()] == ["ok"] * 4
    assert "38 labeled tasks" in good.stdout
    a_file = tmp_path / "file"
    a_file.write_text("")
    bad = run_syncd("check", "--db", f"sqlite:///{tmp_path}/nope.sqlite3", "--target", str(a_file / "x"),
                    "--state", str(tmp_path / "s.sqlite3"))
    assert bad.returncode == 1
    fails = [line for line in bad.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 2 and "does not exist" in fails[0] and "cannot be created" in fails[1]


def test_a_key_a_gone_task_held_and_a_later_task_now_renders_is_kept(ls_db, tmp_path):
    """Keys are compared with the checkpoint task by task, in id order: an entry of a task no
    longer labeled is found gone before a later task writes the same key (a template that can
    render one key for two tasks), and that key must then stay, holding the later task."""
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    config = _write_config(tmp_path / "c.yaml", {"delete": True, "key_template": "{project_id}{task_id}.json"})
    with sqlite3.connect(ls_db) as conn:  # project 14, a copy of project 1, holds task 4: key 144.json
        columns = ", ".join(f'"{row[1]}"' for row in conn.execute("PRAGMA table_info(project)") if row[1] != "id")
        conn.execute(f"INSERT INTO project (id, {columns}) SELECT 14, {columns} FROM project WHERE id = 1")
        conn.execute("UPDATE task SET project_id = 14 WHERE id = 4")
    assert resync(ls_db, out, state, config=config).returncode == 0
    assert json.loads((out / "144.json").read_bytes())["id"] == 4
    with sqlite3.connect(ls_db) as conn:  # task 4 loses its annotations; task 44 moves to project 1
        conn.execute("DELETE FROM task_completion WHERE task_id = 4")
        old_key = f"{conn.execute('SELECT project_id FROM task WHERE id = 44').fetchone()[0]}44.json"
        conn.execute("UPDATE task SET project_id = 1 WHERE id = 44")
    result = resync(ls_db, out, state, config=config)
    assert result.returncode == 0, result.stderr
    assert "1 written" in result.stderr and "1 deleted" in result.stderr, result.stderr
    assert json.loads((out / "144.json").read_bytes())["id"] == 44
    assert not (out / old_key).exists()
    again = resync(ls_db, out, state, config=config)
    assert "nothing to write" in again.stderr and "0 deleted" in again.stderr, again.stderr
