"""Latency of `syncd run`: from an annotation committed to Label Studio's SQLite database to the
object in the target, on a 10k-task and a 100k-task database, in the same run.

    python bench/bench_latency.py                  # 10k and 100k tasks, 60 changes each
    python bench/bench_latency.py --sizes 2000 20000 --changes 30

Each change is made the way Label Studio makes it: the annotation row is updated and committed,
then, 50 ms later, the task row's updated_at in a second transaction. Latency is measured from the first
commit until the target object holds the new result (polled every millisecond). Goals:
p50 <= 1 s, p99 <= 2 s, and the 100k/10k latency ratio <= 1.5 (noticing a change must not cost
more in a bigger project).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_resync import cached_db  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit("syncd run exited early")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("syncd run did not become ready")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def notice_cost(db: Path) -> float:
    """Milliseconds syncd spends finding what changed after a wake-up (median of 20)."""
    sys.path.insert(0, str(REPO))
    from syncd.sources import open_source

    source = open_source(f"sqlite:///{db}")
    _, cursor = source.changes_since(None)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        # As after a wake-up: SQLite's data_version moved, so the tables are looked at.
        _, cursor = source.changes_since({**cursor, "version": None})
        times.append((time.perf_counter() - start) * 1000)
    source.close()
    return percentile(times, 0.5)


def measure(db_source: Path, changes: int, spacing: float, workdir: Path) -> dict:
    db = workdir / "label_studio.sqlite3"
    shutil.copyfile(db_source, db)
    out = workdir / "out"
    port = free_port()
    config = workdir / "syncd.yaml"
    config.write_text(json.dumps({"db": f"sqlite:///{db}", "target": str(out), "state": str(workdir / "s.sqlite3"),
                                  "listen": f"127.0.0.1:{port}"}))
    log = open(workdir / "syncd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "run", "--config", str(config)], cwd=REPO,
                            stdout=log, stderr=log)
    try:
        initial = wait_ready(port, proc, timeout=1800)
        conn = sqlite3.connect(db)
        rows = conn.execute("SELECT id, task_id FROM task_completion WHERE was_cancelled = 0").fetchall()
        rng = random.Random(7)
        # Label Studio stamps updated_at with its clock, so each change is the newest row; the
        # generated database's timestamps may lie ahead of ours, so count on from its newest.
        newest = conn.execute("SELECT MAX(updated_at) FROM task").fetchone()[0]
        base = datetime.fromisoformat(newest) + timedelta(seconds=1)
        latencies = []
        for i in range(changes):
            annotation_id, task_id = rng.choice(rows)
            marker = f"bench-{os.getpid()}-{i}"
            result = json.dumps([{"id": marker, "type": "textarea", "from_name": "x", "to_name": "y",
                                  "value": {"text": [marker]}}])
            stamp = (base + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f")
            with conn:
                conn.execute("UPDATE task_completion SET result = ?, updated_at = ? WHERE id = ?",
                             (result, stamp, annotation_id))
            committed = time.perf_counter()
            time.sleep(0.05)  # Label Studio saves the task row 40-60 ms after the annotation row
            with conn:
                conn.execute("UPDATE task SET updated_at = ? WHERE id = ?", (stamp, task_id))
            target = out / f"{task_id}.json"
            needle = marker.encode()
            while True:
                try:
                    if needle in target.read_bytes():
                        break
                except FileNotFoundError:
                    pass
                if time.perf_counter() - committed > 30:
                    raise SystemExit(f"change {i} did not arrive within 30 s")
                time.sleep(0.001)
            latencies.append(time.perf_counter() - committed)
            time.sleep(spacing)
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    return {"notice_ms": notice_cost(db), "initial_sync_s": initial,
            "p50_s": percentile(latencies, 0.5), "p99_s": percentile(latencies, 0.99),
            "max_s": max(latencies), "changes": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--changes", type=int, default=60)
    parser.add_argument("--spacing", type=float, default=0.3, help="seconds between changes")
    args = parser.parse_args()
    results = {}
    for size in args.sizes:
        db, _ = cached_db(size, 1, 4, 0.3, REPO / "examples" / "label_studio.sqlite3", False)
        with tempfile.TemporaryDirectory(prefix="syncd-latency-", dir=HERE / "out") as tmp:
            results[size] = measure(db, args.changes, args.spacing, Path(tmp))
        r = results[size]
        print(f"{size:>7} tasks: noticing query {r['notice_ms']:.1f} ms; "
              f"p50 {r['p50_s'] * 1000:7.1f} ms  p99 {r['p99_s'] * 1000:7.1f} ms  "
              f"max {r['max_s'] * 1000:7.1f} ms  ({r['changes']} changes; initial sync {r['initial_sync_s']:.1f} s)")
    small, large = (results[s] for s in args.sizes)
    print(f"ratio {args.sizes[1]}/{args.sizes[0]}: p50 {large['p50_s'] / small['p50_s']:.2f}x  "
          f"p99 {large['p99_s'] / small['p99_s']:.2f}x   (goals: p50 <= 1 s, p99 <= 2 s, ratio <= 1.5)")


if __name__ == "__main__":
    main()
