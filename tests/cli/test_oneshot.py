"""``syncd resync`` as a cron job: metrics file, JSON logs, quiet output; ``syncd config``."""

from __future__ import annotations

import json
import sqlite3

import yaml

from syncd import config
from tests.conftest import run_syncd


def test_metrics_file_for_the_textfile_collector(ls_db, tmp_path):
    prom = tmp_path / "syncd.prom"
    result = run_syncd("resync", "--db", f"sqlite:///{ls_db}", "--target", str(tmp_path / "out"),
                       "--state", str(tmp_path / "s.sqlite3"), "--metrics-file", str(prom))
    assert result.returncode == 0, result.stderr
    values = {line.split()[0]: float(line.split()[1]) for line in prom.read_text().splitlines()
              if line and not line.startswith("#")}
    assert values["syncd_last_run_success"] == 1
    assert values["syncd_objects_written_total"] == 38
    assert values["syncd_tasks_tracked"] == 38
    assert not any(name.startswith("syncd_failures_total") for name in values)
    assert "syncd_ready" not in values  # a daemon's gauge: a one-shot run has no such state
    assert not list(tmp_path.glob("*.prom.*")), "temporary file left behind"

    failed = run_syncd("resync", "--db", f"sqlite:///{tmp_path}/missing.sqlite3", "--target", str(tmp_path / "out"),
                       "--state", str(tmp_path / "s.sqlite3"), "--metrics-file", str(prom))
    assert failed.returncode == 2
    text = prom.read_text()
    assert "syncd_last_run_success 0.0" in text and 'syncd_failures_total{reason="database"} 1.0' in text


def test_json_logs_and_no_terminal_noise(ls_db, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "8.json").mkdir()  # one write fails, so there is an error to log
    result = run_syncd("resync", "--log-format", "json", "--db", f"sqlite:///{ls_db}",
                       "--target", str(tmp_path / "out"), "--state", str(tmp_path / "s.sqlite3"))
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines and all({"time", "level", "message"} <= set(entry) for entry in lines)
    assert any(entry["level"] == "error" and "8.json" in entry["message"] for entry in lines)
    assert "\r" not in result.stderr + result.stdout
    # The summary is a JSON line too, with its counts as fields; stdout stays for data.
    [summary] = [entry for entry in lines if entry["message"].startswith("syncd resync:")]
    assert summary["failed"] == 1 and summary["written"] == 37 and result.stdout == ""


def test_verbose_names_each_object_written_deleted_or_orphaned(ls_db, tmp_path):
    """-v: one line per object, like rclone -v; JSON lines carry key, task, project and bytes."""
    out, state = tmp_path / "out", str(tmp_path / "s.sqlite3")
    quiet = run_syncd("resync", "--db", f"sqlite:///{ls_db}", "--target", str(out), "--state", state)
    assert quiet.returncode == 0 and "wrote " not in quiet.stderr
    written = {p.name: p.stat().st_size for p in out.glob("*.json")}
    (out / "7.json").unlink()  # written again
    conn = sqlite3.connect(ls_db)
    conn.execute("DELETE FROM task_completion WHERE task_id = 12")  # orphaned
    conn.commit()
    conn.close()
    result = run_syncd("resync", "-v", "--log-format", "json", "--db", f"sqlite:///{ls_db}", "--target", str(out),
                       "--state", state)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    puts = [e for e in entries if e.get("action") == "put"]
    orphans = [e for e in entries if e.get("action") == "orphan"]
    assert [(e["key"], e["task_id"], e["bytes"]) for e in puts] == [("7.json", 7, written["7.json"])]
    assert puts[0]["message"].startswith("wrote 7.json (task 7, project ")
    assert [(e["key"], e["task_id"]) for e in orphans] == [("12.json", 12)]
    config_file = tmp_path / "delete.yaml"
    config_file.write_text("delete: true\n")
    deleting = run_syncd("resync", "-v", "--config", str(config_file), "--db", f"sqlite:///{ls_db}", "--target",
                         str(out), "--state", state)
    assert deleting.returncode == 0, deleting.stderr
    assert "deleted 12.json (task 12, project " in deleting.stderr
    assert not (out / "12.json").exists()


def test_print_defaults_is_the_default_config(tmp_path):
    result = run_syncd("config", "--print-defaults")
    assert result.returncode == 0
    printed = yaml.safe_load(result.stdout)
    assert list(printed) == config.KEYS
    path = tmp_path / "defaults.yaml"
    path.write_text(result.stdout)
    loaded = config.load(str(path))
    assert {k: getattr(loaded, k) for k in config.KEYS} == {k: getattr(config.Config(), k) for k in config.KEYS}
