"""The dir:// source against the files Label Studio's Local Files target storage wrote."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pytest

from syncd.document import encode_document, to_export_shape
from syncd.errors import ConfigError, SourceError
from syncd.sources import directory as dir_source
from syncd.sources.directory import DirectorySource, DirScan
from tests.conftest import FIXTURES, exported_tasks, fixture_projects

SLUGS = fixture_projects(FIXTURES) if FIXTURES.is_dir() else ["fixture-set-missing"]


class Clock:
    """A monotonic and a wall clock that move only when told; files get its wall time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall0 = time.time() - 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall0 + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def write(self, path: Path, content: bytes | str | object) -> Path:
        if isinstance(content, str):
            content = content.encode()
        elif not isinstance(content, bytes):
            content = json.dumps(content, indent=2, ensure_ascii=False).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        ns = int(self.wall() * 1e9)
        os.utime(path, ns=(ns, ns))
        return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


def source(path: Path, clock: Clock, settle: float = 0.2) -> DirectorySource:
    return DirectorySource(path, settle_seconds=settle, clock=clock.monotonic, wall_clock=clock.wall)


def settled(src: DirectorySource, clock: Clock) -> DirScan:
    clock.advance(src.settle_seconds + 0.05)
    return src.scan()


def body(doc) -> dict:
    return json.loads(doc.body)


def export_shape(task: dict) -> dict:
    """The export's task as a dir:// document holds it: drafts as ids (documented)."""
    task = copy.deepcopy(task)
    task["drafts"] = [d["id"] if isinstance(d, dict) else d for d in task.get("drafts", [])]
    return task


def after_sync_files(fixtures: Path, slug: str) -> dict[int, dict]:
    folder = fixtures / "storage-export" / slug / "after-sync"
    return {int(p.stem): json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*.json")}


def users(fixtures: Path) -> dict[int, dict]:
    """Expanded ``completed_by`` objects as Label Studio wrote them in the storage files."""
    found = {}
    for slug in fixture_projects(fixtures):
        for task in after_sync_files(fixtures, slug).values():
            for ann in task["annotations"]:
                found[ann["completed_by"]["id"]] = ann["completed_by"]
    return found


def one_task(task: dict, ann: dict) -> dict:
    """The task holding only this annotation."""
    return {**task, "annotations": [ann]}


def per_annotation_object(task: dict, ann: dict, people: dict[int, dict]) -> dict:
    """What Label Studio's default (per-annotation) layout writes for one annotation:
    ``StorageAnnotationSerializer`` = the annotation (without ``prediction``, ``result_count``
    and the write-only ``unique_id``; with ``created_username``, ``created_ago``, expanded
    ``completed_by``) and its task nested under ``task`` (model fields: no annotations,
    predictions or drafts; ``file_upload`` is the upload's id)."""
    user = people[ann["completed_by"]]
    out = {"id": ann["id"], "created_username": f"{user['first_name']} {user['last_name']} {user['email']}, "
                                                 f"{user['id']}",
           "created_ago": "0\xa0minutes", "completed_by": user}
    for name, value in ann.items():
        if name not in ("id", "completed_by", "prediction", "result_count", "unique_id", "task"):
            out[name] = value
    nested = {k: v for k, v in task.items() if k not in ("annotations", "predictions", "drafts", "file_upload")}
    nested.update(is_labeled=True, overlap=1, precomputed_agreement=None)
    if "file_upload" in task:
        nested["file_upload"] = 1000 + task["id"]
    out["task"] = nested
    return out


# ------------------------------------------------------------------ Label Studio's per-task files


@pytest.mark.parametrize("slug", SLUGS)
def test_after_sync_files_give_the_export(fixtures_dir: Path, slug: str):
    folder = fixtures_dir / "storage-export" / slug / "after-sync"
    exported = exported_tasks(fixtures_dir / "exports" / slug / "JSON.json")
    scan = DirectorySource(folder, settle_seconds=0).scan()  # settling is tested below
    assert sorted(scan.documents) == sorted(int(p.stem) for p in folder.glob("*.json"))
    assert (scan.pending, scan.errors, scan.unresolved) == (0, [], 0)
    assert scan.changed == set(scan.documents) and set(scan.fingerprints) == set(scan.documents)
    for task_id, doc in scan.documents.items():
        expected = export_shape(exported[task_id])
        assert body(doc) == expected
        assert doc.body == encode_document(task_id, expected["project"], expected).body  # key order too
        assert (doc.task_id, doc.project_id) == (task_id, expected["project"])


@pytest.mark.parametrize("slug", SLUGS)
def test_live_files_differ_only_in_task_updated(fixtures_dir: Path, slug: str):
    """The live copies were written before Label Studio updated the task row (fixture README)."""
    folder = fixtures_dir / "storage-export" / slug / "live"
    exported = exported_tasks(fixtures_dir / "exports" / slug / "JSON.json")
    scan = DirectorySource(folder, settle_seconds=0).scan()
    assert sorted(scan.documents) == sorted(int(p.stem) for p in folder.glob("*.json"))
    for task_id, doc in scan.documents.items():
        got, expected = body(doc), export_shape(exported[task_id])
        for name in ("updated_at", "updated_by"):
            got.pop(name), expected.pop(name)
        assert got == expected


def test_normalisation_of_a_storage_file(fixtures_dir: Path):
    stored = after_sync_files(fixtures_dir, "image-bbox")[8]
    assert isinstance(stored["annotations"][0]["completed_by"], dict)
    exported = exported_tasks(fixtures_dir / "exports" / "image-bbox" / "JSON.json")[8]
    assert to_export_shape(stored) == exported
    assert list(to_export_shape(stored)) == list(exported)
    # drafts: Label Studio's storage files hold ids, its export full objects -> ids either way
    with_drafts = {**exported, "drafts": [{"id": 7, "user": "a@example.com", "result": []}, {"id": 9}]}
    assert to_export_shape(with_drafts)["drafts"] == [7, 9]
    assert to_export_shape({**stored, "drafts": [7, 9]})["drafts"] == [7, 9]
    # annotations in id order, whatever order the file had
    shuffled = {**stored, "annotations": stored["annotations"][::-1]}
    assert [a["id"] for a in to_export_shape(shuffled)["annotations"]] == [8, 9]


def test_normalisation_rejects_what_is_not_a_task():
    for value, reason in [([], "not an object"), ({"data": {}}, "no integer \"id\""),
                          ({"id": 3, "result": [], "task": 5}, "no \"data\" object"),
                          ({"id": 3, "data": {}, "annotations": {}}, "not a list of objects")]:
        with pytest.raises(ValueError, match=reason):
            to_export_shape(value)


@pytest.mark.parametrize("slug", SLUGS)
def test_a_json_export_file_gives_the_labeled_tasks(fixtures_dir: Path, slug: str, tmp_path: Path):
    """A directory may hold Label Studio's JSON export itself (an array of tasks)."""
    export = fixtures_dir / "exports" / slug / "JSON.json"
    (tmp_path / "export.json").write_bytes(export.read_bytes())
    os.utime(tmp_path / "export.json", (time.time() - 60,) * 2)
    scan = DirectorySource(tmp_path).scan()
    labeled = exported_tasks(fixtures_dir / "exports" / slug / "JSON.annotated-only.json")
    assert sorted(scan.documents) == sorted(labeled)
    for task_id, doc in scan.documents.items():
        assert body(doc) == export_shape(labeled[task_id])


# ------------------------------------------------------------------ per-annotation files


@pytest.mark.parametrize("slug", SLUGS)
def test_per_annotation_files_merge_into_the_export(fixtures_dir: Path, slug: str, tmp_path: Path, clock: Clock):
    """One file per annotation id (with and without .json), each the task with only that annotation."""
    exported = exported_tasks(fixtures_dir / "exports" / slug / "JSON.json")
    for task in after_sync_files(fixtures_dir, slug).values():
        for ann in task["annotations"]:
            name = str(ann["id"]) + (".json" if ann["id"] % 2 else "")
            clock.write(tmp_path / name, one_task(task, ann))
    src = source(tmp_path, clock)
    first = src.scan()
    assert first.documents == {} and first.pending == len(list(tmp_path.iterdir()))
    scan = settled(src, clock)
    assert scan.pending == 0 and scan.errors == []
    assert sorted(scan.documents) == sorted(t for t, task in exported.items() if task["annotations"])
    for task_id, doc in scan.documents.items():
        expected = export_shape(exported[task_id])
        assert doc.body == encode_document(task_id, expected["project"], expected).body


@pytest.mark.parametrize("slug", SLUGS)
def test_label_studio_per_annotation_layout(fixtures_dir: Path, slug: str, tmp_path: Path, clock: Clock):
    """Label Studio's default layout: ``<annotation_id>`` holding the annotation, its task nested.
    The document is the export's task without what that layout does not hold."""
    exported = exported_tasks(fixtures_dir / "exports" / slug / "JSON.json")
    people = users(fixtures_dir)
    for task in exported.values():
        for ann in task["annotations"]:
            clock.write(tmp_path / str(ann["id"]), per_annotation_object(task, ann, people))
    scan = settled(source(tmp_path, clock), clock)
    assert scan.errors == [] and sorted(scan.documents) == sorted(t for t, v in exported.items() if v["annotations"])
    for task_id, doc in scan.documents.items():
        expected = {k: v for k, v in exported[task_id].items() if k not in ("file_upload", "drafts", "predictions")}
        expected["annotations"] = [{k: v for k, v in a.items() if k not in ("prediction", "result_count", "unique_id")}
                                   for a in expected["annotations"]]
        assert doc.body == encode_document(task_id, expected["project"], expected).body


def test_task_fields_come_from_the_most_recently_updated_task(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    task = after_sync_files(fixtures_dir, "image-bbox")[8]  # annotations 8 and 9
    first, second = task["annotations"]
    stale = {**one_task(task, second), "updated_at": "2026-11-24T23:22:19.000000Z", "total_annotations": 1}
    clock.write(tmp_path / "9", stale)  # the stale task in the newer file...
    clock.advance(0.01)
    clock.write(tmp_path / "8", one_task(task, first))
    clock.advance(0.01)
    os.utime(tmp_path / "9", ns=(int(clock.wall() * 1e9),) * 2)  # ...which is also touched last
    doc = settled(source(tmp_path, clock), clock).documents[8]
    assert body(doc)["updated_at"] == task["updated_at"] and body(doc)["total_annotations"] == 2
    assert [a["id"] for a in body(doc)["annotations"]] == [8, 9]


def test_the_latest_copy_of_an_annotation_wins(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    task = after_sync_files(fixtures_dir, "text-ner")[42]
    (ann,) = task["annotations"]
    newer = {**ann, "updated_at": "2030-01-01T00:00:00.000000Z", "lead_time": 1.5}
    clock.write(tmp_path / "b.json", one_task(task, ann))
    clock.write(tmp_path / "a.json", one_task(task, newer))
    clock.write(tmp_path / "c.json", one_task(task, ann))
    (got,) = body(settled(source(tmp_path, clock), clock).documents[42])["annotations"]
    assert got["lead_time"] == 1.5 and got["updated_at"] == "2030-01-01T00:00:00.000000Z"


# ------------------------------------------------------------------ deletions


def test_deleting_annotation_files(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    task = after_sync_files(fixtures_dir, "image-keypoints")[19]  # annotations 18 and 19
    for ann in task["annotations"]:
        clock.write(tmp_path / str(ann["id"]), one_task(task, ann))
    src = source(tmp_path, clock)
    scan = settled(src, clock)
    before = scan.fingerprints[19]
    assert [a["id"] for a in body(scan.documents[19])["annotations"]] == [18, 19]

    (tmp_path / "18").unlink()
    scan = src.scan()  # a deletion needs no settling
    assert [a["id"] for a in body(scan.documents[19])["annotations"]] == [19]
    assert scan.changed == {19} and scan.fingerprints[19] != before

    (tmp_path / "19").unlink()
    scan = src.scan()
    assert scan.documents == {} and scan.fingerprints == {} and scan.changed == {19}
    assert (scan.pending, scan.errors, scan.unresolved) == (0, [], 0)


def test_deleting_a_task_file(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    files = after_sync_files(fixtures_dir, "audio-asr")
    for task_id, task in files.items():
        clock.write(tmp_path / "sub" / f"{task_id}.json", task)
    src = source(tmp_path, clock)
    assert sorted(settled(src, clock).documents) == sorted(files)
    (tmp_path / "sub" / "32.json").unlink()
    scan = src.scan()
    assert sorted(scan.documents) == sorted(set(files) - {32}) and scan.changed == {32}


# ------------------------------------------------------------------ half-written files


def test_a_half_written_file_is_not_used(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    task = after_sync_files(fixtures_dir, "text-classification")[25]
    path = clock.write(tmp_path / "25.json", task)
    src = source(tmp_path, clock)
    good = settled(src, clock).documents[25]

    # Label Studio rewrites the file in place; a scan catches it half-written
    edited = copy.deepcopy(task)
    edited["annotations"][0]["lead_time"] = 99.0
    full = json.dumps(edited, indent=2).encode()
    clock.advance(1)
    clock.write(path, full[: len(full) // 2])
    scan = src.scan()
    assert scan.documents[25] == good and scan.pending == 1 and scan.errors == [] and scan.read == 0
    assert scan.unresolved == 0  # the previous version of the file stands in
    assert scan.changed == set()

    clock.advance(0.1)
    clock.write(path, full)  # the writer finishes: changed again, so it settles again
    scan = src.scan()
    assert scan.documents[25] == good and scan.pending == 1
    scan = settled(src, clock)
    assert scan.pending == 0 and scan.changed == {25}
    assert body(scan.documents[25])["annotations"][0]["lead_time"] == 99.0


def test_a_growing_new_file_waits_until_it_is_at_rest(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    files = after_sync_files(fixtures_dir, "image-polygon")
    full = json.dumps(files[2]).encode()
    clock.write(tmp_path / "1.json", files[1])
    src = source(tmp_path, clock)
    assert sorted(settled(src, clock).documents) == [1]

    path = clock.write(tmp_path / "2.json", full[:100])
    for size in (200, 400, len(full)):  # written in pieces between scans
        scan = src.scan()
        assert sorted(scan.documents) == [1] and scan.pending == 1 and scan.unresolved == 1
        clock.advance(0.15)
        clock.write(path, full[:size])
    scan = src.scan()  # complete, but changed 0 s ago
    assert sorted(scan.documents) == [1] and scan.pending == 1
    clock.advance(0.1)
    scan = src.scan()  # 0.1 s at rest < 0.2
    assert scan.pending == 1
    clock.advance(0.15)
    scan = src.scan()
    assert sorted(scan.documents) == [1, 2] and scan.pending == 0 and scan.unresolved == 0
    assert scan.errors == [] and scan.changed == {2}


def test_a_file_changing_while_read_is_not_used(fixtures_dir: Path, tmp_path: Path, clock: Clock, monkeypatch):
    task = after_sync_files(fixtures_dir, "image-polygon")[3]
    path = clock.write(tmp_path / "3.json", task)
    src = source(tmp_path, clock)
    real = DirectorySource._read_file

    def read_then_append(self, name):
        data, _ = real(self, name)
        with open(name, "ab") as f:  # a writer appends right after our read
            f.write(b"\n")
        return data, _sig_of(name)

    monkeypatch.setattr(DirectorySource, "_read_file", read_then_append)
    clock.advance(1)
    scan = src.scan()
    assert scan.documents == {} and scan.pending == 1 and scan.read == 1
    monkeypatch.setattr(DirectorySource, "_read_file", real)
    scan = settled(src, clock)
    assert sorted(scan.documents) == [3] and path.exists()


def _sig_of(name: str) -> tuple[int, int, int, int]:
    st = os.stat(name)
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns


def test_an_invalid_file_gets_one_error_line(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    files = after_sync_files(fixtures_dir, "image-brush")
    for task_id, task in files.items():
        clock.write(tmp_path / f"{task_id}.json", task)
    bad = clock.write(tmp_path / "999.json", json.dumps(files[47])[:-40])  # truncated, never finished
    src = source(tmp_path, clock)
    scan = src.scan()
    assert scan.errors == [] and scan.pending == len(files) + 1
    scan = settled(src, clock)
    assert len(scan.errors) == 1 and scan.errors[0].startswith(f"{bad}: not valid JSON (")
    assert sorted(scan.documents) == sorted(files)
    assert scan.unresolved == 1  # what it holds is unknown: the caller must not delete now
    again = src.scan()
    assert again.errors == scan.errors and again.read == 0
    bad.unlink()
    assert src.scan().errors == [] and src.scan().unresolved == 0


def test_a_good_file_turned_bad_keeps_its_task(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    task = after_sync_files(fixtures_dir, "text-ner")[39]
    path = clock.write(tmp_path / "39.json", task)
    src = source(tmp_path, clock)
    good = settled(src, clock)
    clock.write(path, b'{"id": 39, "annotations": [')
    scan = settled(src, clock)
    assert scan.documents == good.documents and scan.fingerprints == good.fingerprints
    assert len(scan.errors) == 1 and str(path) in scan.errors[0] and scan.unresolved == 0
    clock.write(path, [1, 2])  # valid JSON, but not tasks
    scan = settled(src, clock)
    assert scan.documents == good.documents and len(scan.errors) == 1
    assert "item 0: not a Label Studio task" in scan.errors[0]


def test_an_array_with_bad_items_is_a_bad_file(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    files = after_sync_files(fixtures_dir, "audio-asr")
    path = clock.write(tmp_path / "tasks.json", [files[31], files[32]])
    src = source(tmp_path, clock)
    good = settled(src, clock)
    assert sorted(good.documents) == [31, 32]
    clock.write(path, [files[31], {"data": {"audio": "x"}}, "nope", files[32]])
    scan = settled(src, clock)
    assert scan.documents == good.documents and scan.unresolved == 0  # nothing is deleted because of it
    assert scan.errors == [f"{path}: item 1: not a Label Studio task (no integer \"id\"); "
                           f"item 2: not a Label Studio task (a JSON string, not an object)"]
    clock.write(path, [files[32]])
    scan = settled(src, clock)
    assert sorted(scan.documents) == [32] and scan.errors == [] and scan.changed == {31}


def test_nan_and_lone_surrogates_are_errors_not_crashes(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    task = after_sync_files(fixtures_dir, "text-ner")[45]
    clock.write(tmp_path / "45.json", task)
    clock.write(tmp_path / "nan.json", '{"id": 1, "data": {"x": NaN}, "annotations": [{"id": 1}]}')
    text = json.dumps({**task, "id": 2, "data": {"text": "\ud800"}})  # a lone surrogate, escaped
    clock.write(tmp_path / "2.json", text)
    scan = settled(source(tmp_path, clock), clock)
    assert sorted(scan.documents) == [45]
    assert len(scan.errors) == 2
    assert any("nan.json: not valid JSON (NaN is not valid JSON)" in e for e in scan.errors)
    assert any(e.startswith("task 2 (project 6): cannot be written as JSON") and "2.json" in e for e in scan.errors)
    assert scan.unresolved == 2  # nan.json holds unknown tasks; task 2 exists but has no document


# ------------------------------------------------------------------ rescans


def test_a_rescan_with_nothing_changed_reads_no_file(fixtures_dir: Path, tmp_path: Path, clock: Clock,
                                                       monkeypatch):
    files = after_sync_files(fixtures_dir, "text-classification")
    for task_id, task in files.items():
        clock.write(tmp_path / f"{task_id}.json", task)
    src = source(tmp_path, clock)
    first = settled(src, clock)
    assert first.read == len(files)

    reads: list[str] = []
    real = DirectorySource._read_file
    monkeypatch.setattr(DirectorySource, "_read_file", lambda self, p: reads.append(p) or real(self, p))
    monkeypatch.setattr(dir_source, "_part", _forbidden)  # nothing is parsed either
    for _ in range(3):
        clock.advance(5)
        scan = src.scan()
        assert scan.read == 0 and reads == [] and scan.changed == set()
        assert scan.documents == first.documents and scan.fingerprints == first.fingerprints
    monkeypatch.undo()

    clock.advance(1)
    clock.write(tmp_path / "26.json", {**files[26], "meta": {"edited": True}})
    monkeypatch.setattr(DirectorySource, "_read_file", lambda self, p: reads.append(p) or real(self, p))
    scan = settled(src, clock)
    assert reads == [str(tmp_path / "26.json")] and scan.changed == {26}
    assert {t for t in files if scan.fingerprints[t] != first.fingerprints[t]} == {26}


def _forbidden(*args, **kwargs):
    raise AssertionError("a file was parsed")


def test_ignored_files(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    task = after_sync_files(fixtures_dir, "image-polygon")[1]
    for name in (".1.json", "1.json.tmp", "1.json~", "notes.txt", ".hidden/1.json", "1.jsonl"):
        clock.write(tmp_path / name, task)
    clock.write(tmp_path / "README", "not json")  # no extension: read, like Label Studio's names
    scan = settled(source(tmp_path, clock), clock)
    assert scan.documents == {} and scan.files == 1 and scan.read == 1
    assert scan.errors == [f"{tmp_path / 'README'}: not valid JSON (Expecting value at line 1 column 1)"]


def test_unlabeled_tasks_are_not_documents(fixtures_dir: Path, tmp_path: Path, clock: Clock):
    task = after_sync_files(fixtures_dir, "image-polygon")[1]
    clock.write(tmp_path / "1.json", {**task, "annotations": []})
    scan = settled(source(tmp_path, clock), clock)
    assert scan.documents == {} and scan.errors == []


def test_first_scan_uses_files_already_at_rest(fixtures_dir: Path, tmp_path: Path):
    task = after_sync_files(fixtures_dir, "image-polygon")[1]
    (tmp_path / "1.json").write_text(json.dumps(task))
    (tmp_path / "2.json").write_text(json.dumps({**task, "id": 2}))
    os.utime(tmp_path / "1.json", (time.time() - 5,) * 2)
    scan = DirectorySource(tmp_path, settle_seconds=2.0).scan()
    assert sorted(scan.documents) == [1] and scan.pending == 1 and scan.unresolved == 1


def test_a_rescan_reads_no_unchanged_file(tmp_path: Path):
    """What keeps a rescan of many files cheap: files whose size and mtime did not change are
    not opened again (the speed itself is a benchmark's business, not a test's)."""
    count = 5_000
    old = time.time() - 60
    for i in range(1, count + 1):
        path = tmp_path / f"{i % 100:02d}" / f"{i}.json"
        if i <= 100:
            path.parent.mkdir()
        path.write_text(f'{{"id":{i},"data":{{"text":"t{i}"}},"annotations":[{{"id":{i},"result":[]}}]}}')
        os.utime(path, (old, old))
    src = DirectorySource(tmp_path)
    assert len(src.scan().documents) == count
    scan = src.scan()
    assert scan.read == 0 and len(scan.documents) == count


def test_missing_directory_and_urls(tmp_path: Path):
    with pytest.raises(SourceError, match="cannot list directory"):
        DirectorySource(tmp_path / "nope").scan()
    assert DirectorySource.from_url(f"dir://{tmp_path}").root == str(tmp_path)
    with pytest.raises(ConfigError):
        DirectorySource.from_url("file:///x")
    with pytest.raises(ConfigError):
        DirectorySource(tmp_path, settle_seconds=-1)
