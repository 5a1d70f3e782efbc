"""Sharing a target's projects between syncd processes, through the PostgreSQL state.

Each project of the target is held by at most one process at a time, through a *lease*: a row
``(target, project_id, holder, expires_at)`` in the state schema. Leases rather than advisory
locks because a lease ends by itself: a process that is killed or cut off loses its projects
``lease_seconds`` after its last renewal, whatever TCP thinks of its connection.

Every ``lease_seconds / 4`` each process (its ``tick``, from a thread of its own: ``keep``; and
right when another process's membership runs out):

1. says it is alive (``members``; a member is gone once its row expires);
2. renews its leases; a lease it could not renew is lost, and it stops working on that project
   at once;
3. takes free or expired leases (atomically: ``INSERT ... ON CONFLICT ... WHERE expires_at <
   now()``) up to its fair share (the projects split as evenly as they go between the live
   members: 12 between 3 is 4 each, 7 is 3, 2, 2), and hands back leases above it (a tick after
   it stopped writing them: what it had in flight is recorded before another process looks), so
   a process that joins gets its share from the others within two or three ticks.

Fencing, so that two processes never write one project: a process writes a project only while
its own clock says the lease is valid, counted from *before* the renewal it sent
(``valid``): the database can give the lease to another only ``lease_seconds`` after it
received that renewal, later than the holder stopped. And the checkpoint commits the record of a
write only while the lease is held (``PostgresCheckpoint.fence``).

Project 0 is a lease of its own, not counted in the share: its holder checks the target's
marker and runs the audits, so one process does that work, not each.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from syncd.checkpoint.postgresql import connect, migrate, quote_schema
from syncd.errors import one_line

log = logging.getLogger("syncd")

TARGET_LEASE = 0  # the target itself: its marker and audits
DEFAULT_LEASE_SECONDS = 10.0


def holder_name() -> str:
    """This process, as logs, metrics and ``syncd status`` name it: host (the pod's name in
    Kubernetes) and pid, and a random part (pids repeat in containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class ProjectLeases:
    """This process's share of a target's projects; see the module doc. ``tick`` is called from
    one thread; ``valid`` and ``held`` from any."""

    def __init__(self, url: str, schema: str, target: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 holder: str | None = None, member: bool = True):
        self.target = target
        self.lease_seconds = lease_seconds
        self.holder = holder or holder_name()
        # A member counts in the fair share and takes no more than it; a one-shot ``resync`` is no
        # member: it takes what no process holds, and leaves the rest to their holders.
        self.member = member
        self._s = quote_schema(schema)
        self._lock = threading.Lock()
        self._valid_until: dict[int, float] = {}  # project -> monotonic time the lease may be used until
        self._wanted: list[int] = []  # the projects the keeper ticks for
        self._gained: set[int] = set()  # gained by the keeper, not yet taken by the caller
        self._draining: set[int] = set()  # still leased, no longer written: handed back at the next tick
        self._next_expiry: float | None = None  # seconds until another member's membership runs out
        self._on_gain: Callable[[], None] = lambda: None
        self._keeper: threading.Thread | None = None
        self._stopping = threading.Event()
        self.url = url
        self.conn = connect(url, "syncd-leases")
        migrate(self.conn, schema)
        self._status_conn: Any = None  # for ``holders``, opened on first use

    @property
    def interval(self) -> float:
        """Seconds between ticks (renewals)."""
        return self.lease_seconds / 4

    def held(self) -> set[int]:
        """The projects (not the target lease) this process may work on now."""
        now = time.monotonic()
        with self._lock:
            return {p for p, until in self._valid_until.items() if until > now and p != TARGET_LEASE}

    def valid(self, project_id: int | None) -> bool:
        """Whether this process may write for ``project_id`` now (None: a task without project,
        the target lease's holder's)."""
        key = TARGET_LEASE if project_id is None else project_id
        with self._lock:
            return self._valid_until.get(key, 0.0) > time.monotonic()

    def holds_target(self) -> bool:
        return self.valid(None)

    def tick(self, projects: Iterable[int]) -> tuple[set[int], set[int]]:
        """Renew, rebalance and take leases for ``projects``; the projects gained and lost since
        the last tick. A database error propagates (the caller reconnects); the leases then run
        out by themselves."""
        wanted = sorted(set(projects) - {TARGET_LEASE})
        before = self.held() | ({TARGET_LEASE} if self.holds_target() else set())
        sent = time.monotonic()
        s, ttl = self._s, f"{self.lease_seconds} seconds"
        with self.conn.transaction():
            if self.member:
                self.conn.execute(
                    f"INSERT INTO {s}.members (target, holder, host, pid, expires_at) VALUES (%s, %s, %s, %s, "
                    f"now() + %s::interval) ON CONFLICT (target, holder) DO UPDATE SET expires_at = "
                    "excluded.expires_at", [self.target, self.holder, socket.gethostname(), os.getpid(), ttl])
            renewed = {r[0] for r in self.conn.execute(
                f"UPDATE {s}.leases SET expires_at = now() + %s::interval WHERE target = %s AND holder = %s "
                "AND expires_at > now() RETURNING project_id", [ttl, self.target, self.holder])}
            rows = self.conn.execute(f"SELECT holder, extract(epoch FROM expires_at - now()) FROM {s}.members "
                                     "WHERE target = %s AND expires_at > now() ORDER BY holder",
                                     [self.target]).fetchall()
            live = [holder for holder, _ in rows]
            # When the first other process's membership runs out (by the database's clock): the
            # keeper ticks right then, so a dead process's projects move without waiting a tick.
            self._next_expiry = min((float(left) for holder, left in rows if holder != self.holder), default=None)
            members = len(live)
            share = _share(len(wanted), live, self.holder) if self.member else len(wanted)
            mine = sorted(renewed - {TARGET_LEASE})
            extra = [p for p in mine if p not in wanted] + [p for p in mine if p in wanted][share:]
            # Above the fair share (another process joined), or no longer a project: handed back
            # one tick after this process stopped writing them, so that its writes in flight have
            # landed and been recorded, and the next holder does not write them again.
            handing = [p for p in extra if p in self._draining]
            if handing:
                self.conn.execute(f"DELETE FROM {s}.leases WHERE target = %s AND holder = %s AND "
                                  "project_id = ANY(%s)", [self.target, self.holder, handing])
                renewed -= set(handing)
            draining = set(extra) - set(handing)
            free = [p for p in wanted if p not in renewed]
            want = max(0, share - len(renewed - {TARGET_LEASE}))
            candidates = ([TARGET_LEASE] if TARGET_LEASE not in renewed else []) + free
            for project in candidates:
                if project != TARGET_LEASE and want <= 0:
                    break
                got = self.conn.execute(
                    f"INSERT INTO {s}.leases (target, project_id, holder, expires_at) VALUES (%s, %s, %s, "
                    f"now() + %s::interval) ON CONFLICT (target, project_id) DO UPDATE SET holder = "
                    f"excluded.holder, expires_at = excluded.expires_at WHERE {s}.leases.expires_at < now() "
                    "RETURNING project_id", [self.target, project, self.holder, ttl]).fetchone()
                if got is not None:
                    renewed.add(project)
                    want -= project != TARGET_LEASE
        until = sent + self.lease_seconds * 0.9  # a margin for clock rates
        after = renewed - draining
        with self._lock:
            self._draining = draining
            self._valid_until = {p: until for p in after}
        gained, lost = after - before, before - after
        if gained - {TARGET_LEASE} or lost - {TARGET_LEASE}:
            log.info("%s holds projects %s (of %d, %d processes)", self.holder,
                     ", ".join(map(str, sorted(after - {TARGET_LEASE}))) or "none", len(wanted), members)
        return gained, lost

    def keep(self, projects: Iterable[int], on_gain: Callable[[], None] | None = None) -> None:
        """Tick for ``projects`` every ``interval`` from a thread of its own, so that the leases
        never run out during a long pass (the first full sync of a million tasks); called again,
        replaces the projects (new ones in Label Studio). What it gains waits in ``take_gained``
        (and ``on_gain`` is called, to wake the caller)."""
        with self._lock:
            self._wanted = sorted(set(projects))
            if on_gain is not None:
                self._on_gain = on_gain
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep, name="syncd-leases", daemon=True)
            self._keeper.start()

    def take_gained(self) -> set[int]:
        """The projects the keeper took since the last call (a process left, or handed them back)."""
        with self._lock:
            gained, self._gained = self._gained, set()
        return gained

    def _keep(self) -> None:
        failing_since = None
        while not self._stopping.wait(self._wait(failing_since is not None)):
            with self._lock:
                wanted = self._wanted
            try:
                if self.conn.closed:
                    self.conn = connect(self.url, "syncd-leases")
                gained, _ = self.tick(wanted)
            except Exception as exc:  # noqa: BLE001 - the leases run out by themselves; retried
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("%s cannot renew its leases in the state database (%s); retrying, and writing "
                                "nothing for projects whose lease ran out", self.holder,
                                one_line(exc))
                try:
                    self.conn.close()
                except Exception:  # noqa: BLE001, S110 - reconnected on the next try
                    pass
                continue
            if failing_since is not None:
                log.info("%s renewed its leases again after %.0fs", self.holder, time.monotonic() - failing_since)
                failing_since = None
            with self._lock:
                self._gained |= gained - {TARGET_LEASE}
            if gained - {TARGET_LEASE}:
                self._on_gain()

    def _wait(self, failing: bool) -> float:
        if failing:
            return min(1.0, self.interval)
        if self._next_expiry is None:
            return self.interval
        return min(self.interval, max(0.05, self._next_expiry + 0.05))

    def release(self) -> None:
        """Hand every lease back at once (a clean exit): the others take them at their next tick."""
        with self._lock:
            self._valid_until, self._draining = {}, set()
        try:
            with self.conn.transaction():
                self.conn.execute(f"DELETE FROM {self._s}.leases WHERE target = %s AND holder = %s",
                                  [self.target, self.holder])
                self.conn.execute(f"DELETE FROM {self._s}.members WHERE target = %s AND holder = %s",
                                  [self.target, self.holder])
        except Exception as exc:  # noqa: BLE001 - the leases run out by themselves
            log.debug("could not hand the leases back: %s", exc)

    def holders(self) -> list[Holder]:
        """``holders`` of this state database, on a connection of its own kept open between calls
        (the status page reads it at every refresh: a new connection each time would also take
        the migration lock each time). A database error propagates; the next call reconnects."""
        if self._status_conn is None or self._status_conn.closed:
            self._status_conn = connect(self.url, "syncd-status")
        try:
            return _read_holders(self._status_conn, self._s)
        except BaseException:
            self._status_conn.close()
            raise

    def close(self) -> None:
        self._stopping.set()
        if self._keeper is not None:
            self._keeper.join(timeout=15)
        self.release()
        self.conn.close()
        if self._status_conn is not None:
            self._status_conn.close()


def _share(projects: int, live: list[str], holder: str) -> int:
    """This member's fair share: ``projects`` split as evenly as they go between the live
    members, the first ones (by name, as every member sorts them) taking one more."""
    base, extra = divmod(projects, max(1, len(live)))
    rank = live.index(holder) if holder in live else len(live)
    return base + (1 if rank < extra else 0)


Holder = tuple[str, str, str, list[int], float]  # target, holder, started, projects, seconds left


def holders(url: str, schema: str) -> list[Holder]:
    """Every live process of every target in the state: (target, holder, started, projects,
    seconds until its membership expires), for ``syncd status``."""
    conn = connect(url, "syncd-status")
    try:
        migrate(conn, schema)
        return _read_holders(conn, quote_schema(schema))
    finally:
        conn.close()


def _read_holders(conn: Any, s: str) -> list[Holder]:
    rows = conn.execute(
        f"SELECT m.target, m.holder, m.started_at::text, coalesce(array_agg(l.project_id ORDER BY l.project_id) "
        f"FILTER (WHERE l.project_id IS NOT NULL), '{{}}'), extract(epoch FROM m.expires_at - now()) "
        f"FROM {s}.members m LEFT JOIN {s}.leases l ON l.target = m.target AND l.holder = m.holder AND "
        "l.expires_at > now() WHERE m.expires_at > now() GROUP BY m.target, m.holder, m.started_at, "
        "m.expires_at ORDER BY m.target, m.started_at").fetchall()
    return [(t, h, started, list(projects), float(left)) for t, h, started, projects, left in rows]
