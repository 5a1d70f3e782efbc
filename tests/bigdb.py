"""Make a larger Label Studio database from the fixture by copying its tasks under new ids."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

OFFSET = 1000  # the fixture's ids are all below this


def multiply(source: Path, dest: Path, copies: int) -> int:
    """Write ``dest``: the fixture plus ``copies`` copies of every task with its rows.
    Returns the number of labeled tasks."""
    shutil.copyfile(source, dest)
    with sqlite3.connect(dest) as conn:
        for table, fk in (("task", None), ("task_completion", "task_id"), ("prediction", "task_id")):
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            for k in range(1, copies + 1):
                exprs = []
                for c in cols:
                    if c in ("id", fk) or (table == "task_completion" and c == "parent_prediction_id"):
                        exprs.append(f'"{c}" + {k * OFFSET}')
                    elif c == "unique_id":
                        exprs.append(f"printf('%08d', {k}) || substr(unique_id, 9)")
                    else:
                        exprs.append(f'"{c}"')
                conn.execute(f'INSERT INTO "{table}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) '
                             f'SELECT {", ".join(exprs)} FROM "{table}" WHERE id < {OFFSET}')
        return conn.execute("SELECT COUNT(*) FROM task t WHERE EXISTS "
                            "(SELECT 1 FROM task_completion c WHERE c.task_id = t.id)").fetchone()[0]
