"""Several ``syncd run`` processes sharing one target (a PostgreSQL state): full-sync speed by
1, 2 and 3 processes, and how long a kill -9 leaves a project's changes waiting.

    python bench/bench_replicas.py                           # 100k tasks, 12 projects, 1 round
    python bench/bench_replicas.py --tasks 20000 --rounds 2

Needs PostgreSQL (``$SYNCD_TEST_PG``, default postgresql://postgres@127.0.0.1:5432/postgres; each
run gets a schema of its own, dropped at the end) and s3rver (``npm ci``): moto tops out near
300 PUTs a second here, which would make the server the bottleneck. s3rver runs with
``NODE_OPTIONS=--openssl-legacy-provider`` and its own keys (S3RVER/S3RVER), storing on disk.

Label Studio's database is ``bench/gen_db.py``'s SQLite file (cached under bench/out/), which
every process reads, as processes on one host would.

Each run starts N processes on an empty prefix and a new state schema, and measures the time from
the start until the checkpoint records every labeled task (objects/s), and the writes each
process made (their sum is the number of tasks when no project was synced twice). Runs of 1, 2
and 3 processes alternate within a round (the order reverses each round). Runs of 2 or more
processes then kill -9 the process holding a project, change one of that project's tasks the way
Label Studio does and time until its object holds the change (failover) and until the others
hold the victim's projects (takeover). Printed: one JSON line per run and a summary with the
machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_resync import cached_db  # noqa: E402

PG = os.environ.get("SYNCD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
S3RVER = REPO / "node_modules" / ".bin" / "s3rver"
KEYS = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "bench"
LEASE = 10.0  # the default lease_seconds: failover is measured as users would get it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_s3rver(directory: Path) -> tuple[subprocess.Popen, str]:
    if not S3RVER.exists():
        raise SystemExit("s3rver is not installed: run npm ci")
    port = free_port()
    env = {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}
    proc = subprocess.Popen([str(S3RVER), "--silent", "-d", str(directory), "-a", "127.0.0.1", "-p", str(port),
                             "--configure-bucket", BUCKET], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{endpoint}/{BUCKET}?list-type=2&max-keys=1", timeout=1)
            return proc, endpoint
        except urllib.error.HTTPError:
            return proc, endpoint  # answering (an unsigned request is refused)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("s3rver did not start")


class Process:
    """One ``syncd run``, its config and log in ``work``."""

    def __init__(self, work: Path, db: Path, target: str, endpoint: str, schema: str):
        self.port = free_port()
        work.mkdir(parents=True)
        config = work / "config.yaml"
        config.write_text(json.dumps({
            "db": f"sqlite:///{db}", "target": target, "state": PG, "state_schema": schema,
            "lease_seconds": LEASE, "listen": f"127.0.0.1:{self.port}", "s3": {"endpoint_url": endpoint},
            "audit_interval": 0}))
        self.log = work / "syncd.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "syncd", "run", "--config", str(config)], cwd=REPO,
                                     env={**os.environ, **KEYS}, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "wb"))  # noqa: SIM115

    def metric(self, name: str) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return 0.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))

    def holder(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        line = next(x for x in text.splitlines() if x.startswith("syncd_process_info{"))
        return line.split('"')[1]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def pg(sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def wait_for(check, timeout: float, what: str, interval: float = 0.1) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if check():
            return time.perf_counter() - start
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def labeled_tasks(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(DISTINCT task_id) FROM task_completion").fetchone()[0]


def change_a_task(db: Path, project: int) -> int:
    """Change an annotation of a task of ``project`` as Label Studio does (the annotation and its
    task's updated_at); the task's id."""
    now = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime())
    with sqlite3.connect(db) as conn:
        annotation, task = conn.execute("SELECT c.id, c.task_id FROM task_completion c JOIN task t ON t.id = "
                                        "c.task_id WHERE t.project_id = ? ORDER BY c.id LIMIT 1",
                                        (project,)).fetchone()
        conn.execute("UPDATE task_completion SET lead_time = coalesce(lead_time, 0) + 1, updated_at = ? "
                     "WHERE id = ?", (now, annotation))
        conn.execute("UPDATE task SET updated_at = ? WHERE id = ?", (now, task))
    return task


def s3_doc(endpoint: str, key: str) -> dict | None:
    """The object's JSON, or None while it cannot be read whole: s3rver stores an object by
    writing its file in place, so a GET during a PUT may end short (a server's limit, not syncd's:
    syncd's PUTs are single requests)."""
    import boto3
    import botocore.exceptions

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="S3RVER", aws_secret_access_key="S3RVER",
                          region_name="us-east-1")
    try:
        return json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, ValueError):
        return None


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a live process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(n: int, db: Path, tasks: int, server: subprocess.Popen, endpoint: str, work: Path) -> dict:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    prefix = f"run-{n}-{uuid.uuid4().hex[:6]}"
    processes = [Process(work / f"{prefix}-{i}", db, f"s3://{BUCKET}/{prefix}", endpoint, schema) for i in range(n)]
    try:
        def recorded() -> int:
            try:
                return pg(f'SELECT count(*) FROM "{schema}".objects')[0][0]
            except Exception:  # noqa: BLE001 - the schema is created by the first process
                return 0

        def check_alive() -> None:
            for p in processes:
                if p.proc.poll() is not None:
                    raise SystemExit(f"syncd run exited:\n{p.log.read_text()[-3000:]}")

        def done() -> bool:
            check_alive()
            return recorded() >= tasks

        server_cpu = cpu_seconds(server.pid)
        seconds = wait_for(done, 3600, f"{tasks} objects recorded", interval=0.5)
        syncd_cpu = sum(cpu_seconds(p.proc.pid) for p in processes)
        server_cpu = cpu_seconds(server.pid) - server_cpu
        # The written counters move when a pass ends, a moment after its last record.
        writes: list[float] = []

        def passes_ended() -> bool:
            writes[:] = [p.metric("syncd_objects_written_total") for p in processes]
            return sum(writes) >= tasks

        wait_for(passes_ended, 60, "the passes to end", interval=0.5)
        result = {"processes": n, "objects": tasks, "seconds": round(seconds, 1),
                  "objects_per_s": round(tasks / seconds), "writes_per_process": writes,
                  "writes_total": sum(writes), "syncd_cpu_ms_per_object": round(syncd_cpu * 1000 / tasks, 2),
                  "s3rver_cpu_ms_per_object": round(server_cpu * 1000 / tasks, 2)}
        if n >= 2:
            result.update(failover(processes, db, schema, endpoint, prefix))
        return result
    finally:
        for p in processes:
            p.stop()
        pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def failover(processes: list[Process], db: Path, schema: str, endpoint: str, prefix: str) -> dict:
    victim = processes[0]
    name = victim.holder()
    projects = [r[0] for r in pg(f'SELECT project_id FROM "{schema}".leases WHERE holder = %s AND project_id > 0 '
                                 "ORDER BY project_id", (name,))]
    victim.stop(signal.SIGKILL)
    killed = time.perf_counter()
    task = change_a_task(db, projects[0])
    key = f"{prefix}/{task}.json"
    readable: list[dict] = []
    wait_for(lambda: readable.append(s3_doc(endpoint, key)) or readable[-1] is not None, 30, f"{key} readable")
    lead = readable[-1]["annotations"][0].get("lead_time")

    def changed() -> bool:
        doc = s3_doc(endpoint, key)
        return doc is not None and doc["annotations"][0].get("lead_time") != lead

    wait_for(changed, 120, f"the change of task {task} after the kill", interval=0.2)
    change_seconds = time.perf_counter() - killed

    def taken() -> bool:
        rows = pg(f'SELECT project_id, holder FROM "{schema}".leases WHERE project_id = ANY(%s) AND '
                  "expires_at > now()", (projects,))
        return len(rows) == len(projects) and all(holder != name for _, holder in rows)

    wait_for(taken, 120, "the victim's projects taken over")
    return {"victim_projects": projects, "failover_change_s": round(change_seconds, 1),
            "takeover_s": round(time.perf_counter() - killed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 3], help="process counts to run")
    args = parser.parse_args()

    db, _ = cached_db(args.tasks, 1, args.projects, 0.3, REPO / "examples" / "label_studio.sqlite3", False)
    tasks = labeled_tasks(db)
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-replicas-"))
    server, endpoint = start_s3rver(work / "s3rver")
    load_start = os.getloadavg()
    results = []
    try:
        for round_no in range(args.rounds):
            for n in (args.counts if round_no % 2 == 0 else list(reversed(args.counts))):
                result = run(n, db, tasks, server, endpoint, work)
                result = {"round": round_no + 1, **result, "load": os.getloadavg()[0]}
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    base = {r["round"]: r["objects_per_s"] for r in results if r["processes"] == min(args.counts)}
    summary = {"tasks": tasks, "projects": args.projects, "load_start": load_start, "load_end": os.getloadavg(),
               "speedup_by_round": [{"round": r["round"], "processes": r["processes"],
                                     "vs_fewest": round(r["objects_per_s"] / base[r["round"]], 2)}
                                    for r in results]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
