"""Bundles' stable copy (``latest/``) on every kind of target.

Here rather than in tests/bundles because the S3 and GCS servers run in this process, and
converters fork worker processes only while no foreign thread runs (the converter tests, which
check the workers, run before this module).
"""

from __future__ import annotations

import hashlib
import json

import pytest

from syncd.bundles.build import build_and_publish, iter_project_tasks
from syncd.bundles.config import BundleConfig
from syncd.stores import open_store
from tests.bundles.test_build import Clock, RecordingStore, relabel_first_annotation, source  # noqa: F401
from tests.converters_helpers import needs_fixtures
from tests.servers import (  # noqa: F401  (pytest fixtures, registered under their own names)
    apply_env,
    azure_service_fixture,
    gcs_service_fixture,
    get_service,
    local_service_fixture,
    s3_service_fixture,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["local", "s3", "gcs", "azure"])
def any_store(request, monkeypatch):
    service = get_service(request, request.param)
    url, options, env = service.fresh_target("bundles")
    apply_env(monkeypatch, env)
    opened = open_store(url, options)
    service.configure(opened)
    opened.check_writable()
    yield opened
    opened.close()


def stored_files(store, prefix: str) -> dict[str, bytes]:
    return {info.key[len(prefix):]: store.get(info.key) for info in store.list(prefix)}


@needs_fixtures
def test_latest_folder_holds_exactly_the_current_build(source, any_store, clock, tmp_path):  # noqa: F811
    recording = RecordingStore(any_store)
    project = source.projects()[2]
    cfg = BundleConfig(formats=["YOLO"])
    [first] = build_and_publish(recording, project, lambda: iter_project_tasks(source, 2), cfg, now=clock)
    assert first.latest_key == "exports/2/YOLO/latest/"
    build = stored_files(any_store, f"{first.prefix}/{first.build_id}/")
    copied = stored_files(any_store, first.latest_key)
    # _SUCCESS is latest.json's twin: a reader copying latest/ knows which build it got.
    assert json.loads(copied.pop("_SUCCESS")) == json.loads(any_store.get(first.manifest_key))
    assert copied == build and len(build) == len(first.files)

    # A new build: what it lacks disappears from latest/; where listings say what an object holds
    # (sha256 in GCS and Azure metadata, S3's ETag), only what changed is uploaded again.
    relabel_first_annotation(tmp_path / "label_studio.sqlite3", 2)
    stray = b"0 0.5 0.5 0.1 0.1\n"
    any_store.put("exports/2/YOLO/latest/labels/gone.txt", stray, hashlib.sha256(stray).hexdigest())
    recording.puts.clear()
    [second] = build_and_publish(recording, project, lambda: iter_project_tasks(source, 2), cfg, now=clock)
    assert second.status == "published", second.error
    new_build = stored_files(any_store, f"{second.prefix}/{second.build_id}/")
    copied = stored_files(any_store, second.latest_key)
    assert json.loads(copied.pop("_SUCCESS"))["build_id"] == second.build_id
    assert copied == new_build
    changed = {p for p in new_build if new_build[p] != build.get(p)}
    assert changed and len(changed) < len(new_build)  # the relabelled task's file and notes.json
    rewritten = {k[len(second.latest_key):] for k in recording.puts if k.startswith(second.latest_key)}
    if any_store.url.startswith("file://") or not any_store.url.split("://")[0]:
        assert rewritten == set(new_build) | {"_SUCCESS"}  # a local listing has no content hash
    else:
        assert rewritten == changed | {"_SUCCESS"}
