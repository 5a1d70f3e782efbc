"""``syncd run`` as a real subprocess, against a Label Studio SQLite database changed as Label Studio does."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import time

from tests.bigdb import multiply
from tests.conftest import EXAMPLE_DB, run_syncd
from tests.daemon_helpers import (
    RunningSyncd,
    add_annotation,
    delete_annotation,
    read_json,
    update_annotation,
    wait_for,
)

# Deadline for a change to show up. The goal (1 s p50, 2 s p99) is measured by bench/bench_latency.py;
# a test only checks that changes arrive, with room for a loaded CI machine.
ARRIVES = 10


def test_annotations_created_changed_and_deleted_reach_the_target(ls_db, tmp_path):
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(out), {"delete": True})
    try:
        daemon.wait_ready()
        assert len(list(out.glob("*.json"))) == 38
        conn = sqlite3.connect(ls_db)

        # created: task 11 had no annotation, so no object
        assert not (out / "11.json").exists()
        new_id = add_annotation(conn, 11, [{"id": "a1", "type": "choices", "value": {"choices": ["x"]}}])
        doc = wait_for(lambda: read_json(out / "11.json"), ARRIVES, "11.json to appear")
        assert [a["id"] for a in doc["annotations"]] == [new_id]

        # changed
        update_annotation(conn, new_id, [{"id": "a1", "type": "choices", "value": {"choices": ["y"]}}],
                          "2026-11-25 12:05:00.000000")
        wait_for(lambda: (read_json(out / "11.json") or {}).get("annotations", [{}])[0].get("result", [{}])[0]
                 .get("value") == {"choices": ["y"]}, ARRIVES, "11.json to change")

        # one of two annotations deleted: rewritten, not deleted
        delete_annotation(conn, 9, "2026-11-25 12:06:00.000000")
        wait_for(lambda: [a["id"] for a in (read_json(out / "8.json") or {}).get("annotations", [])] == [8],
                 ARRIVES, "8.json to lose annotation 9")

        # the last annotation deleted: the object goes (delete: true)
        delete_annotation(conn, new_id, "2026-11-25 12:07:00.000000")
        wait_for(lambda: not (out / "11.json").exists(), ARRIVES, "11.json to be deleted")

        assert daemon.metric("syncd_ready") == 1
        assert daemon.metric("syncd_objects_deleted_total") >= 1
        assert daemon.get("/healthz")[0] == 200
        conn.close()
    finally:
        assert daemon.stop() == 0, daemon.logs()


def test_what_timestamps_miss_is_caught_by_reconciliation(ls_db, tmp_path):
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(out), {"delete": True, "reconcile_interval": 1})
    try:
        daemon.wait_ready()
        conn = sqlite3.connect(ls_db)
        # Label Studio moves the ground-truth flag with a bulk UPDATE that leaves updated_at alone.
        with conn:
            conn.execute("UPDATE task_completion SET ground_truth = 1 WHERE id = 14")
        wait_for(lambda: [a["ground_truth"] for a in read_json(out / "12.json")["annotations"]] == [False, True],
                 ARRIVES, "12.json to show the new ground truth")
        # A task deleted with SQL leaves no row and no timestamp behind.
        with conn:
            conn.execute("DELETE FROM task_completion WHERE task_id = 45")
            conn.execute("DELETE FROM task WHERE id = 45")
        wait_for(lambda: not (out / "45.json").exists(), ARRIVES, "45.json to be deleted")
        # A draft never touches the task row.
        with conn:
            conn.execute("INSERT INTO tasks_annotationdraft (result, created_at, updated_at, task_id, user_id, "
                         "was_postponed, lead_time) VALUES ('[]', ?, ?, 44, 2, 0, 1.5)",
                         ("2026-11-25 12:00:00.000000", "2026-11-25 12:00:00.000000"))
        draft = wait_for(lambda: read_json(out / "44.json")["drafts"], ARRIVES, "the draft in 44.json")
        assert draft[0]["user"] == "anna.kowalska@example.com" and draft[0]["task"] == 44
        conn.close()
    finally:
        assert daemon.stop() == 0, daemon.logs()


def test_database_file_replaced_is_followed(ls_db, tmp_path):
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(out))
    try:
        daemon.wait_ready()
        replacement = tmp_path / "replacement.sqlite3"
        shutil.copyfile(ls_db, replacement)
        conn = sqlite3.connect(replacement)
        add_annotation(conn, 13, [])
        conn.close()
        replacement.replace(ls_db)  # e.g. a restore from backup
        wait_for(lambda: (out / "13.json").exists(), ARRIVES + 10, "13.json from the replaced database")
    finally:
        assert daemon.stop() == 0, daemon.logs()


def test_database_outage_is_retried_without_exiting(ls_db, tmp_path):
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(out))
    try:
        daemon.wait_ready()
        moved = tmp_path / "away.sqlite3"
        ls_db.rename(moved)
        wait_for(lambda: daemon.get("/readyz")[0] == 503, ARRIVES, "/readyz to report the outage")
        assert daemon.proc.poll() is None
        wait_for(lambda: daemon.metric("syncd_seconds_behind") > 0, ARRIVES, "the lag metric to grow")
        conn = sqlite3.connect(moved)
        add_annotation(conn, 14, [])
        conn.close()
        moved.rename(ls_db)
        wait_for(lambda: (out / "14.json").exists(), ARRIVES + 10, "14.json after the database came back")
        wait_for(lambda: daemon.get("/readyz")[0] == 200, ARRIVES, "/readyz to recover")
        assert "recovered" in daemon.logs()
    finally:
        assert daemon.stop() == 0, daemon.logs()


def test_sigterm_during_uploads_loses_nothing(tmp_path):
    db = tmp_path / "big.sqlite3"
    labeled = multiply(EXAMPLE_DB, db, copies=300)
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"sqlite:///{db}", str(out))
    # the signal as soon as the first objects land; the pass writes them 2,000 at a time and
    # finishes the batches in flight at the signal, so thousands must be left after those
    wait_for(lambda: any(out.glob("*.json")), 60, "the initial sync to get going")
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0, daemon.logs()
    assert time.monotonic() - started < 10
    present = len(list(out.glob("*.json")))
    assert present < labeled, "SIGTERM came too late to test anything"
    # Every write syncd finished before exiting was recorded: a resync writes exactly the rest.
    after = run_syncd("resync", "--config", str(daemon.config))
    assert after.returncode == 0, after.stderr
    assert f"{labeled - present} written" in after.stderr, (present, after.stdout)


def test_systemd_notify_protocol(ls_db, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(tmp_path / "out"),
                          env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    messages: list[str] = []
    try:
        def received(word: str) -> bool:
            while not any(word in m for m in messages):
                messages.append(sock.recv(4096).decode())
            return True
        received("READY=1")
        received("WATCHDOG=1")
        assert daemon.get("/readyz")[0] == 200
        daemon.proc.send_signal(signal.SIGTERM)
        received("STOPPING=1")
        assert daemon.proc.wait(timeout=15) == 0, daemon.logs()
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        sock.close()


def test_sighup_reloads_the_config(ls_db, tmp_path):
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(out))
    try:
        daemon.wait_ready()
        config = json.loads(daemon.config.read_text())
        config["target"] = str(tmp_path / "out2")
        config["state"] = str(tmp_path / "state2.sqlite3")
        daemon.config.write_text(json.dumps(config))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(list((tmp_path / "out2").glob("*.json"))) == 38, ARRIVES, "a sync into the new target")
        daemon.config.write_text("target: [broken")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "new configuration rejected" in daemon.logs(), ARRIVES, "the bad config to be rejected")
        assert daemon.proc.poll() is None
    finally:
        assert daemon.stop() == 0, daemon.logs()


def test_directory_source_follows_label_studio_local_storage(fixtures_dir, tmp_path):
    source = tmp_path / "storage"
    shutil.copytree(fixtures_dir / "storage-export" / "image-bbox" / "after-sync", source)
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"dir://{source}", str(out), {"delete": True, "reconcile_interval": 60})
    try:
        daemon.wait_ready()
        assert sorted(p.name for p in out.glob("*.json")) == sorted(p.name for p in source.glob("*.json"))
        # A file being written is not uploaded half-way: a truncated copy of task 7 as task 1007 ...
        task = json.loads((source / "7.json").read_text())
        task["id"] = 1007
        body = json.dumps(task)
        with open(source / "1007.json", "w") as partial:
            partial.write(body[: len(body) // 2])
            partial.flush()
            time.sleep(2.5)  # several polls see the half file
            assert not (out / "1007.json").exists()
            partial.write(body[len(body) // 2:])
        doc = wait_for(lambda: read_json(out / "1007.json"), ARRIVES, "1007.json once complete")
        assert doc["id"] == 1007 and doc["annotations"][0]["completed_by"] == 1
        (source / "8.json").unlink()
        wait_for(lambda: not (out / "8.json").exists(), ARRIVES, "8.json to be deleted")
    finally:
        assert daemon.stop() == 0, daemon.logs()


def test_resync_from_a_directory(fixtures_dir, tmp_path):
    out = tmp_path / "out"
    source = fixtures_dir / "storage-export" / "text-ner" / "after-sync"
    result = run_syncd("resync", "--db", f"dir://{source}", "--target", str(out), "--state", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    exported = {t["id"]: t for t in json.loads((fixtures_dir / "exports" / "text-ner" / "JSON.json").read_text())}
    for path in out.glob("*.json"):
        doc = json.loads(path.read_bytes())
        expected = exported[doc["id"]]
        # Label Studio's storage files hold draft ids where its export has the drafts
        assert {k: v for k, v in doc.items() if k != "drafts"} == {k: v for k, v in expected.items() if k != "drafts"}
    assert sorted(p.name for p in out.glob("*.json")) == sorted(p.name for p in source.glob("*.json"))


def test_an_orphan_is_reported_once_as_resync_reports_it(ls_db, tmp_path):
    """Without delete: true, the object of a task that lost its last annotation stays, and the
    daemon says so, once (a reconcile every second finds it again and again)."""
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(out), {"reconcile_interval": 1})
    try:
        daemon.wait_ready()
        conn = sqlite3.connect(ls_db)
        new_id = add_annotation(conn, 11, [])
        wait_for(lambda: read_json(out / "11.json"), ARRIVES, "11.json to appear")
        delete_annotation(conn, new_id, "2026-11-25 12:07:00.000000")
        conn.close()
        wait_for(lambda: "orphaned: 11.json" in daemon.logs(), ARRIVES, "the orphan to be reported")
        time.sleep(2.5)  # reconciles that find it again
        assert (out / "11.json").exists()
    finally:
        assert daemon.stop() == 0, daemon.logs()
    assert daemon.logs().count("orphaned: 11.json") == 1


def test_verbose_json_logs_name_each_object_and_summaries_are_json(ls_db, tmp_path):
    """``syncd run -v`` with JSON logs: a line per object written (key, task, project, bytes),
    like rclone -v, and every line JSON, the batch summaries included."""
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(out), {"log_format": "json"}, args=("-v",))
    try:
        daemon.wait_ready()
        conn = sqlite3.connect(ls_db)
        project = conn.execute("SELECT project_id FROM task WHERE id = 11").fetchone()[0]
        add_annotation(conn, 11, [])
        conn.close()
        wait_for(lambda: read_json(out / "11.json"), ARRIVES, "11.json to appear")
        wait_for(lambda: '"synced: 1 written' in daemon.logs(), ARRIVES, "the batch's summary")
    finally:
        assert daemon.stop() == 0, daemon.logs()
    entries = [json.loads(line) for line in daemon.logs().splitlines() if line.strip()]  # all JSON
    [wrote] = [e for e in entries if e.get("action") == "put" and e.get("key") == "11.json"]
    assert (wrote["task_id"], wrote["project_id"], wrote["bytes"]) == (11, project, (out / "11.json").stat().st_size)
    assert wrote["message"] == f"wrote 11.json (task 11, project {project}, {wrote['bytes']} bytes)"
    [summary] = [e for e in entries if e["message"].startswith("synced: 1 written")]
    assert (summary["written"], summary["deleted"], summary["failed"]) == (1, 0, 0)
