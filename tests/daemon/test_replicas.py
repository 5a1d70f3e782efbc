"""Several ``syncd run`` processes sharing one target through a PostgreSQL state: each project
held by one process at a time, balanced, taken over after a kill -9, and the target converging
to what a clean resync writes."""

from __future__ import annotations

import json
import re
import signal
import time
import uuid

import pytest

from tests.conftest import run_syncd
from tests.daemon.test_daemon_postgres import pg_add_annotation
from tests.daemon_helpers import RunningSyncd, wait_for

LEASE = 3.0  # seconds: a dead process's projects move this long after its last renewal
FAILOVER = LEASE + 10  # the bound a change must arrive within, with room for a loaded machine


@pytest.fixture
def state_schema(pg_server):
    schema = f"syncd_test_{uuid.uuid4().hex[:10]}"
    yield schema
    import psycopg

    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def held(daemon: RunningSyncd) -> set[int]:
    return {int(m) for m in re.findall(r'^syncd_projects_held\{project_id="(\d+)"\} 1\.0$', daemon.get("/metrics")[1],
                                        re.M)}


def written(daemon: RunningSyncd) -> float:
    return daemon.metric("syncd_objects_written_total")


def unlabeled_tasks(db: str) -> dict[int, int]:
    """A task without annotations per project: project -> task."""
    import psycopg

    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT project_id, min(id) FROM task t WHERE NOT EXISTS (SELECT 1 FROM task_completion c "
                            "WHERE c.task_id = t.id) GROUP BY project_id").fetchall()
    return dict(rows)


def objects(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("*.json")}


def test_processes_share_the_projects_and_survive_churn(pg_label_studio, pg_server, state_schema, tmp_path):
    out = tmp_path / "out"
    config = {"state": pg_server, "state_schema": state_schema, "lease_seconds": LEASE, "poll_interval": 0.3,
              "reconcile_interval": 2}
    import psycopg

    with psycopg.connect(pg_label_studio) as conn:
        projects = {r[0] for r in conn.execute("SELECT id FROM project")}
    processes: dict[str, RunningSyncd] = {}

    def start(name: str) -> RunningSyncd:
        (tmp_path / name).mkdir()
        processes[name] = RunningSyncd(tmp_path / name, pg_label_studio, str(out), config)
        return processes[name]

    def live() -> list[RunningSyncd]:
        return [p for p in processes.values() if p.proc.poll() is None]

    def balanced() -> bool:
        holdings = [held(p) for p in live()]
        union = set().union(*holdings)
        disjoint = sum(map(len, holdings)) == len(union)
        fair = max(map(len, holdings)) - min(map(len, holdings)) <= 1
        return union == projects and disjoint and fair

    try:
        for name in ("a", "b", "c"):
            start(name).wait_ready()
        wait_for(balanced, 30, "the 7 projects shared by 3 processes, about equally")
        assert len(objects(out)) == 38
        # Each project was synced by one process: the initial writes are the labeled tasks, once.
        assert sum(written(p) for p in live()) == 38
        for daemon in live():
            status, body = daemon.get("/readyz")
            assert status == 200 and "holds projects" in body
            metrics = daemon.get("/metrics")[1]
            assert metrics.count("syncd_process_info{") == 1
            # Logs name the process as /metrics does (they all go to one place).
            name = re.search(r'syncd_process_info\{process="([^"]+)"\}', metrics).group(1)
            assert f"[{name}] " in daemon.log.read_text() and f"{name} holds projects" in body
        # Each status page lists every project and who holds it, as the processes' metrics say.
        names = {re.search(r'syncd_process_info\{process="([^"]+)"\}', p.get("/metrics")[1]).group(1): p
                 for p in live()}
        truth = {pid: name for name, p in names.items() for pid in held(p)}

        def pages_agree() -> bool:
            return all({p["id"]: p["holder"] for p in json.loads(d.get("/status.json")[1])["projects"]} == truth
                       for d in live())

        wait_for(pages_agree, 15, "every status page to name each project's holder")

        def status_connections() -> set[int]:
            with psycopg.connect(pg_server) as conn:
                return {r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = "
                                                   "'syncd-status' AND datname = current_database()")}

        # each page reads the holders on one connection, kept open from refresh to refresh
        kept = status_connections()
        assert len(kept) == 3
        time.sleep(2 * config["reconcile_interval"] + 1)  # (a refresh at every reconcile)
        assert status_connections() == kept

        tasks = unlabeled_tasks(pg_label_studio)
        changed: dict[int, int] = {}

        def arrives(project: int, what: str) -> None:
            task = tasks[project]
            changed[project] = pg_add_annotation(pg_label_studio, task)
            wait_for(lambda: (out / f"{task}.json").exists(), FAILOVER, f"{task}.json ({what})")

        project = next(iter(held(processes["a"])))
        arrives(project, "a change, while everyone is up")

        victim = processes["b"]
        taken = held(victim)
        victim.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        arrives(next(iter(taken)), "a change in a project of the killed process")
        wait_for(balanced, FAILOVER, "the killed process's projects taken over")
        assert time.monotonic() - killed_at <= FAILOVER

        start("d").wait_ready()
        wait_for(balanced, FAILOVER, "a new process given its share")
        assert held(processes["d"])

        leaving = processes["c"]
        left_behind = held(leaving)
        assert leaving.stop(signal.SIGTERM) == 0
        wait_for(balanced, FAILOVER, "the projects of a stopped process taken over")
        remaining = [p for p in left_behind if p in tasks and p not in changed]
        if remaining:
            arrives(remaining[0], "a change in a project of the stopped process")
    finally:
        for daemon in processes.values():
            if daemon.proc.poll() is None:
                daemon.stop()

    clean = run_syncd("resync", "--db", pg_label_studio, "--target", str(tmp_path / "clean"), "--state",
                      str(tmp_path / "clean.sqlite3"),
                      "--config", str(_write(tmp_path / "c.yaml", {"predictions": "ids"})))
    assert clean.returncode == 0, clean.stderr
    assert objects(out) == objects(tmp_path / "clean")


def _write(path, values: dict):
    path.write_text(json.dumps(values))
    return path


def test_status_lists_the_processes_and_what_they_hold(pg_label_studio, pg_server, state_schema, tmp_path):
    config = {"state": pg_server, "state_schema": state_schema, "lease_seconds": LEASE}
    daemon = RunningSyncd(tmp_path, pg_label_studio, str(tmp_path / "out"), config)
    try:
        daemon.wait_ready()
        wait_for(lambda: len(held(daemon)) == 7, 10, "one process holding every project")
        status = run_syncd("status", "--config", str(daemon.config))
        assert status.returncode == 0, status.stderr
        [line] = [line for line in status.stdout.splitlines() if "holds projects" in line]
        listed = {int(p) for p in re.search(r"holds projects ([\d, ]+)", line).group(1).split(", ")}
        assert listed == held(daemon) and "(checks the target)" in line
    finally:
        assert daemon.stop() == 0, daemon.logs()


def test_a_state_in_label_studios_own_database_needs_a_yes(pg_label_studio, tmp_path):
    result = run_syncd("resync", "--db", pg_label_studio, "--target", str(tmp_path / "out"), "--state", pg_label_studio)
    assert result.returncode == 2
    assert "state_in_label_studio_db: true" in result.stderr and "Traceback" not in result.stderr
    allowed = run_syncd("resync", "--db", pg_label_studio, "--target", str(tmp_path / "out"),
                        "--state", pg_label_studio,
                        "--config", str(_write(tmp_path / "c.yaml", {"state_in_label_studio_db": True})))
    assert allowed.returncode == 0, allowed.stderr
    import psycopg

    with psycopg.connect(pg_label_studio) as conn:
        count = conn.execute("SELECT count(*) FROM syncd.objects").fetchone()[0]
        public = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                             "WHERE table_schema = 'public'")}
    assert count == 38 and not {t for t in public if t.startswith(("objects", "leases", "members"))}



def test_a_session_whose_state_connection_died_closes_its_leases(pg_label_studio, pg_server, state_schema, tmp_path):
    """The state database dropped the connections while records waited to be flushed: closing
    the session fails to flush them (they are redone), and must still stop the lease keeper. A
    keeper left running would keep a second member alive in the same process, holding projects
    that nobody syncs."""
    import threading

    import psycopg

    from syncd.config import Config
    from syncd.session import open_session

    cfg = Config(db=pg_label_studio, target=str(tmp_path / "out"), state=pg_server, state_schema=state_schema,
                 lease_seconds=LEASE)
    session = open_session(cfg, one_shot=False)
    session.leases.tick([1, 2])
    session.leases.keep([1, 2])
    assert [t for t in threading.enumerate() if t.name == "syncd-leases"]
    session.checkpoint.record_put("1.json", 1, 1, "0" * 64, 3)  # waits for a flush
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name LIKE 'syncd-%' AND pid <> pg_backend_pid()")
    session.close()
    assert not [t for t in threading.enumerate() if t.name == "syncd-leases"]


def test_a_lost_state_connection_leaves_no_second_member_behind(pg_label_studio, pg_server, state_schema, tmp_path):
    """The state database drops syncd's connections (a restart, a failover): the session ends and
    a new one starts, and the old session's leases go with it. A lease keeper left running would
    keep a second member alive in the same process, holding projects that nobody syncs."""
    import psycopg

    config = {"state": pg_server, "state_schema": state_schema, "lease_seconds": LEASE, "reconcile_interval": 2}
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, pg_label_studio, str(out), config)
    try:
        daemon.wait_ready()
        wait_for(lambda: len(held(daemon)) == 7, 10, "one process holding every project")
        with psycopg.connect(pg_server, autocommit=True) as conn:
            killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE application_name LIKE 'syncd-%' AND pid <> pg_backend_pid()").fetchone()[0]
        assert killed >= 2  # the checkpoint's and the leases' connections at least

        def members() -> list[str]:
            with psycopg.connect(pg_server) as conn:
                return [r[0] for r in conn.execute(f'SELECT holder FROM "{state_schema}".members '
                                                   "WHERE expires_at > now()")]

        wait_for(lambda: "recovered after" in daemon.logs(), 30, "a new session")
        wait_for(lambda: len(members()) == 1 and len(held(daemon)) == 7, 3 * LEASE,
                 "one member again, holding every project")
        time.sleep(LEASE / 2)  # a leftover keeper would renew its membership by now
        assert len(members()) == 1, members()
        # And it still syncs: a change arrives.
        project, task = next(iter(unlabeled_tasks(pg_label_studio).items()))
        pg_add_annotation(pg_label_studio, task)
        wait_for(lambda: (out / f"{task}.json").exists(), FAILOVER, "the change after the reconnect")
    finally:
        assert daemon.stop() == 0, daemon.logs()
