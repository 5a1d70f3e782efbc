"""Read-only access to Label Studio's database (SQLite or PostgreSQL).

syncd never writes to Label Studio's database. SQLite is opened through a ``mode=ro`` URI and
read in short transactions (one per batch), so a reader never holds the shared lock long
enough to block Label Studio's writer. PostgreSQL sessions are set read-only, and every
batch runs in its own short ``READ ONLY`` transaction.

Label Studio's schema differs between versions, so column lists come from introspection, not
from a hard-coded copy.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

from syncd.errors import ConfigError, SourceError, one_line

# Tables a Label Studio database always has; their absence means "not Label Studio".
REQUIRED_TABLES = ("task", "task_completion", "project")


@dataclass
class Column:
    name: str
    kind: str  # "json", "datetime", "bool", "uuid" or "plain"


@dataclass
class Database:
    """An open, read-only connection and what introspection found."""

    url: str  # with any password masked, safe to print
    dialect: str  # "sqlite" or "postgresql"
    conn: Any
    connect_url: str = field(default="", repr=False)  # as given, password included: for a second connection
    tables: set[str] = field(default_factory=set)
    _columns: dict[str, dict[str, Column]] = field(default_factory=dict)

    def columns(self, table: str) -> dict[str, Column]:
        """Columns of ``table`` by name (empty when the table does not exist)."""
        if table not in self._columns:
            self._columns[table] = _introspect(self, table) if table in self.tables else {}
        return self._columns[table]

    def has(self, table: str, column: str) -> bool:
        return column in self.columns(table)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one SELECT (written with ``?`` placeholders) and return all rows.

        SQLite text that is not UTF-8 does not fail the query: it is read again with U+FFFD in
        place of the bad bytes, as ``NotUtf8`` strings, so the caller can tell which values."""
        try:
            return self._query(sql, params)
        except sqlite3.OperationalError as exc:
            if "Could not decode to UTF-8" not in str(exc):
                raise
        self.conn.text_factory = _lenient_text
        try:
            return self._query(sql, params)
        finally:
            self.conn.text_factory = str

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        cur = self.conn.cursor()
        try:
            if params:
                cur.execute(sql, tuple(params))
            else:  # psycopg then takes a literal % as it is
                cur.execute(sql)
            return cur.fetchall()
        finally:
            cur.close()

    @contextmanager
    def snapshot(self) -> Iterator[Database]:
        """A short read transaction: the queries inside see one consistent state."""
        if self.dialect == "sqlite":
            self.conn.execute("BEGIN")
            try:
                yield self
            finally:
                self.conn.execute("COMMIT")
        else:
            with self.conn.transaction():
                yield self

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection must not mask the real error
            pass


class MissingDatabase(SourceError):
    """The SQLite database file is not there."""


class NotUtf8(str):
    """Text read from bytes that are not UTF-8, with U+FFFD in place of the bad bytes."""


def _lenient_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return NotUtf8(data.decode("utf-8", "replace"))


def mask_url(url: str) -> str:
    """The URL with its password replaced, for messages and logs (also a password that holds an
    unencoded ``@``: the host follows the last ``@``)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")  # masking too much (an "@" in the path) is the safe side
    user, colon, _password = userinfo.partition(":")
    if not sep or not at or not colon or "/" in user:
        return url
    return f"{scheme}://{user}:***@{host}"


# ---------------------------------------------------------------- resolving the URL

def _ls_env(name: str) -> str | None:
    # Label Studio's get_env() looks for LABEL_STUDIO_<name>, then HEARTEX_<name>, then <name>.
    for candidate in (f"LABEL_STUDIO_{name}", f"HEARTEX_{name}", name):
        value = os.environ.get(candidate)
        if value is not None and value != "":
            return value
    return None


def label_studio_data_dir() -> Path:
    """Label Studio's data directory, as Label Studio itself computes it."""
    base = os.environ.get("LABEL_STUDIO_BASE_DATA_DIR")
    if base:
        return Path(base).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "label-studio"
    if sys.platform.startswith("win"):
        root = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(root) / "label-studio" / "label-studio"
    root = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(root) / "label-studio"


def default_db_url() -> str:
    """The database Label Studio would use in this environment (its own env vars)."""
    engine = (_ls_env("DJANGO_DB") or "sqlite").lower()
    if engine in ("default", "postgresql", "postgres"):
        user = _ls_env("POSTGRE_USER") or "postgres"
        password = _ls_env("POSTGRE_PASSWORD") or "postgres"
        host = _ls_env("POSTGRE_HOST") or "localhost"
        port = _ls_env("POSTGRE_PORT") or "5432"
        name = _ls_env("POSTGRE_NAME") or "postgres"
        return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(name)}"
    if engine == "sqlite":
        name = _ls_env("DATABASE_NAME") or str(label_studio_data_dir() / "label_studio.sqlite3")
        return f"sqlite:///{Path(name).expanduser().absolute()}"
    raise ConfigError(f"DJANGO_DB={engine!r} is not supported; syncd reads Label Studio on SQLite "
                      "or PostgreSQL (set db: in the config to choose explicitly)")


# ---------------------------------------------------------------- connecting

def connect(url: str | None) -> Database:
    """Open Label Studio's database read-only and check that it is Label Studio's."""
    url = url or default_db_url()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if not scheme and url.endswith((".sqlite3", ".sqlite", ".db")):
        url, scheme = f"sqlite:///{Path(url).expanduser().absolute()}", "sqlite"
    if scheme == "sqlite":
        db = _connect_sqlite(url)
    elif scheme in ("postgresql", "postgres", "pgsql"):
        db = _connect_postgres(url)
    else:
        raise ConfigError(f"db {mask_url(url)!r}: unknown database URL scheme; use "
                          "sqlite:///path/to/label_studio.sqlite3 or postgresql://user:pw@host:port/db")
    missing = [t for t in REQUIRED_TABLES if t not in db.tables]
    if missing:
        db.close()
        raise SourceError(f"database {db.url} is not a Label Studio database (no table "
                          f"{', '.join(missing)}); point db: at Label Studio's label_studio.sqlite3 "
                          "or its PostgreSQL database")
    return db


def sqlite_path(url: str) -> Path:
    parsed = urlparse(url)
    path = unquote(parsed.path)
    if parsed.netloc and parsed.netloc != "localhost":
        # sqlite://relative/path is a common slip for sqlite:///relative/path
        path = parsed.netloc + path
    elif path.startswith("//"):
        path = path[1:]
    elif parsed.netloc == "" and path.startswith("/") and not url.startswith("sqlite:////"):
        # sqlite:///label_studio.sqlite3 is relative (SQLAlchemy's convention) only when the
        # file is not found at the absolute path; prefer the absolute reading first.
        if not Path(path).exists() and Path(path[1:]).exists():
            path = path[1:]
    return Path(path).expanduser()


def _connect_sqlite(url: str) -> Database:
    path = sqlite_path(url)
    shown = f"sqlite:///{path}"
    if not path.exists():
        raise MissingDatabase(f"database file {path} does not exist; check db: (Label Studio keeps it "
                              "in its data dir, see LABEL_STUDIO_BASE_DATA_DIR)")
    if path.is_dir():
        raise SourceError(f"database {path} is a directory; point db: at the label_studio.sqlite3 file")
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                               timeout=30.0)
        # Never wait long on Label Studio's writer and never become one.
        conn.execute("PRAGMA query_only = ON")
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"database {path} cannot be read as SQLite ({exc}); "
                          "point db: at Label Studio's label_studio.sqlite3") from None
    return Database(url=shown, dialect="sqlite", conn=conn, connect_url=url, tables={r[0] for r in rows})


def _connect_postgres(url: str) -> Database:
    try:
        import psycopg
        from psycopg.types.string import TextLoader
    except ImportError:
        raise ConfigError("db is PostgreSQL but the driver is not installed; run: "
                          "pip install 'labelstudio-syncd[postgres]'") from None
    shown = mask_url(url)
    if url.startswith(("postgres://", "pgsql://")):
        url = "postgresql://" + url.split("://", 1)[1]
    original = url
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10,
                               options="-c default_transaction_read_only=on",
                               application_name="syncd")
        conn.read_only = True
        # JSON is parsed by the source, value by value, so one value that cannot be read (nested
        # deeper than the parser goes) fails its task only, not the whole batch.
        for name in ("json", "jsonb"):
            conn.adapters.register_loader(name, TextLoader)
        rows = conn.execute("SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = current_schema()").fetchall()
    except psycopg.Error as exc:
        reason = one_line(exc)
        raise SourceError(f"cannot connect to PostgreSQL at {shown}: {reason}; check the URL, "
                          "credentials and that the server is up") from None
    return Database(url=shown, dialect="postgresql", conn=conn, connect_url=original, tables={r[0] for r in rows})


def _introspect(db: Database, table: str) -> dict[str, Column]:
    columns: dict[str, Column] = {}
    if db.dialect == "sqlite":
        create_sql = db.query("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,))[0][0]
        for _cid, name, decl, *_ in db.query(f'PRAGMA table_info("{table}")'):
            decl = (decl or "").lower()
            if f'json_valid("{name}")' in create_sql.lower():
                kind = "json"
            elif decl in ("datetime", "timestamp"):
                kind = "datetime"
            elif decl in ("bool", "boolean"):
                kind = "bool"
            elif name == "unique_id":
                kind = "uuid"
            else:
                kind = "plain"
            columns[name] = Column(name, kind)
    else:
        rows = db.query("SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = ? "
                        "ORDER BY ordinal_position", (table,))
        for name, data_type in rows:
            kind = {"jsonb": "json", "json": "json", "timestamp with time zone": "datetime",
                    "timestamp without time zone": "datetime", "boolean": "bool",
                    "uuid": "uuid"}.get(data_type, "plain")
            columns[name] = Column(name, kind)
    return columns


# ---------------------------------------------------------------- value conversion

def format_timestamp(value: Any) -> str | None:
    """A timestamp as Label Studio's API prints it: ISO 8601 in UTC with a ``Z``.

    SQLite holds naive UTC text (``2026-11-24 23:22:19.635151``), PostgreSQL an aware
    datetime; Django REST framework prints both as ``2026-11-24T23:22:19.635151Z``
    (no fraction when the microseconds are zero).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.isoformat() + "Z"
    return str(value)



def row_errors() -> tuple[type[BaseException], ...]:
    """What reading a row can raise that concerns that row only (a value the driver cannot
    convert), not the connection."""
    errors: list[type[BaseException]] = [ValueError, OverflowError, RecursionError, sqlite3.DataError]
    psycopg = sys.modules.get("psycopg")  # (not imported: no PostgreSQL connection was made)
    if psycopg is not None:
        errors.append(psycopg.DataError)
    return tuple(errors)


def driver_errors() -> tuple[type[BaseException], ...]:
    """The exception classes a lost or broken database connection raises (psycopg is imported
    only to connect: importing it costs a tenth of a second at every start)."""
    errors: list[type[BaseException]] = [sqlite3.Error]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        errors.append(psycopg.Error)
    return tuple(errors)
