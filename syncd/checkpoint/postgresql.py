"""The checkpoint in PostgreSQL (``state: postgresql://...``): shared by every syncd process of
a target, so they can share the work (``syncd.leases``) and none needs a volume of its own.

syncd keeps its tables in a schema of its own (``state_schema``, default ``syncd``), creates
and migrates them itself (``schema_version`` says which version the tables are at), and stores
keys, hashes, fingerprints, etags and its leases: never a credential. It never touches another
schema.

Writes are grouped as in the SQLite file (a transaction per 1,000 records or per second). With a
``fence`` (the process's lease holder name, set in replica mode), a record of a written or
rewritten object is committed only while this process still holds the lease of the object's
project: a process that lost its lease (a network cut, a stall) cannot overwrite what the new
holder recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from syncd.checkpoint.base import Entry, PendingRecords
from syncd.errors import ConfigError, SourceError, one_line
from syncd.sources.labelstudio.database import mask_url

log = logging.getLogger("syncd")

SCHEMA_VERSION = 1
# Each version's statements, applied in order; {s} is the schema. Tables are never dropped.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS {s}.objects (
            target      text NOT NULL,
            key         text COLLATE "C" NOT NULL,
            task_id     bigint NOT NULL,
            project_id  bigint,
            sha256      text NOT NULL,
            size        bigint NOT NULL,
            written_at  double precision NOT NULL,
            fingerprint text NOT NULL DEFAULT '',
            etag        text NOT NULL DEFAULT '',
            PRIMARY KEY (target, key))""",
        "CREATE INDEX IF NOT EXISTS objects_task ON {s}.objects (target, task_id)",
        "CREATE INDEX IF NOT EXISTS objects_project ON {s}.objects (target, project_id)",
        "CREATE TABLE IF NOT EXISTS {s}.meta (name text PRIMARY KEY, value text NOT NULL)",
        # Work sharing (syncd.leases): who holds which project of a target, and who is alive.
        """CREATE TABLE IF NOT EXISTS {s}.leases (
            target     text NOT NULL,
            project_id bigint NOT NULL,
            holder     text NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (target, project_id))""",
        """CREATE TABLE IF NOT EXISTS {s}.members (
            target     text NOT NULL,
            holder     text NOT NULL,
            host       text NOT NULL,
            pid        integer NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (target, holder))""",
    ],
}
COLUMNS = "key, task_id, project_id, sha256, size, fingerprint, etag"
MIGRATION_LOCK = 0x73796E6364  # "syncd": one process migrates at a time


def connect(url: str, application_name: str = "syncd-state") -> Any:
    """An autocommit connection to the state database; one line naming it when that fails."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError("state is PostgreSQL but the driver is not installed; run: "
                          "pip install 'labelstudio-syncd[postgres]'") from None
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10, application_name=application_name,
                               keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
    except psycopg.Error as exc:
        reason = one_line(exc)
        raise SourceError(f"cannot connect to the state database {mask_url(url)}: {reason}") from None


def quote_schema(schema: str) -> str:
    if not schema.replace("_", "").isalnum() or schema[0].isdigit():
        raise ConfigError(f"state_schema: {schema!r} must be letters, digits and underscores")
    return f'"{schema}"'


def migrate(conn: Any, schema: str) -> None:
    """Create or bring syncd's tables up to ``SCHEMA_VERSION`` (under a lock: one migrator)."""
    s = quote_schema(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)")
        row = conn.execute(f"SELECT max(version) FROM {s}.schema_version").fetchone()
        current = row[0] or 0
        if current > SCHEMA_VERSION:
            raise ConfigError(f"state schema {schema} is at version {current}, newer than this syncd "
                              f"({SCHEMA_VERSION}); run a newer syncd")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement.format(s=s))
            conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES (%s)", (version,))
            log.info("state schema %s migrated to version %d", schema, version)


class PostgresCheckpoint(PendingRecords):
    """Durable per-key state for one target in PostgreSQL. Use it from one thread."""

    def __init__(self, url: str, target: str, schema: str = "syncd", fence: str | None = None):
        self.url = url
        self.path = mask_url(url)  # for messages ("state ...: usable")
        self.target = target
        self.schema = schema
        self.fence = fence  # the lease holder whose records may be committed (replica mode)
        self._s = quote_schema(schema)
        super().__init__()
        self.fenced = 0  # records dropped because their project's lease was lost
        self.conn = connect(url)
        try:
            migrate(self.conn, schema)
        except Exception:
            self.conn.close()
            raise

    # -------------------------------------------------------------- reads

    def _rows(self, sql: str, params: Iterable[Any]) -> list[tuple]:
        return self.conn.execute(sql.format(s=self._s), list(params)).fetchall()

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        self.flush()
        keys = list(keys)
        found: dict[str, Entry] = {}
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            for row in self._rows(f"SELECT {COLUMNS} FROM {{s}}.objects WHERE target = %s AND key = ANY(%s)",
                                  [self.target, chunk]):
                found[row[0]] = Entry(*row)
        return found

    def entries(self, project_ids: Iterable[int] = ()) -> Iterator[Entry]:
        self.flush()
        projects = list(project_ids)
        last: tuple[int, str] = (-(2**63), "")
        where = "target = %s AND (task_id, key) > (%s, %s)" + (" AND project_id = ANY(%s)" if projects else "")
        while True:
            params = [self.target, *last] + ([projects] if projects else [])
            rows = self._rows(f"SELECT {COLUMNS} FROM {{s}}.objects WHERE {where} ORDER BY task_id, key LIMIT 1000",
                              params)
            if not rows:
                return
            yield from (Entry(*row) for row in rows)
            last = (rows[-1][1], rows[-1][0])

    def entries_by_key(self) -> Iterator[Entry]:
        self.flush()
        last = ""
        while True:
            rows = self._rows(f"SELECT {COLUMNS} FROM {{s}}.objects WHERE target = %s AND key > %s ORDER BY key "
                              "LIMIT 1000", [self.target, last])
            if not rows:
                return
            yield from (Entry(*row) for row in rows)
            last = rows[-1][0]

    def for_tasks(self, task_ids: Iterable[int]) -> list[Entry]:
        self.flush()
        ids = list(task_ids)
        found: list[Entry] = []
        for start in range(0, len(ids), 1000):
            found += [Entry(*row) for row in self._rows(
                f"SELECT {COLUMNS} FROM {{s}}.objects WHERE target = %s AND task_id = ANY(%s)",
                [self.target, ids[start:start + 1000]])]
        return found

    def count(self) -> int:
        self.flush()
        return self._rows("SELECT count(*) FROM {s}.objects WHERE target = %s", [self.target])[0][0]

    def count_by_project(self) -> dict[int | None, int]:
        self.flush()
        return dict(self._rows("SELECT project_id, count(*) FROM {s}.objects WHERE target = %s GROUP BY project_id",
                               [self.target]))

    # -------------------------------------------------------------- writes (after the store acked)

    def _commit(self, pending: list[tuple]) -> None:
        """One statement per kind (not per record), in one transaction."""
        puts, fingerprints, deletes = _collapse(pending)
        s = self._s
        params: dict[str, Any] = {"target": self.target, "fence": self.fence}

        def held(project: str) -> str:
            # Replica mode: a record is committed only while its project's lease is this process's.
            if self.fence is None:
                return "TRUE"
            return (f"({project} IS NULL OR EXISTS (SELECT 1 FROM {s}.leases l WHERE l.target = %(target)s AND "
                    f"l.project_id = {project} AND l.holder = %(fence)s AND l.expires_at > now()))")

        with self.conn.transaction():
            if deletes:
                params["keys"] = deletes
                cur = self.conn.execute(f"DELETE FROM {s}.objects o WHERE o.target = %(target)s AND "
                                        f"o.key = ANY(%(keys)s) AND {held('o.project_id')}", params)
                if self.fence is not None and cur.rowcount < len(deletes):  # the rest: another's records
                    self.fenced += self.conn.execute(f"SELECT count(*) FROM {s}.objects WHERE target = %(target)s "
                                                     "AND key = ANY(%(keys)s)", params).fetchone()[0]
            if fingerprints:
                params.update(keys=list(fingerprints), values=list(fingerprints.values()))
                self.conn.execute(f"UPDATE {s}.objects o SET fingerprint = v.fingerprint FROM unnest(%(keys)s::text[], "
                                  "%(values)s::text[]) AS v(key, fingerprint) WHERE o.target = %(target)s AND "
                                  f"o.key = v.key AND {held('o.project_id')}", params)
            if puts:
                names = ("key", "task_id", "project_id", "sha256", "size", "written_at", "fingerprint", "etag")
                columns = {name: [row[i] for row in puts] for i, name in enumerate(names)}
                cur = self.conn.execute(
                    f"INSERT INTO {s}.objects (target, key, task_id, project_id, sha256, size, written_at, "
                    "fingerprint, etag) SELECT %(target)s, v.* FROM unnest(%(key)s::text[], %(task_id)s::bigint[], "
                    "%(project_id)s::bigint[], %(sha256)s::text[], %(size)s::bigint[], %(written_at)s::float8[], "
                    "%(fingerprint)s::text[], %(etag)s::text[]) AS v(key, task_id, project_id, sha256, size, "
                    f"written_at, fingerprint, etag) WHERE {held('v.project_id')} "
                    "ON CONFLICT (target, key) DO UPDATE SET task_id = excluded.task_id, "
                    "project_id = excluded.project_id, sha256 = excluded.sha256, size = excluded.size, "
                    "written_at = excluded.written_at, fingerprint = excluded.fingerprint, etag = excluded.etag",
                    {**params, **columns})
                self.fenced += len(puts) - cur.rowcount

    def target_id(self) -> str | None:
        rows = self._rows("SELECT value FROM {s}.meta WHERE name = %s", [f"target_id {self.target}"])
        return rows[0][0] if rows else None

    def set_target_id(self, target_id: str) -> None:
        self.flush()
        self.conn.execute(f"INSERT INTO {self._s}.meta (name, value) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                          "SET value = excluded.value", [f"target_id {self.target}", target_id])

    def forget_all(self) -> None:
        self.flush()
        self.conn.execute(f"DELETE FROM {self._s}.objects WHERE target = %s", [self.target])

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.conn.close()


def _collapse(pending: list[tuple]) -> tuple[list[tuple], dict[str, str], list[str]]:
    """The pending records as their net effect per key (what applying them in order leaves):
    the puts (rows), fingerprint updates of existing rows (key -> fingerprint), the deletions."""
    final: dict[str, tuple] = {}
    for item in pending:
        kind, key = item[0], item[1]
        previous = final.get(key)
        if kind == "fingerprint" and previous is not None and previous[0] != "fingerprint":
            if previous[0] == "put":  # ("put", key, task, project, sha256, size, time, fingerprint, etag)
                final[key] = (*previous[:7], item[2], previous[8])
            continue  # a fingerprint of a deleted record: nothing to update
        final[key] = item
    puts = [item[1:] for item in final.values() if item[0] == "put"]
    fingerprints = {key: item[2] for key, item in final.items() if item[0] == "fingerprint"}
    deletes = [key for key, item in final.items() if item[0] == "delete"]
    return puts, fingerprints, deletes
