"""``syncd run`` writing to S3 (moto's server), through a proxy that can play a storage outage."""

from __future__ import annotations

import json
import sqlite3

from tests.daemon_helpers import RunningSyncd, add_annotation, delete_annotation, wait_for
from tests.servers import (
    fault_proxy_fixture,  # noqa: F401  (pytest fixtures, registered under their own names)
    get_service,
    s3_service_fixture,  # noqa: F401
)

ARRIVES = 15


def test_daemon_keeps_s3_in_step_through_an_outage(request, ls_db, tmp_path, fault_proxy):
    service = get_service(request, "s3")
    proxy = fault_proxy(service.endpoint)
    bucket = service.new_bucket()
    url, options, env = service.target(bucket, "labels", endpoint=proxy.url)
    options["max_attempts"] = 1  # let syncd's own retries and backoff do the work
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", url, {"s3": options, "delete": True}, env=env)

    def stored() -> set[str]:
        return set(service.raw_keys(bucket)) - {"labels/.syncd/target.json"}  # syncd's marker

    try:
        daemon.wait_ready()
        assert len(stored()) == 38 and "labels/.syncd/target.json" in service.raw_keys(bucket)
        conn = sqlite3.connect(ls_db)

        new_id = add_annotation(conn, 11, [])
        wait_for(lambda: "labels/11.json" in stored(), ARRIVES, "labels/11.json in the bucket")
        doc = json.loads(service.read_object(bucket, "labels/11.json"))
        assert [a["id"] for a in doc["annotations"]] == [new_id]

        # The store answers 503 for a while: the change waits, nothing is lost, syncd stays up,
        # and says it is not ready while writes fail.
        proxy.fail(503, times=1000)
        add_annotation(conn, 13, [])
        wait_for(lambda: daemon.metric("syncd_seconds_behind") > 0, ARRIVES, "the lag to show the outage")
        status, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(daemon.get("/readyz")), ARRIVES,
                                "/readyz to answer 503 during the outage")
        assert "writes to the target are failing" in body
        assert daemon.proc.poll() is None
        proxy.clear()
        wait_for(lambda: "labels/13.json" in stored(), ARRIVES + 30, "labels/13.json after the outage")
        wait_for(lambda: daemon.metric("syncd_seconds_behind") == 0, ARRIVES, "the lag to return to 0")
        wait_for(lambda: daemon.get("/readyz")[0] == 200, ARRIVES, "/readyz to answer 200 again")
        logs = daemon.logs()
        assert logs.count("writes to the target are failing") == 1 and logs.count("writes to the target recovered") == 1

        delete_annotation(conn, new_id, "2026-11-25 12:30:00.000000")
        wait_for(lambda: "labels/11.json" not in stored(), ARRIVES, "labels/11.json to be deleted")
        conn.close()
    finally:
        assert daemon.stop() == 0, daemon.logs()
