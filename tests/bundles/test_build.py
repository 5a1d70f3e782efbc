"""Bundles: converted exports published per project and format, a build at a time, latest.json last.

Content is checked against Label Studio 1.23.2's own exports in the fixture set; the source side
is the fixture database (``examples/label_studio.sqlite3``) read through ``LabelStudioSource``,
the target a local directory (``LocalStore``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import sqlite3
import threading
import zipfile
from pathlib import Path

import pytest

from syncd.bundles import build as bundles
from syncd.bundles.build import (
    BUILD_ID,
    build_and_publish,
    check_formats,
    iter_project_tasks,
    missing_bundles,
    publish_project,
)
from syncd.bundles.config import BundleConfig, parse_bundle_config
from syncd.bundles.scheduler import BundleScheduler
from syncd.document import DocumentOptions
from syncd.errors import ConfigError, SourceError, StoreError
from syncd.sources.base import Project
from syncd.sources.labelstudio import LabelStudioSource
from syncd.sources.labelstudio.database import connect
from syncd.stores.local import LocalStore
from tests.conftest import EXAMPLE_DB
from tests.converters_helpers import EXPORTS, FIXTURES, PROJECTS, files_under, needs_fixtures

T0 = 1_795_000_000.0  # 2026-11-18T09:46:40Z


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def source(tmp_path):
    db_path = tmp_path / "label_studio.sqlite3"
    shutil.copyfile(EXAMPLE_DB, db_path)
    db = connect(f"sqlite:///{db_path}")
    try:
        # small batches: streaming across batches; Label Studio's export shape, as bundles read it
        yield LabelStudioSource(db, batch_size=3, options=DocumentOptions(predictions="ids"))
    finally:
        db.close()


@pytest.fixture
def target(tmp_path) -> Path:
    return tmp_path / "target"


@pytest.fixture
def store(target) -> LocalStore:
    local = LocalStore(target)
    local.check_writable()  # as resync and the daemon do before writing
    return local


class Clock:
    """A fake ``time.time``: each build gets a later second, so build ids sort by build order."""

    def __init__(self, start: float = T0):
        self.t = start

    def __call__(self) -> float:
        self.t += 61.0
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def syncd_log(caplog):
    """Records of the ``syncd`` logger (which may not propagate to the root once logs.setup ran)."""
    logger = logging.getLogger("syncd")
    propagate = logger.propagate
    logger.propagate = False
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="syncd")
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate


class RecordingStore:
    """A store that forwards to another, records every put in order, and fails on chosen keys."""

    def __init__(self, inner, fail_on=lambda key: False, fatal: bool = False):
        self.inner = inner
        self.url = inner.url
        self.identity = inner.identity
        self.listing_hashes = inner.listing_hashes
        self.fail_on = fail_on
        self.fatal = fatal
        self.stop = None
        self.puts: list[str] = []
        self.deletes: list[str] = []

    def put(self, key, data, sha256):
        if self.fail_on(key):
            raise StoreError(f"cannot write {key}: access denied (test)", fatal=self.fatal)
        assert hashlib.sha256(data).hexdigest() == sha256
        etag = self.inner.put(key, data, sha256)
        self.puts.append(key)
        return etag

    def delete(self, key):
        self.deletes.append(key)
        self.inner.delete(key)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def head(self, key):
        return self.inner.head(key)

    def get(self, key):
        return self.inner.get(key)

    def check_writable(self):
        self.inner.check_writable()

    def close(self):
        self.inner.close()


def project_ids() -> dict[str, int]:
    manifest = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
    return {slug: p["id"] for slug, p in manifest["projects"].items()}


def publish(source, store, project_id: int, clock, **config) -> list[bundles.PublishedBundle]:
    cfg = BundleConfig(**config)
    project = source.projects()[project_id]
    return publish_project(source, store, project, cfg, now=clock)


def latest(target: Path, prefix: str) -> dict:
    return json.loads((target / prefix / "latest.json").read_text(encoding="utf-8"))


def build_files(target: Path, prefix: str, build_id: str) -> set[str]:
    root = target / prefix / build_id
    return files_under(root) if root.is_dir() else set()


def builds_under(store, prefix: str) -> set[str]:
    return {info.key[len(prefix) + 1:].split("/", 1)[0] for info in store.list(prefix + "/")
            if BUILD_ID.match(info.key[len(prefix) + 1:].split("/", 1)[0])}


# ------------------------------------------------------------------------------------ content


@needs_fixtures
def test_yolo_bundle_has_label_studios_label_files(source, store, target, clock):
    [result] = publish(source, store, project_ids()["image-bbox"], clock, formats=["YOLO"])
    assert result.status == "published", result.error
    assert result.task_count == 7  # the project's labeled tasks
    manifest = latest(target, "exports/2/YOLO")
    assert manifest["build_id"] == result.build_id
    ours = target / "exports/2/YOLO" / result.build_id
    theirs = EXPORTS / "image-bbox" / "YOLO"

    # Label Studio's export was made with download_all_tasks=true: it also has one empty label
    # file per unlabeled task. syncd bundles hold labeled tasks only (as syncd's documents do).
    all_tasks = json.loads((EXPORTS / "image-bbox" / "JSON.json").read_text(encoding="utf-8"))
    unlabeled = [t for t in all_tasks if not t["annotations"]]
    their_labels = files_under(theirs / "labels")
    our_labels = files_under(ours / "labels")
    assert our_labels <= their_labels
    extra = their_labels - our_labels
    assert len(extra) == len(unlabeled) == 4
    assert all((theirs / "labels" / name).stat().st_size == 0 for name in extra)
    for name in sorted(our_labels):
        assert (ours / "labels" / name).read_text(encoding="utf-8").splitlines() == \
            (theirs / "labels" / name).read_text(encoding="utf-8").splitlines(), name
    assert (ours / "classes.txt").read_text(encoding="utf-8") == (theirs / "classes.txt").read_text(encoding="utf-8")
    assert json.loads((ours / "notes.json").read_text())["categories"] == \
        json.loads((theirs / "notes.json").read_text())["categories"]
    assert {f["path"] for f in manifest["files"]} == files_under(ours) == \
        {"classes.txt", "notes.json"} | {f"labels/{n}" for n in our_labels}


@needs_fixtures
@pytest.mark.parametrize("slug", PROJECTS)
def test_json_bundle_equals_label_studios_export_of_labeled_tasks(slug, source, store, target, clock):
    # JSON.annotated-only.json is Label Studio's export of the tasks that have an annotation.
    pid = project_ids()[slug]
    [result] = publish(source, store, pid, clock, formats=["JSON"])
    assert result.status == "published", result.error
    ours = json.loads((target / result.prefix / result.build_id / "result.json").read_text(encoding="utf-8"))
    theirs = json.loads((EXPORTS / slug / "JSON.annotated-only.json").read_text(encoding="utf-8"))
    assert ours == theirs
    assert result.task_count == len(theirs)


# ------------------------------------------------------------------------------------ publishing


@needs_fixtures
def test_latest_json_is_written_last_and_matches_the_stored_files(source, store, target, clock):
    recording = RecordingStore(store)
    project = source.projects()[2]
    results = build_and_publish(recording, project, lambda: iter_project_tasks(source, 2),
                                BundleConfig(formats=["YOLO", "COCO"]), now=clock)
    assert [r.status for r in results] == ["published", "published"]
    for result in results:
        build = [k for k in recording.puts if k.startswith(f"{result.prefix}/{result.build_id}/")]
        mine = [k for k in recording.puts if k.startswith(result.prefix + "/")]
        assert mine.count(f"{result.prefix}/latest.json") == 1
        # latest.json makes the build current: after every file of the build, before the copies.
        assert mine.index(f"{result.prefix}/latest.json") == len(build)
        assert mine[-1] == f"{result.prefix}/latest/_SUCCESS"
        manifest = latest(target, result.prefix)
        assert list(manifest) == ["build_id", "format", "project_id", "created_at", "task_count", "files"]
        assert manifest["build_id"] == result.build_id and BUILD_ID.match(result.build_id)
        assert manifest["format"] == result.format
        assert manifest["project_id"] == 2
        assert manifest["task_count"] == 7
        assert manifest["created_at"].endswith("Z") and manifest["created_at"][:4] == "2026"
        assert result.build_id[:8] == manifest["created_at"][:10].replace("-", "")
        listed = {info.key: info for info in store.list(f"{result.prefix}/{result.build_id}/")}
        assert set(listed) == {f"{result.prefix}/{result.build_id}/{f['path']}" for f in manifest["files"]}
        for f in manifest["files"]:
            data = (target / result.prefix / result.build_id / f["path"]).read_bytes()
            assert f["size"] == len(data) == listed[f"{result.prefix}/{result.build_id}/{f['path']}"].size
            assert f["sha256"] == hashlib.sha256(data).hexdigest()
        assert [(f.path, f.size, f.sha256) for f in result.files] == \
            [(f["path"], f["size"], f["sha256"]) for f in manifest["files"]]
    # No object is written twice, but the index, which each publish rebuilds.
    bundle_puts = [k for k in recording.puts if k != "exports/bundles.json"]
    assert len(bundle_puts) == len(set(bundle_puts))
    assert not recording.deletes  # nothing to prune on a first build


@needs_fixtures
def test_keep_removes_older_builds_but_not_the_current_one(source, store, target, clock):
    first = publish(source, store, 2, clock, formats=["YOLO"], keep=1)[0]
    # Objects under the prefix that are not builds are never touched.
    store.put("exports/2/YOLO/README.txt", b"hi", hashlib.sha256(b"hi").hexdigest())
    store.put("exports/2/YOLO/mine/x.txt", b"x", hashlib.sha256(b"x").hexdigest())
    assert build_files(target, first.prefix, first.build_id)
    second = publish(source, store, 2, clock, formats=["YOLO"], keep=1)[0]
    assert second.status == "published" and second.build_id > first.build_id
    assert second.removed_builds == [first.build_id]
    assert build_files(target, first.prefix, first.build_id) == set()
    assert builds_under(store, first.prefix) == {second.build_id}
    assert latest(target, first.prefix)["build_id"] == second.build_id
    assert build_files(target, second.prefix, second.build_id) == {f.path for f in second.files}
    assert (target / "exports/2/YOLO/README.txt").read_bytes() == b"hi"
    assert (target / "exports/2/YOLO/mine/x.txt").read_bytes() == b"x"

    # keep: 2 keeps the current build and the one before it.
    third = publish(source, store, 2, clock, formats=["YOLO"], keep=2)[0]
    assert third.removed_builds == []
    fourth = publish(source, store, 2, clock, formats=["YOLO"], keep=2)[0]
    assert fourth.removed_builds == [second.build_id]
    assert builds_under(store, first.prefix) == {third.build_id, fourth.build_id}


@needs_fixtures
@pytest.mark.parametrize("transfers", [1, 4])
def test_a_failed_upload_leaves_latest_on_the_previous_build(source, store, target, clock, transfers, syncd_log):
    project = source.projects()[2]
    cfg = BundleConfig(formats=["YOLO"], keep=1)
    [first] = build_and_publish(store, project, lambda: iter_project_tasks(source, 2), cfg, now=clock)
    before = (target / first.prefix / "latest.json").read_bytes()
    before_files = {p: (target / first.prefix / first.build_id / p).read_bytes()
                    for p in build_files(target, first.prefix, first.build_id)}

    # notes.json is the last file uploaded: with one transfer at a time, every label file is
    # already written when it fails, and must be cleaned up.
    failing = RecordingStore(store, fail_on=lambda key: key.endswith("/notes.json"))
    [second] = build_and_publish(failing, project, lambda: iter_project_tasks(source, 2), cfg,
                                 now=clock, transfers=transfers)
    assert second.status == "failed" and not second.ok
    assert "notes.json" in second.error and "access denied" in second.error
    assert (target / first.prefix / "latest.json").read_bytes() == before
    assert builds_under(store, first.prefix) == {first.build_id}  # the failed build is cleaned up
    assert {p: (target / first.prefix / first.build_id / p).read_bytes()
            for p in build_files(target, first.prefix, first.build_id)} == before_files
    assert not any(k.endswith("latest.json") for k in failing.puts)
    if transfers == 1:
        assert len(failing.puts) > 5 and set(failing.deletes) == set(failing.puts)
    errors = [r for r in syncd_log.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "YOLO" in errors[0].getMessage() and "previous build" in errors[0].getMessage()

    # The next build that succeeds becomes current and removes the old one (keep: 1).
    [third] = build_and_publish(store, project, lambda: iter_project_tasks(source, 2), cfg, now=clock)
    assert third.status == "published"
    assert builds_under(store, first.prefix) == {third.build_id}


@needs_fixtures
def test_a_failed_manifest_write_keeps_the_previous_build(source, store, target, clock):
    project = source.projects()[2]
    cfg = BundleConfig(formats=["YOLO"])
    [first] = build_and_publish(store, project, lambda: iter_project_tasks(source, 2), cfg, now=clock)
    before = (target / first.prefix / "latest.json").read_bytes()
    failing = RecordingStore(store, fail_on=lambda key: key.endswith("/latest.json"))
    [second] = build_and_publish(failing, project, lambda: iter_project_tasks(source, 2), cfg, now=clock)
    assert second.status == "failed" and "latest.json" in second.error
    assert (target / first.prefix / "latest.json").read_bytes() == before
    assert builds_under(store, first.prefix) == {first.build_id}


@needs_fixtures
def test_a_manifest_write_that_landed_despite_an_error_counts(source, store, target, clock):
    class LateError(RecordingStore):
        def put(self, key, data, sha256):
            super().put(key, data, sha256)
            if key.endswith("/latest.json"):
                raise StoreError("connection reset after the upload (test)")

    [result] = build_and_publish(LateError(store), source.projects()[2], lambda: iter_project_tasks(source, 2),
                                 BundleConfig(formats=["YOLO"]), now=clock)
    assert result.status == "published"
    assert latest(target, result.prefix)["build_id"] == result.build_id
    assert build_files(target, result.prefix, result.build_id) == {f.path for f in result.files}


@needs_fixtures
def test_a_fatal_store_error_is_raised_after_cleaning_up(source, store, target, clock):
    project = source.projects()[2]
    failing = RecordingStore(store, fail_on=lambda key: key.endswith("/notes.json"), fatal=True)
    with pytest.raises(StoreError, match="access denied"):
        build_and_publish(failing, project, lambda: iter_project_tasks(source, 2),
                          BundleConfig(formats=["YOLO"]), now=clock, transfers=1)
    assert list(store.list("exports/")) == []


@needs_fixtures
def test_a_stop_during_the_upload_publishes_nothing(source, store, target, clock, tmp_path):
    stop = threading.Event()
    stopping = RecordingStore(store)
    put = stopping.put

    def put_then_stop(key, data, sha256):
        put(key, data, sha256)
        stop.set()  # SIGTERM arrives after the first file

    stopping.put = put_then_stop
    work = tmp_path / "work"
    work.mkdir()
    results = build_and_publish(stopping, source.projects()[2], lambda: iter_project_tasks(source, 2),
                                BundleConfig(formats=["YOLO", "COCO"]), now=clock, transfers=1, stop=stop,
                                work_dir=work)
    assert [(r.status, r.error) for r in results] == [("failed", "interrupted"), ("failed", "interrupted")]
    assert len(stopping.puts) == 1 and stopping.deletes == stopping.puts
    assert list(store.list("")) == []
    assert list(work.iterdir()) == []  # the temporary conversion folder is gone


@needs_fixtures
def test_formats_that_do_not_apply_are_skipped_with_one_log_line(source, store, target, clock, syncd_log):
    results = publish(source, store, 4, clock, formats=["YOLO", "CSV", "CONLL2003"])  # Choices + TextArea project
    assert [(r.format, r.status) for r in results] == [("YOLO", "skipped"), ("CSV", "published"),
                                                       ("CONLL2003", "skipped")]
    assert results[0].skipped.startswith("YOLO needs RectangleLabels")
    skipped = [r.getMessage() for r in syncd_log.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2
    assert all(r.levelno == logging.INFO for r in syncd_log.records if "skipped" in r.getMessage())
    assert "YOLO" in skipped[0] and "project 4" in skipped[0] and results[0].skipped in skipped[0]
    assert "CONLL2003" in skipped[1] and results[2].skipped in skipped[1]
    assert not (target / "exports/4/YOLO").exists() and not (target / "exports/4/CONLL2003").exists()
    assert latest(target, "exports/4/CSV")["task_count"] == 6


@needs_fixtures
def test_a_task_that_cannot_be_built_is_left_out_with_a_warning(source, store, target, clock, syncd_log, tmp_path):
    with sqlite3.connect(tmp_path / "label_studio.sqlite3") as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE task SET data = '{not json' WHERE id = 7")
    docs = list(iter_project_tasks(source, 2))
    assert [d["id"] for d in docs] == [8, 9, 10, 12, 15, 16]
    warnings = [r.getMessage() for r in syncd_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "task 7" in warnings[0]
    [result] = publish(source, store, 2, clock, formats=["YOLO"])
    assert result.status == "published" and result.task_count == 6


@needs_fixtures
def test_zip_bundle_holds_the_same_files(source, store, target, clock):
    [plain] = publish(source, store, 2, clock, formats=["YOLO"])
    [zipped] = publish(source, store, 2, clock, formats=["YOLO"], zip=True,
                       key_template="zips/{project_slug}-{project_id}/{format}")
    assert zipped.prefix == "zips/street-scenes-object-detection-2/YOLO"
    assert [f.path for f in zipped.files] == ["YOLO.zip"]
    data = (target / zipped.prefix / zipped.build_id / "YOLO.zip").read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
        assert "images/" in zf.namelist()  # the empty folder, as in Label Studio's zip
    assert set(members) == {f.path for f in plain.files}
    for name, content in members.items():
        if name != "notes.json":  # notes.json has the time of the export
            assert content == (target / plain.prefix / plain.build_id / name).read_bytes(), name


def test_errors_of_the_task_source_propagate(store, clock):
    project = Project(1, "P", "p", "", {})

    def tasks():
        yield {"id": 1, "annotations": [], "data": {}}
        raise SourceError("database is locked (test)")

    with pytest.raises(SourceError, match="database is locked"):
        build_and_publish(store, project, tasks, BundleConfig(formats=["JSON"]), now=clock)
    assert list(store.list("")) == []


def test_a_one_shot_iterator_is_refused_for_several_formats(store, clock):
    project = Project(1, "P", "p", "", {})
    with pytest.raises(TypeError, match="callable"):
        build_and_publish(store, project, iter([]), BundleConfig(formats=["JSON", "CSV"]), now=clock)
    [result] = build_and_publish(store, project, iter([]), BundleConfig(formats=["JSON"]), now=clock)
    assert result.status == "published" and result.task_count == 0


@needs_fixtures
def test_missing_bundles(source, store, clock):
    project = source.projects()[2]
    cfg = BundleConfig(formats=["YOLO", "CONLL2003", "CSV"])
    assert missing_bundles(store, project, cfg) == ["YOLO", "CSV"]  # CONLL2003 does not apply
    build_and_publish(store, project, lambda: iter_project_tasks(source, 2), cfg, now=clock, formats=["CSV"])
    assert missing_bundles(store, project, cfg) == ["YOLO"]
    # A build whose stable copy is incomplete (published by an older syncd, or a copy cut short)
    # counts as missing, so the next resync completes it.
    store.delete("exports/2/CSV/latest/_SUCCESS")
    assert missing_bundles(store, project, cfg) == ["YOLO", "CSV"]


# ------------------------------------------------------------------------------------ configuration


def parse(raw):
    """The ``bundles:`` section as a command reads it: parsed, then its formats checked."""
    return check_formats(parse_bundle_config(raw, "config.yaml: bundles"), "config.yaml: bundles")


@pytest.mark.parametrize("raw, expected", [
    (None, None),
    ([], None),
    ({"formats": []}, None),
    (["COCO", "yolo"], BundleConfig(formats=["COCO", "YOLO"])),
    ("yolo-obb", BundleConfig(formats=["YOLO_OBB"])),
    (["json", "JSON"], BundleConfig(formats=["JSON"])),
    ({"formats": ["COCO", "YOLO"], "keep": 1, "debounce": 0, "zip": "yes",
      "key_template": "bundles/{project_slug}-{project_id}/{format}/"},
     BundleConfig(formats=["COCO", "YOLO"], keep=1, debounce=0.0, zip=True,
                  key_template="bundles/{project_slug}-{project_id}/{format}")),
    ({"formats": ["CSV"], "keep": None, "debounce": "2.5"}, BundleConfig(formats=["CSV"], debounce=2.5)),
])
def test_bundle_config_accepts(raw, expected):
    assert parse(raw) == expected


@pytest.mark.parametrize("raw, message", [
    ({"formats": ["COCOO"]},
     "config.yaml: bundles.formats: unknown format 'COCOO'; did you mean 'COCO'? known: JSON, JSON_MIN, CSV"),
    (["XLSX"], "config.yaml: bundles.formats: unknown format 'XLSX'; known: JSON, JSON_MIN, CSV, TSV"),
    ({"keep": 2}, "config.yaml: bundles.formats: missing; list the formats to build"),
    ({"formats": "COCO", "kep": 2}, "config.yaml: bundles: unknown key 'kep'; did you mean 'keep'?"),
    ({"formats": {"COCO": 1}}, "config.yaml: bundles.formats: must be a list of formats"),
    ({"formats": [3]}, "config.yaml: bundles.formats: formats are names such as COCO or YOLO, got 3"),
    (42, "config.yaml: bundles: must be a list of formats or a mapping"),
    ({"formats": ["CSV"], "keep": 0}, "config.yaml: bundles.keep: must be a whole number from 1 to 1000, got 0"),
    ({"formats": ["CSV"], "keep": 1.5}, "config.yaml: bundles.keep: must be a whole number"),
    ({"formats": ["CSV"], "keep": True}, "config.yaml: bundles.keep: must be a whole number"),
    ({"formats": ["CSV"], "debounce": -1}, "config.yaml: bundles.debounce: must be a number of seconds"),
    ({"formats": ["CSV"], "debounce": "soon"}, "config.yaml: bundles.debounce: must be a number of seconds"),
    ({"formats": ["CSV"], "zip": "maybe"}, "config.yaml: bundles.zip: must be true or false, got 'maybe'"),
    ({"formats": ["CSV"], "key_template": 5}, "config.yaml: bundles.key_template: must be a string"),
    ({"formats": ["CSV"], "key_template": "exports/{task_id}/{format}"},
     "config.yaml: bundles.key_template: unknown field {task_id}"),
    ({"formats": ["CSV"], "key_template": "exports/{project_id}"},
     "config.yaml: bundles.key_template: 'exports/{project_id}' must contain {format}"),
    ({"formats": ["CSV"], "key_template": "exports/{project_slug}/{format}"},
     "config.yaml: bundles.key_template: 'exports/{project_slug}/{format}' must contain {project_id}"),
    ({"formats": ["CSV"], "key_template": "../{project_id}/{format}"},
     "config.yaml: bundles.key_template: '../{project_id}/{format}' gives unsafe keys"),
    ({"formats": ["CSV"], "key_template": "/abs/{project_id}/{format}"},
     "config.yaml: bundles.key_template: '/abs/{project_id}/{format}' gives unsafe keys"),
    ({"formats": ["CSV"], "key_template": "a\\b/{project_id}/{format}"}, "gives unsafe keys"),
    ({"formats": ["CSV"], "key_template": "{project_id/{format}"}, "is not a valid template"),
    ({"formats": ["CSV"], "key_template": ".syncd-tmp/{project_id}/{format}"}, "reserved"),
])
def test_bundle_config_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as info:
        parse(raw)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text


# ------------------------------------------------------------------------------------ the scheduler


def test_scheduler_waits_for_a_quiet_period():
    s = BundleScheduler(debounce=30)
    assert s.due(0) == [] and s.next_due(0) is None
    s.mark_changed([1, 2], now=100)
    s.mark_changed([2], now=110)
    assert s.next_due(100) == 30
    assert s.due(129) == []
    assert s.due(130) == [1]  # 30 s after its only change
    assert s.pending == {2}
    assert s.due(139) == []
    assert s.due(140) == [2]  # 30 s after its last change
    assert s.due(1000) == [] and s.pending == set()


def test_scheduler_delivers_a_busy_project_within_five_debounce_periods():
    s = BundleScheduler(debounce=10)
    for t in range(0, 200, 5):  # a change every 5 s, never quiet for 10 s
        s.mark_changed([7], now=t)
        if t < 50:
            assert s.due(t) == []
        if s.due(t):
            break
    assert t == 50  # 5 x debounce after the first change
    s.mark_changed([7], now=51)  # the next change starts a new period
    assert s.due(60) == [] and s.due(61) == [7]


def test_scheduler_edge_cases():
    s = BundleScheduler(debounce=0)
    s.mark_changed([3, None, 1], now=5)
    assert s.due(5) == [1, 3]
    s = BundleScheduler(debounce=30, max_delay=40)
    s.mark_changed([1], now=0)
    s.mark_changed([1], now=25)
    assert s.next_due(25) == 15 and s.due(39) == [] and s.due(40) == [1]


# ------------------------------------------------------------------------ stable copies and index


def latest_files(target: Path, prefix: str) -> dict[str, bytes]:
    root = target / prefix / "latest"
    return {p: (root / p).read_bytes() for p in files_under(root)} if root.is_dir() else {}


def relabel_first_annotation(db_path: Path, project_id: int) -> None:
    """Change one annotation of the project as Label Studio's editor would (a new result)."""
    raw = sqlite3.connect(db_path)
    try:
        ann_id, result = raw.execute(
            "SELECT c.id, c.result FROM task_completion c JOIN task t ON t.id = c.task_id "
            "WHERE t.project_id = ? ORDER BY c.id LIMIT 1", (project_id,)).fetchone()
        regions = json.loads(result)
        regions[0]["value"]["x"] = regions[0]["value"]["x"] / 2
        raw.execute("UPDATE task_completion SET result = ? WHERE id = ?", (json.dumps(regions), ann_id))
        raw.commit()
    finally:
        raw.close()


@needs_fixtures
def test_a_half_updated_latest_folder_has_no_success_marker(source, store, target, clock, syncd_log, tmp_path):
    project = source.projects()[2]
    cfg = BundleConfig(formats=["YOLO"])
    [first] = build_and_publish(store, project, lambda: iter_project_tasks(source, 2), cfg, now=clock)
    relabel_first_annotation(tmp_path / "label_studio.sqlite3", 2)
    failing = RecordingStore(store, fail_on=lambda key: "/latest/labels/" in key)
    [second] = build_and_publish(failing, project, lambda: iter_project_tasks(source, 2), cfg, now=clock)
    # The build itself is published (latest.json names it); its copy in latest/ is not complete,
    # and says so by having no _SUCCESS.
    assert latest(target, first.prefix)["build_id"] == second.build_id
    assert second.status == "failed" and "latest/" in second.error
    assert "_SUCCESS" not in latest_files(target, first.prefix)
    assert any("repairs it" in r.getMessage() for r in syncd_log.records)
    # The next build repairs it.
    [third] = build_and_publish(store, project, lambda: iter_project_tasks(source, 2), cfg, now=clock)
    copied = latest_files(target, first.prefix)
    assert json.loads(copied.pop("_SUCCESS"))["build_id"] == third.build_id
    assert copied == {f.path: (target / third.prefix / third.build_id / f.path).read_bytes() for f in third.files}


@needs_fixtures
def test_latest_zip_is_the_current_builds_zip(source, store, target, clock):
    [zipped] = publish(source, store, 2, clock, formats=["YOLO"], zip=True)
    assert zipped.latest_key == "exports/2/YOLO/latest.zip"
    assert (target / "exports/2/YOLO/latest.zip").read_bytes() == \
        (target / zipped.prefix / zipped.build_id / "YOLO.zip").read_bytes()
    assert latest_files(target, zipped.prefix) == {}
    # Switching zip off replaces latest.zip with latest/.
    [plain] = publish(source, store, 2, clock, formats=["YOLO"])
    assert not (target / "exports/2/YOLO/latest.zip").exists()
    assert "_SUCCESS" in latest_files(target, plain.prefix)


@needs_fixtures
def test_bundles_json_lists_every_current_bundle(source, store, target, clock):
    ids = project_ids()
    image, text = ids["image-bbox"], ids["text-ner"]
    published = publish(source, store, image, clock, formats=["YOLO", "COCO"]) + \
        publish(source, store, text, clock, formats=["CONLL2003"])
    assert all(r.status == "published" for r in published)
    index = json.loads((target / "exports/bundles.json").read_text(encoding="utf-8"))
    entries = {(e["project_id"], e["format"]): e for e in index["bundles"]}
    assert set(entries) == {(image, "YOLO"), (image, "COCO"), (text, "CONLL2003")}
    titles = {p.id: p.title for p in source.projects().values()}
    for r in published:
        e = entries[(r.project_id, r.format)]
        assert e["project_title"] == titles[r.project_id]
        assert e["build_id"] == r.build_id and e["task_count"] == r.task_count
        # Every key in the index is readable as written, without syncd.
        assert latest(target, r.prefix)["build_id"] == r.build_id
        assert (target / e["manifest_key"]).is_file()
        assert (target / e["key"]).is_dir() and (target / e["latest_key"] / "_SUCCESS").is_file()
    # A new build of one format replaces its entry only.
    [again] = publish(source, store, image, clock, formats=["COCO"])
    index = json.loads((target / "exports/bundles.json").read_text(encoding="utf-8"))
    entries = {(e["project_id"], e["format"]): e["build_id"] for e in index["bundles"]}
    assert entries[(image, "COCO")] == again.build_id
    assert entries[(image, "YOLO")] == published[0].build_id


@needs_fixtures
def test_processes_publishing_at_once_lose_no_index_entry(tmp_path, store, target):
    # Replicas publish different projects at the same moment, each through its own store client.
    db_path = tmp_path / "label_studio.sqlite3"
    shutil.copyfile(EXAMPLE_DB, db_path)
    ids = sorted(project_ids().values())
    errors: list[BaseException] = []

    def publisher(project_id: int) -> None:
        db = connect(f"sqlite:///{db_path}")
        try:
            source = LabelStudioSource(db, options=DocumentOptions(predictions="ids"))
            own_store = LocalStore(target)
            for fmt in ("JSON", "CSV"):
                publish(source, own_store, project_id, Clock(), formats=[fmt])
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=publisher, args=(pid,)) for pid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    index = json.loads((target / "exports/bundles.json").read_text(encoding="utf-8"))
    assert {(e["project_id"], e["format"]) for e in index["bundles"]} == \
        {(pid, fmt) for pid in ids for fmt in ("JSON", "CSV")}
