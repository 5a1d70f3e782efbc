"""Running a real ``syncd run`` subprocess in tests, and changing Label Studio's rows the way
Label Studio does (in transactions, bumping the task row after the annotation row)."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.conftest import REPO, child_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class RunningSyncd:
    def __init__(self, tmp: Path, db_url: str, target: str, extra_config: dict | None = None,
                 env: dict | None = None, args: tuple[str, ...] = ()):
        self.port = free_port()
        self.log = tmp / f"syncd-run-{self.port}.log"
        config = {"db": db_url, "target": target, "state": str(tmp / "state.sqlite3"),
                  "listen": f"127.0.0.1:{self.port}", "poll_interval": 0.5, "reconcile_interval": 2,
                  "predictions": "ids", **(extra_config or {})}
        self.config = tmp / "syncd-run.yaml"
        self.config.write_text(json.dumps(config))
        self.proc = subprocess.Popen([sys.executable, "-m", "syncd", "run", "--config", str(self.config), *args],
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),  # noqa: SIM115
                                     env=child_env(env))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(lambda: self.proc.poll() is not None or self.get("/readyz")[0] == 200, timeout, "/readyz")
        assert self.proc.poll() is None, f"syncd run exited: {self.log.read_text()}"

    def metric(self, name: str) -> float:
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"metric {name} not found")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"syncd run did not exit within {timeout}s after {sig}") from None

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


# ------------------------------------------------------------------ Label Studio-like changes (SQLite)

NOW = "2026-11-25 12:00:00.000000"


def add_annotation(conn: sqlite3.Connection, task_id: int, result: list, user: int = 1) -> int:
    """Create an annotation the way Label Studio does: the annotation row, then the task row."""
    project = conn.execute("SELECT project_id FROM task WHERE id = ?", (task_id,)).fetchone()[0]
    with conn:
        cur = conn.execute(
            "INSERT INTO task_completion (result, was_cancelled, created_at, updated_at, task_id, lead_time, "
            "result_count, completed_by_id, ground_truth, project_id, updated_by_id, unique_id, bulk_created) "
            "VALUES (?, 0, ?, ?, ?, 3.5, ?, ?, 0, ?, ?, lower(hex(randomblob(16))), 0)",
            (json.dumps(result), NOW, NOW, task_id, len(result), user, project, user))
    with conn:
        conn.execute("UPDATE task SET updated_at = ?, is_labeled = 1, total_annotations = total_annotations + 1 "
                     "WHERE id = ?", (NOW.replace("12:00:00", "12:00:01"), task_id))
    return cur.lastrowid


def update_annotation(conn: sqlite3.Connection, annotation_id: int, result: list, stamp: str) -> None:
    with conn:
        task_id = conn.execute("SELECT task_id FROM task_completion WHERE id = ?", (annotation_id,)).fetchone()[0]
        conn.execute("UPDATE task_completion SET result = ?, updated_at = ? WHERE id = ?",
                     (json.dumps(result), stamp, annotation_id))
    with conn:
        conn.execute("UPDATE task SET updated_at = ? WHERE id = ?", (stamp, task_id))


def delete_annotation(conn: sqlite3.Connection, annotation_id: int, stamp: str) -> None:
    with conn:
        task_id = conn.execute("SELECT task_id FROM task_completion WHERE id = ?", (annotation_id,)).fetchone()[0]
        conn.execute("DELETE FROM task_completion WHERE id = ?", (annotation_id,))
        conn.execute("UPDATE task SET updated_at = ?, total_annotations = total_annotations - 1 WHERE id = ?",
                     (stamp, task_id))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
