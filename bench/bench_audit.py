"""The audit of a target against the checkpoint: time for N objects in a moto S3 server.

    python bench/bench_audit.py                   # 100k objects, 3 rounds
    python bench/bench_audit.py --objects 20000 --repeat 5

The bucket is filled once (moto takes ~300 PUTs a second here: ~6 minutes for 100k), and the
checkpoint made from the answers (the ETags the PUTs returned), as syncd's own writes make it.
Then, alternating in each round:

- ``audit``: ``syncd.audit.audit`` comparing the listing with the checkpoint, both in key order;
- ``list``: a bare boto3 paginated listing of the same keys (the floor: the audit cannot be
  faster than reading the listing);
- ``head``: what an audit that asks for each object's metadata (syncd before 0.2 did, in groups
  of 64) costs, measured on ``--head-sample`` objects and scaled to N.

Printed (JSON): seconds per round of each, the audit/list ratio pair by pair, and the machine's
load average at the start and end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from bench_s3 import S3_ENV, make_bucket, start_moto  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--head-sample", type=int, default=5000)
    args = parser.parse_args()
    os.environ.update(S3_ENV)

    import boto3

    from syncd.audit import audit
    from syncd.checkpoint.sqlite import SqliteCheckpoint
    from syncd.stores import open_store

    load_start = os.getloadavg()
    proc, endpoint = start_moto()
    try:
        make_bucket(endpoint, "audit")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              config=boto3.session.Config(max_pool_connections=64))
        store = open_store("s3://audit/labels", {"endpoint_url": endpoint}, transfers=16)
        tmp = tempfile.TemporaryDirectory(prefix="syncd-bench-audit-")
        checkpoint = SqliteCheckpoint(Path(tmp.name) / "state.sqlite3", store.identity)
        lock = threading.Lock()
        t0 = time.perf_counter()

        def put(i: int) -> None:
            body = json.dumps({"id": i, "annotations": [{"id": i, "result": [{"value": {"x": i % 100}}]}]}).encode()
            sha = hashlib.sha256(body).hexdigest()
            answer = client.put_object(Bucket="audit", Key=f"labels/{i}.json", Body=body,
                                       ContentType="application/json", Metadata={"sha256": sha})
            with lock:
                checkpoint.record_put(f"{i}.json", i, 1, sha, len(body), "", answer["ETag"].strip('"'))

        with ThreadPoolExecutor(64) as pool:
            list(pool.map(put, range(1, args.objects + 1)))
        checkpoint.flush()
        fill = time.perf_counter() - t0
        print(f"filled {args.objects} objects in {fill:.0f}s", file=sys.stderr)

        def bare_list() -> int:
            n = 0
            for page in client.get_paginator("list_objects_v2").paginate(Bucket="audit", Prefix="labels/"):
                n += len(page.get("Contents", ()))
            return n

        keys = [f"{i}.json" for i in range(1, min(args.head_sample, args.objects) + 1)]
        rounds = []
        for _ in range(args.repeat):
            row = {}
            t = time.perf_counter()
            result = audit(store, checkpoint, "{task_id}.json")
            row["audit"] = time.perf_counter() - t
            assert result.checked == args.objects and not result.mismatched and not result.foreign, result
            t = time.perf_counter()
            assert bare_list() == args.objects
            row["list"] = time.perf_counter() - t
            t = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(store.head, keys))
            row["head_scaled"] = (time.perf_counter() - t) * args.objects / len(keys)
            row["audit_over_list"] = row["audit"] / row["list"]
            rounds.append(row)
            print(json.dumps(row), file=sys.stderr)
        checkpoint.close()
        store.close()
        tmp.cleanup()
    finally:
        proc.terminate()
    print(json.dumps({"objects": args.objects, "fill_seconds": round(fill, 1), "rounds": rounds,
                      "best_audit": min(r["audit"] for r in rounds), "best_list": min(r["list"] for r in rounds),
                      "load_start": load_start, "load_end": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
