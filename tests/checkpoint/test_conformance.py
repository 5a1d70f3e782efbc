"""One suite for every checkpoint backend: the SQLite file and PostgreSQL (a schema of its own on
the real server), like the store conformance suite."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from syncd.checkpoint import Checkpoint, Entry, open_checkpoint, scratch_copy
from syncd.errors import ConfigError

TARGET = "s3://labels/ls?endpoint=http://127.0.0.1:9000&region=us-east-1"

Opener = Callable[..., Checkpoint]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request, tmp_path) -> Iterator[Opener]:
    """``opener(target=TARGET, **options)``: the same checkpoint store each call (closed after the test)."""
    opened: list[Checkpoint] = []
    if request.param == "sqlite":
        state = str(tmp_path / "state.sqlite3")
        schema = None
    else:
        state = request.getfixturevalue("pg_server")
        schema = f"syncd_test_{uuid.uuid4().hex[:10]}"

    def open_one(target: str = TARGET, **options) -> Checkpoint:
        checkpoint = open_checkpoint(state, target, **({"schema": schema} if schema else {}), **options)
        opened.append(checkpoint)
        return checkpoint

    yield open_one
    for checkpoint in opened:
        try:
            checkpoint.close()
        except Exception:  # noqa: BLE001 - already closed by the test
            pass
    if schema:
        import psycopg

        with psycopg.connect(state, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def entry(task_id: int, key: str | None = None, project: int | None = 1, **values) -> Entry:
    return Entry(key or f"{task_id}.json", task_id, project, values.get("sha256", f"{task_id:064x}"),
                 values.get("size", 10 + task_id), values.get("fingerprint", f"fp{task_id}"), values.get("etag", ""))


def record(checkpoint: Checkpoint, e: Entry) -> None:
    checkpoint.record_put(e.key, e.task_id, e.project_id, e.sha256, e.size, e.fingerprint, e.etag or None)


def test_what_is_recorded_is_read_back_even_before_a_flush(opener):
    checkpoint = opener()
    entries = [entry(1), entry(2, project=2, etag="9b2cf535f27731c974343645a3985328"), entry(3, project=None)]
    for e in entries:
        record(checkpoint, e)
    assert checkpoint.get_many(["1.json", "2.json", "3.json", "missing.json"]) == {e.key: e for e in entries}
    assert sorted(checkpoint.for_tasks([2, 3, 99]), key=lambda e: e.task_id) == entries[1:]
    assert checkpoint.count() == 3
    assert list(checkpoint.entries()) == entries
    assert list(checkpoint.entries([2])) == [entries[1]]


def test_records_take_effect_in_the_order_they_were_made(opener):
    """Records committed together (one flush) leave what applying them one by one leaves."""
    checkpoint = opener()
    record(checkpoint, entry(3))
    checkpoint.flush()
    record(checkpoint, entry(1))
    checkpoint.record_fingerprint("1.json", "fp1-later")   # a put, then its fingerprint moved
    record(checkpoint, entry(2))
    checkpoint.record_delete("2.json")                      # written, then deleted
    checkpoint.record_delete("3.json")
    record(checkpoint, entry(3, sha256="f" * 64))           # deleted, then written again
    checkpoint.record_fingerprint("4.json", "fp4")          # a fingerprint of nothing recorded
    record(checkpoint, entry(5))
    checkpoint.record_delete("5.json")
    checkpoint.record_fingerprint("5.json", "fp5-later")    # of a record deleted meanwhile
    checkpoint.flush()
    assert {e.key: (e.sha256, e.fingerprint) for e in checkpoint.entries()} == {
        "1.json": (f"{1:064x}", "fp1-later"), "3.json": ("f" * 64, "fp3")}


def test_records_survive_closing_and_reopening(opener):
    checkpoint = opener()
    record(checkpoint, entry(7))
    checkpoint.set_target_id("abc")
    checkpoint.close()
    again = opener()
    assert again.get_many(["7.json"]) == {"7.json": entry(7)}
    assert again.target_id() == "abc"


def test_a_rewrite_replaces_and_fingerprints_and_deletes_apply(opener):
    checkpoint = opener()
    record(checkpoint, entry(5))
    record(checkpoint, entry(5, sha256="f" * 64, size=99, etag="e1"))  # the key written again
    checkpoint.record_fingerprint("5.json", "fp-new")
    assert checkpoint.get_many(["5.json"])["5.json"] == entry(5, sha256="f" * 64, size=99, etag="e1",
                                                            fingerprint="fp-new")
    checkpoint.record_delete("5.json")
    checkpoint.record_delete("never.json")
    assert checkpoint.get_many(["5.json"]) == {} and checkpoint.count() == 0


def test_entries_by_key_come_in_code_point_order_page_after_page(opener):
    checkpoint = opener()
    keys = ["b.json", "a/1.json", "a.json", "a-b/2.json", "Z.json", "é.json", "a0.json", "日本.json"]
    keys += [f"many/{i}.json" for i in range(2500)]
    for i, key in enumerate(keys):
        record(checkpoint, entry(i + 1, key))
    assert [e.key for e in checkpoint.entries_by_key()] == sorted(keys)
    tasks = [e.task_id for e in checkpoint.entries()]
    assert tasks == sorted(tasks) and len(tasks) == len(keys)


def test_targets_are_kept_apart(opener):
    elsewhere = TARGET.replace("9000", "9001")  # the same bucket behind another endpoint
    other = opener(elsewhere)
    record(other, entry(1, sha256="0" * 64))
    other.set_target_id("other")
    other.close()  # (one process at a time on a SQLite file)
    one = opener()
    record(one, entry(1))
    one.set_target_id("one")
    one.forget_all()
    assert one.count() == 0 and one.target_id() == "one"
    one.close()
    other = opener(elsewhere)
    assert other.count() == 1 and other.target_id() == "other"


def test_a_scratch_copy_leaves_the_original_alone(opener, tmp_path):
    checkpoint = opener()
    for i in range(1, 1500):
        record(checkpoint, entry(i, project=i % 3))
    checkpoint.set_target_id("marker")
    copy = scratch_copy(checkpoint, tmp_path)
    assert list(copy.entries_by_key()) == list(checkpoint.entries_by_key()) and copy.target_id() == "marker"
    copy.forget_all()
    copy.close()
    assert checkpoint.count() == 1499


def test_postgres_schema_is_versioned_and_migrated_once(pg_server):
    import psycopg

    from syncd.checkpoint.postgresql import SCHEMA_VERSION

    schema = f"syncd_test_{uuid.uuid4().hex[:10]}"
    try:
        for _ in range(2):  # the second start finds it at its version
            open_checkpoint(pg_server, TARGET, schema=schema).close()
        with psycopg.connect(pg_server) as conn:
            versions = [r[0] for r in conn.execute(f'SELECT version FROM "{schema}".schema_version')]
            assert versions == list(range(1, SCHEMA_VERSION + 1))
            conn.execute(f'INSERT INTO "{schema}".schema_version VALUES (%s)', (SCHEMA_VERSION + 1,))
        with pytest.raises(ConfigError, match="newer than this syncd"):
            open_checkpoint(pg_server, TARGET, schema=schema)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_postgres_records_of_a_project_whose_lease_is_lost_are_not_committed(pg_server):
    """Fencing: a process records a write only while it holds the write's project."""
    import psycopg

    schema = f"syncd_test_{uuid.uuid4().hex[:10]}"
    try:
        checkpoint = open_checkpoint(pg_server, TARGET, schema=schema, fence="me")
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'INSERT INTO "{schema}".leases VALUES (%s, 1, %s, now() + interval \'1 minute\'), '
                         f'(%s, 2, %s, now() - interval \'1 second\'), (%s, 3, %s, now() + interval \'1 minute\')',
                         (TARGET, "me", TARGET, "me", TARGET, "someone-else"))
        for task, project in ((1, 1), (2, 2), (3, 3), (4, None)):
            record(checkpoint, entry(task, project=project))
        checkpoint.flush()
        assert sorted(e.task_id for e in checkpoint.entries()) == [1, 4]  # 2: expired, 3: another's
        assert checkpoint.fenced == 2
        # Nor its deletions and fingerprint updates of records of a project it does not hold.
        unfenced = open_checkpoint(pg_server, TARGET, schema=schema)
        record(unfenced, entry(3, project=3))
        unfenced.close()
        checkpoint.record_fingerprint("3.json", "changed")
        checkpoint.record_delete("1.json")
        checkpoint.record_delete("3.json")
        checkpoint.flush()
        assert {e.task_id: e.fingerprint for e in checkpoint.entries()} == {3: "fp3", 4: "fp4"}
        assert checkpoint.fenced == 3
        checkpoint.close()
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
