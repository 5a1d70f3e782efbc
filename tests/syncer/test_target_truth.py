"""The target is the truth: a marker binds the checkpoint to the target it describes, and an
audit compares the two, so an emptied, replaced or edited target is noticed and repaired."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from syncd.checkpoint import default_state_path
from tests.conftest import run_syncd
from tests.daemon_helpers import RunningSyncd, wait_for
from tests.servers import (
    apply_env,  # noqa: F401
    fault_proxy_fixture,  # noqa: F401  (pytest fixtures, registered under their own names)
    get_service,
    s3_auth_service_fixture,  # noqa: F401
    s3_service_fixture,  # noqa: F401
)

LABELED = 38  # labeled tasks in the fixture database


def resync(ls_db, target: str, state, *extra: str, env: dict | None = None, config: dict | None = None):
    path = state.parent / f"{state.name}.yaml"
    path.write_text(json.dumps({"db": f"sqlite:///{ls_db}", "target": target, "state": str(state),
                                "predictions": "ids", **(config or {})}))
    return run_syncd("resync", "--config", str(path), *extra, env=env)


def test_a_first_write_leaves_a_marker_and_a_deleted_target_is_written_again(ls_db, tmp_path):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    first = resync(ls_db, str(out), state)
    assert first.returncode == 0 and f"{LABELED} written" in first.stderr
    marker = json.loads((out / ".syncd" / "target.json").read_text())
    assert set(marker) == {"target_id", "written_by", "created_at"}  # an id, never a credential
    with sqlite3.connect(state) as conn:
        assert marker["target_id"] in [row[0] for row in conn.execute("SELECT value FROM meta")]

    shutil.rmtree(out)  # someone deletes the whole target directory
    again = resync(ls_db, str(out), state)
    assert again.returncode == 0, again.stderr
    assert f"{LABELED} written" in again.stderr
    assert len(list(out.glob("*.json"))) == LABELED
    assert "has lost its marker" in again.stderr and again.stderr.count("\n") <= 2


def test_another_checkpoints_marker_is_not_trusted(ls_db, tmp_path):
    out = tmp_path / "out"
    assert resync(ls_db, str(out), tmp_path / "a.sqlite3").returncode == 0
    (out / "7.json").unlink()
    (out / ".syncd" / "target.json").write_text(json.dumps({"target_id": "someone-else"}))
    again = resync(ls_db, str(out), tmp_path / "a.sqlite3", "--no-audit")  # the marker is checked regardless
    assert "holds another checkpoint's marker" in again.stderr
    assert "1 written" in again.stderr and (out / "7.json").exists()


def test_the_audit_rewrites_what_is_missing_or_differs_and_leaves_foreign_objects(ls_db, tmp_path):
    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    assert resync(ls_db, str(out), state).returncode == 0
    for name in ("1.json", "2.json", "3.json"):
        (out / name).unlink()
    (out / "8.json").write_text('{"edited": "by hand"}')
    (out / "99999.json").write_text('{"not": "syncd\'s"}')

    skipped = resync(ls_db, str(out), state, "--no-audit")
    assert "nothing to write" in skipped.stderr  # the user said the target was untouched
    audited = resync(ls_db, str(out), state)
    assert audited.returncode == 0, audited.stderr
    assert "4 written" in audited.stderr
    [line] = [line for line in audited.stderr.splitlines() if "audit of" in line]
    assert "3 missing, 1 differ" in line and "1 not written by syncd" in line and "99999.json" in line
    assert json.loads((out / "8.json").read_text())["id"] == 8
    assert (out / "99999.json").read_text() == '{"not": "syncd\'s"}'  # never deleted: not syncd's
    assert "nothing to write" in resync(ls_db, str(out), state).stderr


def test_verify_remote_uses_the_listing(ls_db, tmp_path):
    out = tmp_path / "out"
    assert resync(ls_db, str(out), tmp_path / "a.sqlite3").returncode == 0
    (out / "6.json").unlink()
    fresh = resync(ls_db, str(out), tmp_path / "b.sqlite3", "--verify-remote")  # a new state file
    assert fresh.returncode == 0 and "1 written" in fresh.stderr, fresh.stdout + fresh.stderr


def test_an_emptied_bucket_is_refilled_and_an_audit_costs_list_calls(request, ls_db, tmp_path, fault_proxy):
    service = get_service(request, "s3")
    proxy = fault_proxy(service.endpoint)
    bucket = service.new_bucket()
    url, options, env = service.target(bucket, "labels", endpoint=proxy.url)
    state = tmp_path / "state.sqlite3"
    assert resync(ls_db, url, state, env=env, config={"s3": options}).returncode == 0

    proxy.clear()
    noop = resync(ls_db, url, state, env=env, config={"s3": options})
    assert "nothing to write" in noop.stderr, noop.stdout + noop.stderr
    assert proxy.count("GET", "list-type=2") == 2  # the write probe's listing, and the audit's one page
    assert proxy.count("HEAD") == 1  # the write probe's: no HEAD per object

    client = service.client()
    for key in service.raw_keys(bucket):  # a lifecycle rule, or someone's `aws s3 rm --recursive`
        client.delete_object(Bucket=bucket, Key=key)
    refilled = resync(ls_db, url, state, env=env, config={"s3": options})
    assert refilled.returncode == 0 and f"{LABELED} written" in refilled.stderr, refilled.stderr
    assert len(service.raw_keys(bucket)) == LABELED + 1  # and the marker


def test_the_same_url_on_another_server_is_another_target(request, ls_db, tmp_path, monkeypatch):
    first, second = get_service(request, "s3"), get_service(request, "s3_auth")
    bucket = first.new_bucket()
    second.create_bucket(bucket)
    url, options, env = first.target(bucket, "ls")
    other_url, other_options, other_env = second.target(bucket, "ls")
    assert url == other_url
    state_dir = tmp_path / "xdg"
    env["XDG_STATE_HOME"] = other_env["XDG_STATE_HOME"] = str(state_dir)

    def run(options: dict, env: dict):
        path = tmp_path / "c.yaml"
        path.write_text(json.dumps({"db": f"sqlite:///{ls_db}", "target": url, "s3": options}))
        return run_syncd("resync", "--config", str(path), env=env)

    assert f"{LABELED} written" in run(options, env).stderr
    moved = run(other_options, other_env)  # a new server, an empty bucket of the same name
    assert f"{LABELED} written" in moved.stderr, moved.stdout + moved.stderr
    assert len(list((state_dir / "syncd").glob("*.sqlite3"))) == 2  # one state file per server


def test_state_files_are_named_from_the_whole_identity():
    a = default_state_path("s3://labels/ls?endpoint=https://s3.us-east-1.amazonaws.com&region=us-east-1")
    b = default_state_path("s3://labels/ls?endpoint=http://minio:9000&region=us-east-1")
    assert a != b and a.name.startswith("s3-labels-ls-") and b.name.startswith("s3-labels-ls-")


@pytest.mark.parametrize("damage", ["delete", "wipe"])
def test_the_daemon_notices_a_damaged_target_at_its_next_audit(ls_db, tmp_path, damage):
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(out), {"audit_interval": 1})
    try:
        daemon.wait_ready()
        if damage == "delete":
            (out / "12.json").unlink()
        else:
            shutil.rmtree(out)
        wait_for(lambda: len(list(out.glob("*.json"))) == LABELED, 15, "the target repaired")
        assert (out / ".syncd" / "target.json").exists()
    finally:
        assert daemon.stop() == 0, daemon.logs()
    expected = "1 missing" if damage == "delete" else "has lost its marker"
    assert expected in daemon.logs()
