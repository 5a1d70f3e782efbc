"""The events the status page and notifications are built on: what a pass reports per project,
what an audit reports, and that a broken subscriber does not stop anything."""

from __future__ import annotations

import logging
import sqlite3

from syncd import config as config_mod
from syncd.ops.events import Event, Events
from syncd.session import open_session


def labeled_per_project(db) -> dict[int, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT t.project_id, count(DISTINCT t.id) FROM task t JOIN task_completion c "
                                 "ON c.task_id = t.id GROUP BY t.project_id"))


def test_a_pass_reports_what_it_wrote_per_project(ls_db, tmp_path):
    cfg = config_mod.from_mapping({"db": f"sqlite:///{ls_db}", "target": str(tmp_path / "out"),
                                   "state": str(tmp_path / "state.sqlite3")})
    with open_session(cfg, one_shot=True) as session:
        summary = session.syncer.full()
    data = summary.event_data(full=True)
    assert data["full"] and data["failed"] == 0
    assert {pid: tally["written"] for pid, tally in data["projects"].items()} == labeled_per_project(ls_db)
    assert data["written"] == sum(labeled_per_project(ls_db).values())


def test_an_audit_that_finds_a_missing_object_says_so(ls_db, tmp_path):
    cfg = config_mod.from_mapping({"db": f"sqlite:///{ls_db}", "target": str(tmp_path / "out"),
                                   "state": str(tmp_path / "state.sqlite3")})
    seen: list[Event] = []
    events = Events()
    events.subscribe(seen.append)
    with open_session(cfg, one_shot=True, events=events) as session:
        session.syncer.full()
    assert not [e for e in seen if e.name == "target.audit_mismatch"]
    victim = sorted((tmp_path / "out").glob("*.json"))[0]
    victim.unlink()
    with open_session(cfg, one_shot=True, events=events) as session:
        summary = session.syncer.full()
    [mismatch] = [e for e in seen if e.name == "target.audit_mismatch"]
    assert mismatch.data["missing"] == 1 and mismatch.data["rewritten"] == 1
    assert summary.written == 1 and victim.exists()


def test_a_subscriber_that_fails_is_logged_once_and_the_others_still_hear(caplog):
    events = Events()
    heard: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    events.subscribe(broken)
    events.subscribe(lambda event: heard.append(event.name))
    with caplog.at_level(logging.WARNING, logger="syncd"):
        events.publish("sync.completed", written=1)
        events.publish("sync.failed", error="x")
    assert heard == ["sync.completed", "sync.failed"]
    assert len([r for r in caplog.records if "boom" in r.getMessage()]) == 1
