"""Notifications: webhooks and the heartbeat, delivered over HTTP to a real local receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from syncd.config import from_mapping
from syncd.errors import ConfigError
from syncd.ops.events import Events
from syncd.ops.notify import SIGNATURE_HEADER, Notifications
from syncd.ops.notify_config import parse_notify_config
from tests.conftest import run_syncd
from tests.daemon_helpers import RunningSyncd, add_annotation, wait_for


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request; ``answers`` (a list of status
    codes) are given to the first requests, 200 after; ``delay`` holds every answer."""

    def __init__(self, answers: list[int] | None = None, delay: float = 0.0):
        self.requests: list[dict] = []
        self.answers = list(answers or [])
        self.delay = delay
        self.closed = threading.Event()  # ends a held answer
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers), "body": body, "at": time.monotonic()})
                receiver.closed.wait(receiver.delay)
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def posts(self, event: str | None = None) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests if r["method"] == "POST"
                and (event is None or r["headers"].get("X-Syncd-Event") == event)]

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # a client that hung up before its (held) answer is what some tests do, not an error
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def notifications(config: dict, **kwargs) -> tuple[Events, Notifications]:
    events = Events()
    return events, Notifications(parse_notify_config(config), events, process=lambda: "host:1", target="t", **kwargs)


def labeled_tasks(db) -> dict[int, int]:
    """Labeled tasks per project, as Label Studio's tables say (not as syncd counts them)."""
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT t.project_id, COUNT(*) FROM task t WHERE EXISTS "
                                 "(SELECT 1 FROM task_completion c WHERE c.task_id = t.id) GROUP BY t.project_id"))
    finally:
        conn.close()


def test_resync_posts_signed_events_and_pings_the_heartbeat(ls_db, tmp_path, receiver):
    secret = "s3cr3t-for-the-test"
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "db": f"sqlite:///{ls_db}", "target": str(tmp_path / "out"), "state": str(tmp_path / "s.sqlite3"),
        "bundles": ["JSON"],
        "notify": {"webhooks": [{"url": f"{receiver.url}/hook/T0KEN", "secret": "${HOOK_SECRET}"}],
                   "heartbeat": {"url": f"{receiver.url}/ping/abc"}}}))
    done = run_syncd("resync", "--config", str(config), env={"HOOK_SECRET": secret})
    assert done.returncode == 0, done.stderr

    per_project = labeled_tasks(ls_db)
    [completed] = receiver.posts("sync.completed")
    assert completed["event"] == "sync.completed"
    assert completed["data"]["written"] == sum(per_project.values()) and completed["data"]["failed"] == 0
    assert {int(p): t["written"] for p, t in completed["data"]["projects"].items()} == per_project
    assert completed["syncd"]["target"] == str(tmp_path / "out")
    # One bundle.published per project (JSON applies to every labeling config), naming its files.
    published = receiver.posts("bundle.published")
    assert sorted(p["data"]["project_id"] for p in published) == sorted(per_project)
    for post in published:
        manifest = json.loads((tmp_path / "out" / post["data"]["manifest"]).read_text())
        assert manifest["build_id"] == post["data"]["build_id"]
        assert manifest["task_count"] == per_project[post["data"]["project_id"]]
    # Every body is signed with the secret, as GitHub signs its webhooks.
    for request in receiver.requests:
        if request["method"] == "POST":
            expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
            assert hmac.compare_digest(request["headers"][SIGNATURE_HEADER], expected)
            assert request["path"] == "/hook/T0KEN"
    # The heartbeat: one GET after the clean run.
    assert [r["path"] for r in receiver.requests if r["method"] == "GET"] == ["/ping/abc"]
    assert secret not in done.stderr


def test_an_audit_that_finds_the_target_changed_is_posted(ls_db, tmp_path, receiver):
    out = tmp_path / "out"
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"db": f"sqlite:///{ls_db}", "target": str(out), "state": str(tmp_path / "s.sqlite3"),
                                  "notify": {"webhooks": [{"url": receiver.url,
                                                           "events": ["target.audit_mismatch"]}]}}))
    assert run_syncd("resync", "--config", str(config)).returncode == 0
    assert not receiver.posts()  # nothing amiss, and sync.completed not asked for
    (out / "7.json").unlink()  # someone removed an object
    assert run_syncd("resync", "--config", str(config)).returncode == 0
    [mismatch] = receiver.posts()
    assert mismatch["event"] == "target.audit_mismatch"
    assert mismatch["data"]["missing"] == 1 and mismatch["data"]["rewritten"] == 1
    assert (out / "7.json").exists()


def test_a_failed_resync_posts_sync_failed_and_does_not_ping(tmp_path, receiver):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "db": f"sqlite:///{tmp_path / 'missing.sqlite3'}", "target": str(tmp_path / "out"),
        "notify": {"webhooks": [receiver.url], "heartbeat": f"{receiver.url}/ping"}}))
    done = run_syncd("resync", "--config", str(config))
    assert done.returncode == 2
    [failed] = receiver.posts("sync.failed")
    assert "missing.sqlite3" in failed["data"]["error"]
    assert not [r for r in receiver.requests if r["method"] == "GET"]


def test_deliveries_are_retried_with_backoff_and_honour_retry_after():
    receiver = Receiver(answers=[503, 503])
    try:
        events, notify = notifications({"webhooks": [receiver.url], "attempts": 3})
        events.publish("bundle.failed", project_id=2, format="COCO", error="x")
        notify.close()
        assert len(receiver.requests) == 3  # two 503s, then delivered
        assert len({r["headers"]["X-Syncd-Delivery"] for r in receiver.requests}) == 1  # one delivery
        assert notify.delivered == 1 and notify.failed == 0
    finally:
        receiver.close()


def test_a_refused_delivery_is_logged_once_without_the_urls_path(caplog):
    receiver = Receiver(answers=[404])
    try:
        events, notify = notifications({"webhooks": [f"{receiver.url}/hooks/SECRET-TOKEN"], "attempts": 5})
        with caplog.at_level(logging.WARNING, logger="syncd"):
            events.publish("sync.failed", error="the database is gone")
            notify.close()
        assert len(receiver.requests) == 1  # a 404 is an answer: not retried
        [line] = [r.getMessage() for r in caplog.records if "notify" in r.getMessage()]
        assert "HTTP 404" in line and "127.0.0.1" in line and "SECRET-TOKEN" not in line
        assert notify.failed == 1
    finally:
        receiver.close()


def test_sync_completed_is_rate_limited_and_summed(receiver):
    events, notify = notifications({"webhooks": [receiver.url], "min_interval": 1})
    def batch(project: int) -> None:
        events.publish("sync.completed", scanned=1, written=1, unchanged=0, deleted=0, orphaned=0, failed=0,
                       seconds=0.1, full=False, projects={project: {"written": 1, "deleted": 0, "failed": 0,
                                                                    "last_error": None}}, failures=[])

    batch(1)
    wait_for(lambda: receiver.posts("sync.completed"), 5, "the first sync.completed")
    for project in (2, 2, 3):  # within min_interval of the first: held back and summed
        batch(project)
    events.publish("bundle.published", project_id=1, format="JSON")  # other events are not held back
    wait_for(lambda: len(receiver.posts("sync.completed")) == 2, 5, "the held-back sync.completed")
    first, second = receiver.posts("sync.completed")
    assert first["data"]["written"] == 1 and first["data"]["batches"] == 1
    assert second["data"]["written"] == 3 and second["data"]["batches"] == 3
    assert {int(k): v["written"] for k, v in second["data"]["projects"].items()} == {2: 2, 3: 1}
    sent = [r["at"] for r in receiver.requests if r["headers"].get("X-Syncd-Event") == "sync.completed"]
    assert sent[1] - sent[0] >= 0.9
    assert len(receiver.posts("bundle.published")) == 1
    notify.close()


def test_the_heartbeat_is_hit_only_while_in_step(receiver):
    in_step = threading.Event()
    in_step.set()
    _, notify = notifications({"heartbeat": {"url": f"{receiver.url}/hb", "interval": 1}}, ready=in_step.is_set)
    try:
        wait_for(lambda: len(receiver.requests) >= 2, 10, "two heartbeats")
        in_step.clear()
        time.sleep(0.2)  # a heartbeat already in flight may still land
        before = len(receiver.requests)
        time.sleep(2.5)
        assert len(receiver.requests) == before  # a dead-man switch: silence while not in step
        in_step.set()
        wait_for(lambda: len(receiver.requests) > before, 10, "heartbeats again")
    finally:
        notify.close()


def test_a_stuck_webhook_never_holds_up_syncing(ls_db, tmp_path):
    receiver = Receiver(delay=30)  # answers nothing for 30 s
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(tmp_path / "out"),
                          {"notify": {"webhooks": [receiver.url], "min_interval": 0, "timeout": 30}})
    try:
        daemon.wait_ready()
        wait_for(lambda: receiver.requests, 10, "the first delivery (stuck)")
        conn = sqlite3.connect(ls_db)
        add_annotation(conn, 11, [])
        conn.close()
        wait_for(lambda: (tmp_path / "out" / "11.json").exists(), 10, "task 11 synced while the webhook hangs")
    finally:
        assert daemon.stop() == 0, daemon.logs()
        receiver.close()


def test_run_posts_a_batchs_projects_to_the_webhook(ls_db, tmp_path, receiver):
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(tmp_path / "out"),
                          {"notify": {"webhooks": [{"url": receiver.url, "events": ["sync.completed"]}],
                                      "min_interval": 0}})
    try:
        daemon.wait_ready()
        wait_for(lambda: receiver.posts("sync.completed"), 10, "the first pass's sync.completed")
        assert receiver.posts("sync.completed")[0]["data"]["full"] is True
        conn = sqlite3.connect(ls_db)
        project = conn.execute("SELECT project_id FROM task WHERE id = 11").fetchone()[0]
        add_annotation(conn, 11, [])
        conn.close()
        batch = wait_for(lambda: next((p for p in receiver.posts("sync.completed") if not p["data"]["full"]), None),
                         10, "the batch's sync.completed")
        assert batch["data"]["written"] == 1
        assert {int(k): v["written"] for k, v in batch["data"]["projects"].items()} == {project: 1}
        assert not receiver.posts("bundle.published")  # not asked for
    finally:
        assert daemon.stop() == 0, daemon.logs()


@pytest.mark.parametrize("raw, message", [
    ({"webhooks": ["ftp://x"]}, "notify.webhooks[0]: must be an http:// or https:// URL"),
    ({"webhooks": [{"url": "http://x", "events": ["sync.complete"]}]}, "did you mean 'sync.completed'?"),
    ({"webhook": ["http://x"]}, "unknown key 'webhook'; did you mean 'webhooks'?"),
    ({"heartbeat": {"url": "http://x", "interval": 0}}, "notify.heartbeat.interval: must be a number of seconds"),
    ({"webhooks": [{"url": "http://x", "secret": ""}]}, "notify.webhooks[0].secret: must be a non-empty string"),
])
def test_notify_config_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("?", r"\?")):
        from_mapping({"notify": raw}, "notify-test")


def test_a_broken_notify_section_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("target: out\nnotify:\n  webhooks: [ftp://example.com/x]\n")
    done = run_syncd("resync", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "must be an http:// or https:// URL" in done.stderr
