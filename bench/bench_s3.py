"""syncd resync into S3 against a raw boto3 PUT loop, in the same run.

    python bench/bench_s3.py                    # 100k tasks, transfers 16, moto's server
    python bench/bench_s3.py --server s3rver --rounds 2      # s3rver (npm): the client side measured
    python bench/bench_s3.py --tasks 20000 --transfers 8
    python bench/bench_s3.py --tasks 5000 --sweep 4 8 16 32   # choose the default `transfers`

Both sides put the same payloads (the documents syncd writes, prepared beforehand) with the same
concurrency into fresh prefixes of one server: moto's (a process; it tops out near 300 PUTs a
second here) or s3rver (npm, ``NODE_OPTIONS=--openssl-legacy-provider``, keys S3RVER/S3RVER;
~1.7x faster), so that the client's share is what is measured. With ``--rounds`` the two sides
alternate which goes first, and each round's ratio is printed.
Printed: both rates and their ratio (goal: syncd >= 0.8x the raw loop), client CPU seconds per
object of each process (goal: syncd <= 2 ms, and no more than the raw loop; issue 15: <= 0.6 ms),
the no-op resync time without the audit (goal: <= 5% of the full resync), and with it (the
default: the target's listing is read, which costs what the server takes to list).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_replicas import KEYS as S3RVER_KEYS  # noqa: E402
from bench_replicas import start_s3rver  # noqa: E402
from bench_resync import cached_db  # noqa: E402

S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
          "NO_PROXY": "127.0.0.1,localhost"}

RAW_LOOP = r'''
import json, os, sys, time, hashlib
from concurrent.futures import ThreadPoolExecutor
import boto3, botocore.config
endpoint, bucket, src, transfers, prefix = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
payloads = [(name, open(os.path.join(src, name), "rb").read()) for name in sorted(os.listdir(src))
            if name.endswith(".json")]
client = boto3.client("s3", endpoint_url=endpoint, config=botocore.config.Config(
    max_pool_connections=max(transfers, 10), retries={"mode": "standard"}))
cpu0 = time.process_time(); t0 = time.perf_counter()
def put(item):
    name, body = item
    client.put_object(Bucket=bucket, Key=prefix + name, Body=body, ContentType="application/json",
                      Metadata={"sha256": hashlib.sha256(body).hexdigest()})
with ThreadPoolExecutor(transfers) as pool:
    for _ in pool.map(put, payloads):
        pass
print(json.dumps({"objects": len(payloads), "wall": time.perf_counter() - t0, "cpu": time.process_time() - cpu0}))
'''


def start_moto() -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return proc, endpoint
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto server did not start")


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **{"aws_access_key_id": "bench", "aws_secret_access_key": "bench",
                                                 "region_name": "us-east-1"}).create_bucket(Bucket=name)


def child(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; wall seconds, the child's CPU seconds, its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{err[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "stdout": out}


def syncd_resync(db: Path, target: str, state: Path, endpoint: str, transfers: int, env: dict,
                 *flags: str) -> dict:
    config = state.with_suffix(".yaml")
    config.write_text(json.dumps({"db": f"sqlite:///{db}", "target": target, "state": str(state),
                                  "transfers": transfers, "s3": {"endpoint_url": endpoint}}))
    return child([sys.executable, "-m", "syncd", "resync", "--config", str(config), *flags], env)


def start_server(kind: str, work: Path) -> tuple[subprocess.Popen, str, dict]:
    """The S3 server, its endpoint and the environment its clients need; buckets raw and syncd."""
    if kind == "moto":
        proc, endpoint = start_moto()
        make_bucket(endpoint, "raw")
        make_bucket(endpoint, "syncd")
        return proc, endpoint, {}
    proc, endpoint = start_s3rver(work / "s3rver")  # with its bucket "bench"
    return proc, endpoint, S3RVER_KEYS


def run(tasks: int, transfers: int, work: Path, server: str, rounds: int) -> list[dict]:
    db, _ = cached_db(tasks, 1, 4, 0.3, REPO / "examples" / "label_studio.sqlite3", False)
    env = {**os.environ, **S3_ENV}
    # The payloads: exactly the documents syncd writes, prepared once in a local directory.
    payloads = work / "payloads"
    if not payloads.exists():
        child([sys.executable, "-m", "syncd", "resync", "--db", f"sqlite:///{db}", "--target", str(payloads),
               "--state", str(work / "payloads.sqlite3")], env)
    proc, endpoint, keys = start_server(server, work)
    env.update(keys)
    results = []
    try:
        raw_bucket, syncd_bucket = ("raw", "syncd") if server == "moto" else ("bench", "bench")

        def raw_side(prefix: str) -> dict:
            out = child([sys.executable, "-c", RAW_LOOP, endpoint, raw_bucket, str(payloads), str(transfers),
                         f"raw-{prefix}/"], env)
            out.update(json.loads(out["stdout"]))
            return out

        def syncd_side(prefix: str, *flags: str) -> dict:
            return syncd_resync(db, f"s3://{syncd_bucket}/syncd-{prefix}", work / f"state-{prefix}.sqlite3",
                                endpoint, transfers, env, *flags)

        for round_ in range(1, rounds + 1):
            prefix = f"r{round_}-t{transfers}"
            load = os.getloadavg()[0]
            if round_ % 2:  # alternate which side goes first
                raw, full = raw_side(prefix), syncd_side(prefix)
            else:
                full, raw = syncd_side(prefix), raw_side(prefix)
            # Nothing changed: what skipping unchanged tasks costs (--no-audit), and the audit of
            # the target's listing that every resync also runs by default (list calls only).
            noop = syncd_side(prefix, "--no-audit")
            audited = syncd_side(prefix)
            objects = raw["objects"]
            results.append({"round": round_, "server": server, "objects": objects, "transfers": transfers,
                            "raw_rate": objects / raw["wall"], "syncd_rate": objects / full["wall"],
                            "raw_cpu_ms": raw["cpu"] * 1000 / objects, "syncd_cpu_ms": full["cpu"] * 1000 / objects,
                            "raw_wall": raw["wall"], "full_wall": full["wall"], "noop_wall": noop["wall"],
                            "audited_noop_wall": audited["wall"],
                            "load": load})
    finally:
        proc.terminate()
        proc.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--transfers", type=int, default=16)
    parser.add_argument("--sweep", type=int, nargs="*", help="measure these transfers values instead")
    parser.add_argument("--server", choices=["moto", "s3rver"], default="moto")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs, alternating which side goes first")
    args = parser.parse_args()
    (HERE / "out").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="syncd-s3-", dir=HERE / "out"))
    try:
        for transfers in args.sweep or [args.transfers]:
            for r in run(args.tasks, transfers, work, args.server, args.rounds):
                print(f"{r['server']} round {r['round']}, {r['objects']} objects, transfers {transfers}, "
                      f"load {r['load']:.1f}: raw boto3 {r['raw_rate']:.0f}/s ({r['raw_cpu_ms']:.2f} ms CPU/object), "
                      f"syncd {r['syncd_rate']:.0f}/s ({r['syncd_cpu_ms']:.2f} ms CPU/object), "
                      f"ratio {r['syncd_rate'] / r['raw_rate']:.2f}x, CPU ratio "
                      f"{r['syncd_cpu_ms'] / r['raw_cpu_ms']:.2f}; no-op resync --no-audit {r['noop_wall']:.1f}s = "
                      f"{100 * r['noop_wall'] / r['full_wall']:.1f}% of full ({r['full_wall']:.1f}s); no-op with "
                      f"the audit (the default) {r['audited_noop_wall']:.1f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
