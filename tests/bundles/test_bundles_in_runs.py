"""Bundles published by ``syncd resync`` and ``syncd run``."""

from __future__ import annotations

import json
import sqlite3

from tests.conftest import run_syncd
from tests.daemon_helpers import RunningSyncd, add_annotation, read_json, wait_for


def latest(out, project_id: int, fmt: str) -> dict | None:
    path = out / "exports" / str(project_id) / fmt / "latest.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_resync_publishes_bundles_once_and_again_after_a_change(ls_db, tmp_path, fixtures_dir):
    out = tmp_path / "out"
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"db": f"sqlite:///{ls_db}", "target": str(out),
                                  "state": str(tmp_path / "s.sqlite3"), "bundles": ["YOLO", "CONLL2003"]}))
    first = run_syncd("resync", "--config", str(config))
    assert first.returncode == 0, first.stderr
    yolo = latest(out, 2, "YOLO")
    assert yolo is not None and yolo["task_count"] == 7
    build = out / "exports" / "2" / "YOLO" / yolo["build_id"]
    expected = {p.name: p.read_text() for p in (fixtures_dir / "exports" / "image-bbox" / "YOLO" / "labels").iterdir()
                if p.read_text()}  # Label Studio's export also has empty files for unlabeled tasks
    assert {p.name: p.read_text() for p in (build / "labels").iterdir()} == expected
    assert latest(out, 6, "CONLL2003") is not None
    assert latest(out, 2, "CONLL2003") is None  # does not apply to a bounding-box project
    assert "bundles:" in first.stderr

    second = run_syncd("resync", "--config", str(config))
    assert "bundles:" not in second.stderr  # nothing changed, nothing missing
    assert latest(out, 2, "YOLO")["build_id"] == yolo["build_id"]

    conn = sqlite3.connect(ls_db)
    add_annotation(conn, 11, [])
    conn.close()
    third = run_syncd("resync", "--config", str(config))
    assert third.returncode == 0, third.stderr
    assert latest(out, 2, "YOLO")["build_id"] != yolo["build_id"]
    assert latest(out, 2, "YOLO")["task_count"] == 8
    assert latest(out, 6, "CONLL2003")["build_id"] is not None


def test_daemon_rebuilds_bundles_after_the_debounce(ls_db, tmp_path):
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(out),
                          {"bundles": {"formats": ["JSON"], "debounce": 0.5, "keep": 1}})
    try:
        daemon.wait_ready()
        first = wait_for(lambda: latest(out, 2, "JSON"), 15, "the first JSON bundle")
        conn = sqlite3.connect(ls_db)
        add_annotation(conn, 11, [])
        conn.close()
        second = wait_for(lambda: (latest(out, 2, "JSON") or {}).get("build_id") != first["build_id"]
                          and latest(out, 2, "JSON"), 15, "a new JSON bundle")
        assert second["task_count"] == first["task_count"] + 1

        def builds() -> list[str]:
            return [p.name for p in (out / "exports" / "2" / "JSON").iterdir()
                    if p.is_dir() and p.name != "latest" and any(p.iterdir())]

        # keep: 1 (older builds are removed after latest.json names the new one)
        wait_for(lambda: builds() == [second["build_id"]], 15, "only the new build left")
        # The stable copy and the index follow the new build.
        assert read_json(out / "exports/2/JSON/latest/_SUCCESS")["build_id"] == second["build_id"]
        assert read_json(out / "exports/2/JSON/latest/result.json") == \
            read_json(out / "exports/2/JSON" / second["build_id"] / "result.json")
        index = {(e["project_id"], e["format"]): e for e in read_json(out / "exports/bundles.json")["bundles"]}
        assert index[(2, "JSON")]["build_id"] == second["build_id"]
    finally:
        assert daemon.stop() == 0, daemon.logs()


def test_a_slow_bundle_build_does_not_hold_up_syncing(ls_db, tmp_path, monkeypatch):
    """Bundles are built off the sync loop: while a COCO build is held up, a change made during
    it still reaches the target (before the build is let go)."""
    import dataclasses
    import threading

    import converters
    from syncd import config as config_mod
    from syncd.daemon import Daemon

    coco = converters.get("COCO")
    building, release = threading.Event(), threading.Event()
    convert = coco.convert_fn

    def slow_convert(*args, **kwargs):
        building.set()
        release.wait(20)  # a build of many tasks
        return convert(*args, **kwargs)

    monkeypatch.setitem(converters.base._REGISTRY, "COCO", dataclasses.replace(coco, convert_fn=slow_convert))
    out = tmp_path / "out"
    cfg = config_mod.from_mapping({"db": f"sqlite:///{ls_db}", "target": str(out), "state": str(tmp_path / "s"),
                                   "listen": "", "poll_interval": 0.2, "reconcile_interval": 60,
                                   "predictions": "ids", "bundles": {"formats": ["COCO"], "debounce": 0}})
    daemon = Daemon(cfg, lambda: cfg)
    runner = threading.Thread(target=daemon.serve, daemon=True)
    runner.start()
    try:
        wait_for(building.is_set, 30, "a bundle build to start")
        wait_for(lambda: daemon.health.get()[0], 10, "the daemon to be in step")
        conn = sqlite3.connect(ls_db)
        annotation = add_annotation(conn, 11, [{"value": {"x": 1}}])
        conn.close()
        wait_for(lambda: annotation in {a["id"] for a in (read_json(out / "11.json") or {}).get("annotations", [])},
                 15, "the change to reach the target")
        assert not release.is_set() and building.is_set()  # the build is still held up
        release.set()
        # and the held-up builds are published in the end
        wait_for(lambda: latest(out, 2, "COCO") is not None, 30, "the COCO bundle of project 2")
    finally:
        release.set()
        daemon.shutdown()
        runner.join(20)
    assert not runner.is_alive()
