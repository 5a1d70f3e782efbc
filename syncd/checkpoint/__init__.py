"""Checkpoints: the interface (``base``) and its backends, chosen by the ``state`` setting."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from syncd.checkpoint.base import Checkpoint, Entry


def default_state_path(target_url: str) -> Path:
    """``$XDG_STATE_HOME/syncd/<target>-<hash>.sqlite3``: one state file per target."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "syncd"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", target_url).strip("-")[:60] or "target"
    digest = hashlib.sha256(target_url.encode()).hexdigest()[:10]
    return base / f"{readable}-{digest}.sqlite3"


def open_checkpoint(state: str | os.PathLike[str] | None, target_url: str) -> Checkpoint:
    """The checkpoint of the target ``target_url``: in the SQLite file ``state``, or the
    per-target default file when ``state`` is None."""
    from syncd.checkpoint.sqlite import SqliteCheckpoint

    path = Path(state).expanduser() if state else default_state_path(target_url)
    return SqliteCheckpoint(path, target_url)


__all__ = ["Checkpoint", "Entry", "default_state_path", "open_checkpoint"]
