"""Documents built in worker processes (``syncd.sources.labelstudio.builders``) are the ones the
main process builds: Label Studio's export, on SQLite and PostgreSQL, bad tasks included."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from syncd.document import DocumentOptions, TaskDocument
from syncd.errors import BadTask
from syncd.sources.labelstudio import LabelStudioSource
from syncd.sources.labelstudio import source as source_module
from syncd.sources.labelstudio.database import connect
from tests.bigdb import multiply
from tests.conftest import EXAMPLE_DB, REPO, exported_tasks, fixture_projects, run_syncd


@pytest.fixture(autouse=True)
def any_size_in_workers(monkeypatch):
    monkeypatch.setattr(source_module, "MIN_TASKS", 1)  # the fixture is far below the real threshold


def build(url: str, workers: int, ids: list[int] | None = None) -> dict[int, TaskDocument | BadTask]:
    # batches of 7: several batches in flight at once, more than the workers
    source = LabelStudioSource(connect(url), batch_size=7, options=DocumentOptions(predictions="ids"),
                               workers=workers)
    try:
        if ids is None:
            ids = [row[0] for row in source.db.query("SELECT id FROM task")]  # labeled or not
        docs = {doc.task_id: doc for doc in source.documents(ids)}
        if workers:
            assert source._builders._pool is not None, "the documents were not built in worker processes"
        return docs
    finally:
        source.close()


def test_worker_documents_equal_label_studio_export_on_sqlite(fixtures_dir, ls_db):
    url = f"sqlite:///{ls_db}"
    in_workers = build(url, workers=2)
    expected = {}
    for slug in fixture_projects(fixtures_dir):
        expected |= exported_tasks(fixtures_dir / "exports" / slug / "JSON.annotated-only.json")
    assert {tid: json.loads(doc.body) for tid, doc in in_workers.items()} == expected
    here = build(url, workers=0)
    assert {tid: (d.body, d.sha256, d.fingerprint, d.project_id) for tid, d in in_workers.items()} == \
           {tid: (d.body, d.sha256, d.fingerprint, d.project_id) for tid, d in here.items()}


def test_worker_documents_equal_label_studio_export_on_postgres(fixtures_dir, pg_label_studio):
    expected = {}
    for slug in fixture_projects(fixtures_dir):
        for task_id, task in exported_tasks(fixtures_dir / "exports-postgres" / slug / "JSON.json").items():
            if task["annotations"]:
                task["annotations"].sort(key=lambda a: a["id"])
                expected[task_id] = task
    in_workers = build(pg_label_studio, workers=2)
    assert {tid: json.loads(doc.body) for tid, doc in in_workers.items()} == expected


def test_a_bad_task_comes_back_from_a_worker_as_the_same_bad_task(ls_db):
    with sqlite3.connect(ls_db) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE task_completion SET result = '[{broken' WHERE id = 7")
    url = f"sqlite:///{ls_db}"
    in_workers, here = build(url, 2, [7, 8]), build(url, 0, [7, 8])
    assert isinstance(in_workers[7], BadTask) and (in_workers[7].task_id, in_workers[7].project_id) == (7, 2)
    assert str(in_workers[7]) == str(here[7])
    assert "task_completion.result of row 7 is not valid JSON" in str(in_workers[7])
    assert in_workers[8].body == here[8].body  # the other task of the batch is still fine


@pytest.mark.parametrize("noticed", [False, True], ids=["at-once", "once-the-pool-noticed"])
def test_a_worker_killed_mid_pass_leaves_the_rest_to_this_process(ls_db, caplog, noticed):
    url = f"sqlite:///{ls_db}"
    expected = build(url, workers=0)
    source = LabelStudioSource(connect(url), batch_size=1, options=DocumentOptions(predictions="ids"), workers=2)
    try:
        ids = [row[0] for row in source.db.query("SELECT id FROM task")]
        documents = iter(source.documents(ids))
        first = next(documents)  # the workers are up
        pool = source._builders._pool
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        if noticed:  # the pool knows before the next batch is handed over: it refuses new work
            deadline = time.monotonic() + 30
            while not pool._broken and time.monotonic() < deadline:
                time.sleep(0.01)
            assert pool._broken
        with caplog.at_level("WARNING", logger="syncd"):
            docs = {doc.task_id: doc.body for doc in [first, *documents]}
        assert docs == {tid: doc.body for tid, doc in expected.items()}  # every document, none twice
        assert "a document builder process died" in caplog.text
        assert source._builders.broken and source._builders._pool is None
        assert {doc.task_id for doc in source.documents(ids)} == set(expected)  # later work: here
    finally:
        source.close()


def test_workers_that_cannot_start_leave_the_work_to_this_process(ls_db, tmp_path, monkeypatch):
    # The spawned workers cannot even start (here: the main module they re-import is gone, as
    # for a script read from stdin): the documents are built in this process instead.
    url = f"sqlite:///{ls_db}"
    expected = build(url, workers=0)
    gone = tmp_path / "gone.py"
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(gone), raising=False)
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None, raising=False)
    source = LabelStudioSource(connect(url), batch_size=7, options=DocumentOptions(predictions="ids"), workers=2)
    try:
        ids = [row[0] for row in source.db.query("SELECT id FROM task")]
        assert {doc.task_id: doc.body for doc in source.documents(ids)} == \
               {tid: doc.body for tid, doc in expected.items()}
        assert source._builders.broken
    finally:
        source.close()


def test_resync_with_workers_writes_what_one_process_writes(tmp_path):
    db = tmp_path / "big.sqlite3"
    labeled = multiply(EXAMPLE_DB, db, copies=40)
    assert labeled >= 1000  # over MIN_TASKS for real: the subprocess does not see the monkeypatch
    trees = {}
    for workers in (0, 2):
        config = tmp_path / f"w{workers}.yaml"
        config.write_text(f"build_workers: {workers}\n")
        out = tmp_path / f"out{workers}"
        done = run_syncd("resync", "--config", str(config), "--db", f"sqlite:///{db}", "--target", str(out),
                         "--state", str(tmp_path / f"state{workers}.sqlite3"))
        assert done.returncode == 0, done.stderr
        assert f"{labeled} written" in done.stderr
        assert ("building documents in 2 worker processes" in done.stderr) == (workers == 2)
        trees[workers] = {p.name: p.read_bytes() for p in out.glob("*.json")}
    assert len(trees[2]) == labeled
    assert trees[2] == trees[0]


def test_workers_idle_after_the_big_pass_are_let_go(ls_db, monkeypatch):
    from syncd.sources.labelstudio import builders

    source = LabelStudioSource(connect(f"sqlite:///{ls_db}"), batch_size=7, workers=2)
    try:
        ids = [row[0] for row in source.db.query("SELECT id FROM task")]
        big = [doc.task_id for doc in source.documents(ids)]
        assert source._builders._pool is not None
        monkeypatch.setattr(source_module, "MIN_TASKS", len(ids) + 1)  # what follows is small work
        assert [doc.task_id for doc in source.documents(ids)] == big  # built here while workers are fresh
        assert source._builders._pool is not None
        monkeypatch.setattr(builders, "IDLE_SECONDS", 0.0)
        assert [doc.task_id for doc in source.documents(ids)] == big
        assert source._builders._pool is None
    finally:
        source.close()


def test_ctrl_c_during_a_resync_with_workers_is_one_line_and_the_next_run_finishes(tmp_path):
    db = tmp_path / "big.sqlite3"
    labeled = multiply(EXAMPLE_DB, db, copies=100)
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    args = [sys.executable, "-m", "syncd", "resync", "--db", f"sqlite:///{db}", "--target", str(out),
            "--state", str(state), "--log-format", "text"]
    # A terminal's Ctrl-C: SIGINT to the whole process group, workers included.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("*.json"))) < 100 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "building documents in" in stderr
    assert proc.returncode in (0, 130), stderr  # 0: it had just finished
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    rest = run_syncd("resync", "--db", f"sqlite:///{db}", "--target", str(out), "--state", str(state))
    assert rest.returncode == 0, rest.stderr
    assert len(list(out.glob("*.json"))) == labeled
