"""Project leases on the real PostgreSQL: balanced, exclusive, and given up by a stalled holder
before anyone else may take them."""

from __future__ import annotations

import time
import uuid

import pytest

from syncd.leases import TARGET_LEASE, ProjectLeases

PROJECTS = list(range(1, 13))
TTL = 3.0


@pytest.fixture
def leases(pg_server):
    schema = f"syncd_test_{uuid.uuid4().hex[:10]}"
    made: list[ProjectLeases] = []

    def make(name: str, **options) -> ProjectLeases:
        lease = ProjectLeases(pg_server, schema, "file:///target", lease_seconds=TTL, holder=name, **options)
        made.append(lease)
        return lease

    yield make
    for lease in made:
        lease.close()
    import psycopg

    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def settle(*processes: ProjectLeases, rounds: int = 4) -> None:
    for _ in range(rounds):
        for process in processes:
            process.tick(PROJECTS)


def test_three_processes_hold_four_projects_each_and_one_checks_the_target(leases):
    a, b, c = leases("a"), leases("b"), leases("c")
    settle(a, b, c)
    holdings = [a.held(), b.held(), c.held()]
    assert [len(h) for h in holdings] == [4, 4, 4]
    assert set().union(*holdings) == set(PROJECTS)
    assert [p.holds_target() for p in (a, b, c)].count(True) == 1


def test_a_process_that_joins_gets_its_share_and_one_that_leaves_gives_it_back(leases):
    a, b = leases("a"), leases("b")
    settle(a)
    assert a.held() == set(PROJECTS)
    settle(a, b)
    assert len(a.held()) == len(b.held()) == 6 and not a.held() & b.held()
    b.release()
    settle(a, rounds=1)
    assert a.held() == set(PROJECTS)


def test_a_stalled_holder_stops_before_another_may_start(leases):
    a, b = leases("a"), leases("b")
    settle(a, b)
    project = min(a.held())
    renewed = time.monotonic()
    a.tick(PROJECTS)  # its last renewal: then it stalls (a network cut, a long GC pause)
    stopped = taken = None
    while taken is None and time.monotonic() - renewed < 3 * TTL:
        now = time.monotonic()
        if stopped is None and not a.valid(project):
            stopped = now
        b.tick(PROJECTS)
        if project in b.held():
            taken = now
        time.sleep(0.05)
    assert stopped is not None and taken is not None
    assert stopped < taken  # never both writing the project
    assert taken - renewed <= TTL + 0.5  # taken over within the lease, give or take a tick


def test_a_one_shot_run_takes_only_what_nobody_holds(leases):
    a = leases("a")
    settle(a)
    mine = set(list(a.held())[:6])
    a.conn.execute('DELETE FROM "{}".leases WHERE holder = %s AND project_id = ANY(%s)'.format(
        a._s.strip('"')), ["a", sorted(set(PROJECTS) - mine)])
    resync = leases("resync", member=False)
    resync.tick(PROJECTS)
    assert resync.held() == set(PROJECTS) - mine
    assert TARGET_LEASE not in resync.held()


def wait_until(check, timeout: float = TTL * 4) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_keeper_renews_leases_through_a_long_pass_and_reports_projects_taken_over(leases):
    """A first full sync takes longer than a lease: the keeper thread renews the leases meanwhile,
    hands back a share to a process that joins, and takes over the projects of one that leaves."""
    a, b = leases("a"), leases("b")
    a.tick(PROJECTS)
    a.keep(PROJECTS)
    a.take_gained()
    time.sleep(TTL * 1.5)  # the main thread is busy: only the keeper renews
    assert a.held() == set(PROJECTS) and a.take_gained() == set()

    b.tick(PROJECTS)  # joins; nothing is free yet
    assert b.held() == set()
    wait_until(lambda: len(a.held()) == 6)  # a stops writing half ...
    wait_until(lambda: b.tick(PROJECTS) and len(b.held()) == 6)  # ... and hands it back a tick later
    assert not a.held() & b.held()

    given_back = b.held()
    b.close()
    wait_until(lambda: a.held() == set(PROJECTS))
    assert a.take_gained() == given_back
