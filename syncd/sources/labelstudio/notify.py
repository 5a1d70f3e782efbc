"""PostgreSQL's change feed: optional LISTEN/NOTIFY triggers, for instant wake-up of ``syncd run``.

Without them syncd polls and never writes to Label Studio's database. They are installed only
by an explicit ``syncd install-triggers --db URL`` (which needs a role allowed to create
functions and triggers on Label Studio's tables) and removed by ``syncd remove-triggers``.
Each trigger only sends ``pg_notify('syncd_changes', <task id>)``: it changes no data, and a
notification is delivered only when the transaction commits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from syncd.errors import ConfigError, SourceError, one_line
from syncd.sources.labelstudio.database import mask_url

log = logging.getLogger("syncd")

CHANNEL = "syncd_changes"
FUNCTION = "syncd_notify_change"
TABLES = {"task": "id", "task_completion": "task_id", "prediction": "task_id", "tasks_annotationdraft": "task_id"}

FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed record;
    task_id bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    IF TG_TABLE_NAME = 'task' THEN task_id := changed.id; ELSE task_id := changed.task_id; END IF;
    PERFORM pg_notify('{CHANNEL}', coalesce(task_id::text, ''));
    RETURN NULL;
END
$$;
"""


def _trigger_name(table: str) -> str:
    return f"syncd_notify_{table}"


def _connect_rw(url: str):
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("install-triggers/remove-triggers work on PostgreSQL only (SQLite is watched "
                          "through its files); pass --db postgresql://...")
    try:
        import psycopg
    except ImportError:
        raise ConfigError("the PostgreSQL driver is not installed; run: pip install 'labelstudio-syncd[postgres]'") \
            from None
    try:
        return psycopg.connect(url, connect_timeout=10, application_name="syncd-triggers")
    except psycopg.Error as exc:
        raise SourceError(f"cannot connect to PostgreSQL at {mask_url(url)}: {one_line(exc)}") \
            from None


def install(url: str) -> list[str]:
    """Create the notify function and one trigger per table; returns the tables done."""
    import psycopg

    done = []
    with _connect_rw(url) as conn:
        try:
            with conn.transaction():
                conn.execute(FUNCTION_SQL)
                for table in TABLES:
                    conn.execute(f'DROP TRIGGER IF EXISTS {_trigger_name(table)} ON "{table}"')
                    conn.execute(f'CREATE TRIGGER {_trigger_name(table)} AFTER INSERT OR UPDATE OR DELETE '
                                 f'ON "{table}" FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()')
                    done.append(table)
        except psycopg.Error as exc:
            raise SourceError(f"cannot install triggers at {mask_url(url)}: {one_line(exc)} "
                              "(the role needs to own Label Studio's tables)") from None
    return done


def remove(url: str) -> None:
    import psycopg

    with _connect_rw(url) as conn:
        try:
            with conn.transaction():
                for table in TABLES:
                    conn.execute(f'DROP TRIGGER IF EXISTS {_trigger_name(table)} ON "{table}"')
                conn.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
        except psycopg.Error as exc:
            raise SourceError(f"cannot remove triggers at {mask_url(url)}: {one_line(exc)}") \
                from None


def installed(db) -> bool:
    """Whether the triggers are present (checked through syncd's read-only connection)."""
    rows = db.query("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'syncd_notify_%' AND NOT tgisinternal")
    return rows[0][0] >= len(TABLES)


class Listener:
    """LISTENs on a separate connection; every notification calls ``on_task`` with its task id,
    and the end of the connection calls ``on_lost`` with why."""

    def __init__(self, url: str, on_task: Callable[[int], None], on_lost: Callable[[str], None]):
        import psycopg

        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="syncd-listen")
            self.conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            raise SourceError(f"cannot LISTEN at {mask_url(url)}: {one_line(exc)}") from None
        self.on_task = on_task
        self.on_lost = on_lost
        self.closed = False
        self._thread = threading.Thread(target=self._run, name="syncd-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for notify in self.conn.notifies():
                if notify.payload.isdigit():
                    self.on_task(int(notify.payload))
        except Exception as exc:  # noqa: BLE001 - the connection went away; the daemon notices and reconnects
            log.debug("LISTEN connection ended: %s", exc)
        if not self.closed:
            self.on_lost("the LISTEN connection to PostgreSQL was lost; reconnecting")

    def close(self) -> None:
        self.closed = True
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass
