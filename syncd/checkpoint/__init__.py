"""Checkpoints: the interface (``base``) and its backends, chosen by the ``state`` setting."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from syncd.checkpoint.base import Checkpoint, Entry


def default_state_path(identity: str) -> Path:
    """``$XDG_STATE_HOME/syncd/<target>-<hash>.sqlite3``: one state file per target, its name
    readable from the target's URL, its hash from the whole identity (endpoint or account too)."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "syncd"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", identity.split("?", 1)[0]).strip("-")[:60] or "target"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return base / f"{readable}-{digest}.sqlite3"


STATE_URL_ENV = "SYNCD_STATE_URL"  # the state, when the config names none


def is_postgres(state: str | os.PathLike[str] | None) -> bool:
    return isinstance(state, str) and state.lower().startswith(("postgresql://", "postgres://"))


def state_location(state: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """``state`` as configured, else ``$SYNCD_STATE_URL``, else None (the default file)."""
    return state or os.environ.get(STATE_URL_ENV) or None


def open_checkpoint(state: str | os.PathLike[str] | None, identity: str, *, schema: str = "syncd",
                    fence: str | None = None) -> Checkpoint:
    """The checkpoint of the target whose ``Store.identity`` is ``identity``: in PostgreSQL when
    ``state`` is a ``postgresql://`` URL (in ``schema``; ``fence``: see PostgresCheckpoint), else
    in the SQLite file ``state``, or the per-target default file when ``state`` is None."""
    state = state_location(state)
    if is_postgres(state):
        from syncd.checkpoint.postgresql import PostgresCheckpoint

        return PostgresCheckpoint(str(state), identity, schema, fence)
    from syncd.checkpoint.sqlite import SqliteCheckpoint

    path = Path(state).expanduser() if state else default_state_path(identity)
    return SqliteCheckpoint(path, identity)


def scratch_copy(checkpoint: Checkpoint, directory: str | os.PathLike[str]) -> Checkpoint:
    """A copy of ``checkpoint`` in a new SQLite file in ``directory``, for a dry run: whatever
    the run changes, the real checkpoint stays as it was."""
    from syncd.checkpoint.sqlite import SqliteCheckpoint

    copy = SqliteCheckpoint(Path(directory) / "dry-run-state.sqlite3", checkpoint.target)
    for entry in checkpoint.entries_by_key():
        copy.record_put(entry.key, entry.task_id, entry.project_id, entry.sha256, entry.size, entry.fingerprint,
                        entry.etag)
    target_id = checkpoint.target_id()
    if target_id is not None:
        copy.set_target_id(target_id)
    copy.flush()
    return copy


__all__ = ["Checkpoint", "Entry", "default_state_path", "is_postgres", "open_checkpoint", "scratch_copy",
           "state_location"]
