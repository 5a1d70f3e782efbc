#!/usr/bin/env python3
"""Do syncd's documents and Label Studio's own JSON export cover the same tasks, with the same content?

    python bench/ls_export_check.py LS_EXPORT_DIR SYNCD_TARGET [--samples-per-project 6]

LS_EXPORT_DIR holds ``project-<id>.json`` (bench/ls_export_runner.py), SYNCD_TARGET the
``<task_id>.json`` of a ``syncd resync`` with the default key template. Prints one line of JSON:
tasks on each side, ids found on one side only, and a few tasks per project compared as JSON
values after removing the differences syncd documents (syncd/document.py's docstring):
``predictions`` as full objects (Label Studio's export: bare ids), and no ``created_ago`` in
drafts and predictions. Informative: the exit code is 0 whatever it finds (1: unreadable input).

Each project file is parsed on its own and only ids and the sampled tasks are kept, so memory
stays that of the largest project.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def without_documented_differences(task: dict) -> dict:
    """The task as both sides should print it: prediction ids, no ``created_ago``."""
    task = dict(task)
    task["predictions"] = [p["id"] if isinstance(p, dict) else p for p in task.get("predictions", [])]
    task["drafts"] = [{k: v for k, v in d.items() if k != "created_ago"} for d in task.get("drafts", [])]
    return task


def sample(tasks: list[dict], per_project: int) -> list[dict]:
    """First, middle and last task, and the first with drafts, predictions, a cancelled annotation."""
    picked = [tasks[0], tasks[len(tasks) // 2], tasks[-1]] if tasks else []
    for has in (lambda t: t.get("drafts"), lambda t: t.get("predictions"),
                lambda t: any(a.get("was_cancelled") for a in t.get("annotations", []))):
        first = next((t for t in tasks if has(t)), None)
        if first is not None:
            picked.append(first)
    seen: dict[int, dict] = {}
    for t in picked:
        seen.setdefault(t["id"], t)
    return list(seen.values())[:per_project]


def check(ls_dir: Path, syncd_dir: Path, per_project: int = 6) -> dict:
    ls_ids: set[int] = set()
    compared = equal = 0
    differences: list[str] = []
    for path in sorted(ls_dir.glob("project-*.json")):
        with open(path, "rb") as f:
            tasks = json.load(f)
        ls_ids.update(t["id"] for t in tasks)
        for theirs in sample(tasks, per_project):
            ours_path = syncd_dir / f"{theirs['id']}.json"
            if not ours_path.exists():
                continue
            ours = json.loads(ours_path.read_bytes())
            compared += 1
            a, b = without_documented_differences(theirs), without_documented_differences(ours)
            if a == b and list(a) == list(b):
                equal += 1
            else:
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) or ["(key order)"]
                differences.append(f"task {theirs['id']}: {', '.join(keys)}")
        del tasks
    syncd_ids = {int(name[:-5]) for name in os.listdir(syncd_dir)
                 if name.endswith(".json") and name[:-5].isdigit()}
    return {"label_studio_tasks": len(ls_ids), "syncd_tasks": len(syncd_ids),
            "only_label_studio": sorted(ls_ids - syncd_ids)[:10], "only_syncd": sorted(syncd_ids - ls_ids)[:10],
            "compared": compared, "equal": equal, "differences": differences[:10]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ls_export_dir", type=Path)
    ap.add_argument("syncd_target", type=Path)
    ap.add_argument("--samples-per-project", type=int, default=6)
    a = ap.parse_args(argv)
    try:
        print(json.dumps(check(a.ls_export_dir, a.syncd_target, a.samples_per_project)))
    except (OSError, ValueError) as exc:
        print(f"ls_export_check: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
