"""The local directory's batch writes (group commit) and its listing of folders too big to sort
in memory at once."""

from __future__ import annotations

import hashlib

from syncd.checkpoint import Entry
from syncd.errors import StoreError
from syncd.keys import TMP_DIR
from syncd.plan import Removals
from syncd.stores import local
from syncd.stores.local import LocalStore


def item(key: str, body: bytes) -> tuple[str, bytes, str]:
    return key, body, hashlib.sha256(body).hexdigest()


def test_a_batch_writes_every_object_and_fails_only_the_ones_that_cannot_be_written(tmp_path):
    target, outside = tmp_path / "target", tmp_path / "outside"
    for folder in (target, outside):
        folder.mkdir()
    (target / "linked").symlink_to(outside)  # a folder of a key that is a link: never written through
    store = LocalStore(target)
    store.check_writable()
    items = [item("1.json", b'{"id": 1}'), item(f"{TMP_DIR}/x.json", b"{}"), item("linked/2.json", b"{}"),
             item("a/b/3.json", b'{"id": 3}'), item("4.json", b'{"id": 4}')]
    results = store.put_many(items)
    assert [isinstance(r, StoreError) for r in results] == [False, True, True, False, False]
    assert "reserved" in str(results[1]) and "link" in str(results[2])
    assert list(outside.iterdir()) == []  # nothing written through the link
    listed = {info.key: info for info in store.list()}
    assert sorted(listed) == ["1.json", "4.json", "a/b/3.json"]
    for (key, body, _sha), etag in zip(items, results, strict=True):
        if key in listed:
            assert (target / key).read_bytes() == body
            assert listed[key].etag == etag  # the etag returned is the one a listing shows
    store.close()
    assert list((target / TMP_DIR).iterdir()) == []  # no temporary file left behind


def test_a_batch_overwrites_and_a_single_put_still_raises(tmp_path):
    store = LocalStore(tmp_path)
    store.check_writable()
    assert all(isinstance(r, str) for r in store.put_many([item("1.json", b"old"), item("2.json", b"old")]))
    store.put_many([item("1.json", b"new"), item("2.json", b"new")])
    assert (tmp_path / "1.json").read_bytes() == b"new" == (tmp_path / "2.json").read_bytes()
    try:
        store.put(f"{TMP_DIR}/1.json", b"x", "0" * 64)
    except StoreError as exc:
        assert "reserved" in str(exc)
    else:
        raise AssertionError("a reserved key was written")


def test_a_folder_bigger_than_a_sort_run_lists_in_key_order(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "SORT_RUN", 7)  # 60 names: nine runs merged from temporary files
    names = [f"{i}.json" for i in range(40)] + ["a\nb.json", "é.json", "Z.json", "a-b.json", "a.json"]
    for name in names:
        (tmp_path / name).write_text(name)
    for folder in ("a", "a0", "m"):  # folders sort as their name plus "/"
        (tmp_path / folder).mkdir()
        for i in range(5):
            (tmp_path / folder / f"{i}.json").write_text("x")
    keys = [info.key for info in LocalStore(tmp_path).list()]
    expected = sorted(names + [f"{folder}/{i}.json" for folder in ("a", "a0", "m") for i in range(5)])
    assert keys == expected
    assert [info.key for info in LocalStore(tmp_path).list("a/")] == [f"a/{i}.json" for i in range(5)]


def test_removals_past_a_megabyte_come_back_whole_from_disk():
    entries = [Entry(f"projects/{i}/{i}.json", i, i % 7 or None, f"{i:064x}", i, f"fp{i}", "é") for i in range(12_000)]
    with Removals() as gone:
        for entry in entries:
            gone.add(entry)
        assert gone.count == len(entries)
        assert list(gone) == entries
        assert list(gone) == entries  # read again (a count, then the actions)
