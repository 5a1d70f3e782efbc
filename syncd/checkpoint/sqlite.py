"""The checkpoint in a local SQLite file (the default): what syncd last wrote, per target and key.

A row is committed only after the store acknowledged the write (or the delete), so a crash at
any point leaves the checkpoint behind the target, never ahead of it: the next run rewrites
what it is unsure of and converges. The file holds keys and hashes only, never credentials.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from syncd.checkpoint.base import Entry, PendingRecords
from syncd.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    target     TEXT NOT NULL,
    key        TEXT NOT NULL,
    task_id    INTEGER NOT NULL,
    project_id INTEGER,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    written_at REAL NOT NULL,
    fingerprint TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (target, key)
);
CREATE INDEX IF NOT EXISTS objects_task_key ON objects (target, task_id, key);
DROP INDEX IF EXISTS objects_task;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added since the first version of the file, added to an older file when it is opened.
MIGRATIONS = {"etag": "ALTER TABLE objects ADD COLUMN etag TEXT NOT NULL DEFAULT ''"}

COLUMNS = "key, task_id, project_id, sha256, size, fingerprint, etag"


class SqliteCheckpoint(PendingRecords):
    """Durable per-key state for one target. Not thread-safe: use it from one thread."""

    def __init__(self, path: Path, target: str):
        self.path = path
        self.target = target
        self.db: sqlite3.Connection | None = None
        super().__init__()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_path = path.with_name(path.name + ".lock")
            self._lock_file = os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600), "r+")
            os.fchmod(self._lock_file.fileno(), 0o600)  # whatever the umask
        except OSError as exc:
            raise ConfigError(f"state {path}: cannot create it ({exc.strerror}); "
                              "set state: to a writable path") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise ConfigError(f"state {path} is in use by another syncd process; "
                              "run one syncd per target (or give each its own state:)") from None
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # WAL + synchronous=NORMAL survives a killed process; after a power loss the
            # last transactions may be lost, which only means rewriting those objects.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(objects)")}
            for column, statement in MIGRATIONS.items():
                if column not in columns:
                    self.db.execute(statement)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ConfigError(f"state {path} is not a usable SQLite file ({exc}); "
                              "move it away to start with a fresh state (use --verify-remote "
                              "to rebuild it from the target)") from None

    # -------------------------------------------------------------- reads

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        self.flush()  # reads must see the writes still buffered for group commit
        keys = list(keys)
        found: dict[str, Entry] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self.db.execute(
                    f"SELECT {COLUMNS} FROM objects "
                    f"WHERE target = ? AND key IN ({marks})", [self.target, *chunk]):
                found[row[0]] = Entry(*row)
        return found

    def entries(self, project_ids: Iterable[int] = ()) -> Iterator[Entry]:
        """Every entry (of these projects) by task id then key, read 1,000 at a time (an index
        on (target, task_id, key) makes each page a range scan: memory stays flat)."""
        projects = list(project_ids)
        sql = f"SELECT {COLUMNS} FROM objects WHERE target = ? AND (task_id, key) > (?, ?)"
        if projects:
            sql += f" AND project_id IN ({', '.join('?' for _ in projects)})"
        last: tuple[int, str] = (-(2**63), "")
        while True:
            self.flush()  # reads must see the writes still buffered for group commit
            rows = self.db.execute(sql + " ORDER BY task_id, key LIMIT 1000",
                                   [self.target, *last, *projects]).fetchall()
            if not rows:
                return
            yield from (Entry(*row) for row in rows)
            last = (rows[-1][1], rows[-1][0])

    def entries_by_key(self) -> Iterator[Entry]:
        """Every entry in key order (by code point, as stores list), read 1,000 at a time."""
        self.flush()
        last = ""
        while True:
            rows = self.db.execute(f"SELECT {COLUMNS} FROM objects WHERE target = ? AND key > ? ORDER BY key "
                                   "LIMIT 1000", (self.target, last)).fetchall()
            if not rows:
                return
            yield from (Entry(*row) for row in rows)
            last = rows[-1][0]

    def for_tasks(self, task_ids: Iterable[int]) -> list[Entry]:
        self.flush()
        ids = list(task_ids)
        found: list[Entry] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found += [Entry(*row) for row in self.db.execute(
                f"SELECT {COLUMNS} FROM objects WHERE target = ? AND task_id IN ({', '.join('?' for _ in chunk)})",
                [self.target, *chunk])]
        return found

    def count(self) -> int:
        self.flush()
        return self.db.execute("SELECT COUNT(*) FROM objects WHERE target = ?", (self.target,)).fetchone()[0]

    def count_by_project(self) -> dict[int | None, int]:
        self.flush()
        return dict(self.db.execute("SELECT project_id, COUNT(*) FROM objects WHERE target = ? GROUP BY project_id",
                                    (self.target,)).fetchall())

    # -------------------------------------------------------------- writes (after the store acked)

    def _commit(self, pending: list[tuple]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for item in pending:
                if item[0] == "put":
                    self.db.execute(
                        "INSERT INTO objects (target, key, task_id, project_id, sha256, size, written_at, "
                        "fingerprint, etag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (target, key) DO UPDATE "
                        "SET task_id = excluded.task_id, project_id = excluded.project_id, "
                        "sha256 = excluded.sha256, size = excluded.size, written_at = excluded.written_at, "
                        "fingerprint = excluded.fingerprint, etag = excluded.etag",
                        (self.target, *item[1:]))
                elif item[0] == "fingerprint":
                    self.db.execute("UPDATE objects SET fingerprint = ? WHERE target = ? AND key = ?",
                                    (item[2], self.target, item[1]))
                else:
                    self.db.execute("DELETE FROM objects WHERE target = ? AND key = ?", (self.target, item[1]))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def target_id(self) -> str | None:
        """The id of the target's marker when this checkpoint was last in step with it."""
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (f"target_id {self.target}",)).fetchone()
        return row[0] if row else None

    def set_target_id(self, target_id: str) -> None:
        self.flush()
        self.db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                        "value = excluded.value", (f"target_id {self.target}", target_id))

    def forget_all(self) -> None:
        """Drop every row of this target (``--verify-remote`` rebuilds them from the store)."""
        self.flush()
        self.db.execute("DELETE FROM objects WHERE target = ?", (self.target,))

    def close(self) -> None:
        try:
            if self.db is not None:
                self.flush()
                self.db.close()
                self.db = None
        finally:
            if not self._lock_file.closed:
                self._lock_file.close()
