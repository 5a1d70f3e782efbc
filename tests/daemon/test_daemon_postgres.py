"""``syncd run`` against a real PostgreSQL, including a server restart mid-run."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import run_syncd, skip_or_fail
from tests.daemon_helpers import RunningSyncd, read_json, wait_for

ARRIVES = 15


def pg_add_annotation(url: str, task_id: int) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        with conn.transaction():
            annotation_id = conn.execute(
                "INSERT INTO task_completion (result, was_cancelled, created_at, updated_at, task_id, lead_time, "
                "result_count, completed_by_id, ground_truth, project_id, updated_by_id, unique_id, bulk_created) "
                "SELECT '[]'::jsonb, false, now(), now(), id, 2.0, 0, 1, false, project_id, 1, gen_random_uuid(), "
                "false FROM task WHERE id = %s RETURNING id", (task_id,)).fetchone()[0]
        with conn.transaction():
            conn.execute("UPDATE task SET updated_at = now(), total_annotations = total_annotations + 1 "
                         "WHERE id = %s", (task_id,))
    return annotation_id


def pg_delete_annotations(url: str, task_id: int) -> None:
    import psycopg

    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("DELETE FROM task_completion WHERE task_id = %s", (task_id,))
        conn.execute("UPDATE task SET updated_at = now(), total_annotations = 0 WHERE id = %s", (task_id,))


def restart_postgres() -> None:
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        skip_or_fail("pg_ctlcluster is not available to restart PostgreSQL")
    clusters = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True).stdout.split()
    if len(clusters) < 2:
        skip_or_fail("no local PostgreSQL cluster to restart")
    result = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", clusters[0], clusters[1], "restart"],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"could not restart PostgreSQL: {result.stderr}")


def test_postgres_changes_and_a_server_restart(pg_label_studio, tmp_path):
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, pg_label_studio, str(out), {"delete": True})
    try:
        daemon.wait_ready()
        assert len(list(out.glob("*.json"))) == 38

        new_id = pg_add_annotation(pg_label_studio, 11)
        doc = wait_for(lambda: read_json(out / "11.json"), ARRIVES, "11.json to appear")
        assert [a["id"] for a in doc["annotations"]] == [new_id]

        pg_delete_annotations(pg_label_studio, 11)
        wait_for(lambda: not (out / "11.json").exists(), ARRIVES, "11.json to be deleted")

        restart_postgres()
        pg_add_annotation(pg_label_studio, 13)
        wait_for(lambda: (out / "13.json").exists(), ARRIVES + 60, "13.json after the PostgreSQL restart")
        assert daemon.proc.poll() is None
        wait_for(lambda: daemon.get("/readyz")[0] == 200, ARRIVES, "/readyz after the restart")
        assert "retrying with backoff" in daemon.logs() and "recovered" in daemon.logs()
    finally:
        assert daemon.stop() == 0, daemon.logs()


def test_notify_triggers_wake_the_daemon_and_can_be_removed(pg_label_studio, tmp_path):
    import psycopg

    installed = run_syncd("install-triggers", "--db", pg_label_studio)
    assert installed.returncode == 0, installed.stderr
    out = tmp_path / "out"
    # Polling every 60 s: only a notification can bring the change in time.
    daemon = RunningSyncd(tmp_path, pg_label_studio, str(out), {"poll_interval": 60, "reconcile_interval": 600})
    try:
        daemon.wait_ready()
        assert "LISTEN/NOTIFY" in daemon.logs()
        pg_add_annotation(pg_label_studio, 14)
        wait_for(lambda: (out / "14.json").exists(), ARRIVES, "14.json, woken by NOTIFY")
    finally:
        assert daemon.stop() == 0, daemon.logs()
    removed = run_syncd("remove-triggers", "--db", pg_label_studio)
    assert removed.returncode == 0, removed.stderr
    with psycopg.connect(pg_label_studio) as conn:
        count = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'syncd_notify_%'").fetchone()[0]
        functions = conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'syncd_notify_change'").fetchone()[0]
    assert count == 0 and functions == 0


def test_triggers_need_postgres(ls_db):
    result = run_syncd("install-triggers", "--db", f"sqlite:///{ls_db}")
    assert result.returncode == 2
    assert "PostgreSQL only" in result.stderr and "Traceback" not in result.stderr
