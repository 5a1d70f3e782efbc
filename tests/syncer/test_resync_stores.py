"""``syncd resync`` of each fixture database into each store, through the real command line."""

from __future__ import annotations

import json

import pytest

from tests.conftest import exported_tasks, fixture_projects, run_syncd
from tests.servers import (
    azure_service_fixture,  # noqa: F401  (pytest fixtures, registered under their own names)
    gcs_service_fixture,  # noqa: F401
    get_service,
    local_service_fixture,  # noqa: F401
    s3_auth_service_fixture,  # noqa: F401
    s3_service_fixture,  # noqa: F401
)

# Each backend through the command line, S3 also against a server that checks every signature.
SERVICES = ("local", "s3", "s3_auth", "gcs", "azure")
SECTION = {"local": None, "s3": "s3", "s3_auth": "s3", "gcs": "gcs", "azure": "azure"}


def expected_documents(fixtures_dir, engine: str) -> dict[str, dict]:
    expected = {}
    for slug in fixture_projects(fixtures_dir):
        if engine == "sqlite":
            tasks = exported_tasks(fixtures_dir / "exports" / slug / "JSON.annotated-only.json")
        else:
            tasks = {i: t for i, t in exported_tasks(fixtures_dir / "exports-postgres" / slug / "JSON.json").items()
                     if t["annotations"]}
        for task_id, task in tasks.items():
            task["annotations"].sort(key=lambda a: a["id"])
            expected[f"labels/{task_id}.json"] = task
    return expected


def write_config(tmp_path, service_name: str, url: str, options: dict, db: str) -> str:
    config = {"db": db, "target": url, "state": str(tmp_path / "state.sqlite3"), "predictions": "ids"}
    if SECTION[service_name] and options:
        config[SECTION[service_name]] = options
    path = tmp_path / "syncd.yaml"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
@pytest.mark.parametrize("service_name", SERVICES)
def test_resync_into_each_store(request, service_name, engine, tmp_path, fixtures_dir, ls_db):
    service = get_service(request, service_name)
    db = f"sqlite:///{ls_db}" if engine == "sqlite" else request.getfixturevalue("pg_label_studio")
    bucket = service.new_bucket()
    url, options, env = service.target(bucket, "labels")
    config = write_config(tmp_path, service_name, url, options, db)
    expected = expected_documents(fixtures_dir, engine)

    first = run_syncd("resync", "--config", config, env=env)
    assert first.returncode == 0, first.stderr
    assert f"{len(expected)} written" in first.stderr
    stored = {key: json.loads(service.read_object(bucket, key)) for key in service.raw_keys(bucket)}
    assert set(stored.pop("labels/.syncd/target.json")) == {"target_id", "written_by", "created_at"}
    assert stored == expected

    second = run_syncd("resync", "--config", config, env=env)
    assert second.returncode == 0 and "nothing to write" in second.stderr, second.stdout + second.stderr

    (tmp_path / "state.sqlite3").unlink()
    verified = run_syncd("resync", "--config", config, "--verify-remote", env=env)
    assert verified.returncode == 0, verified.stderr
    assert "nothing to write" in verified.stderr, verified.stdout
    # No credential reaches the state file or the output.
    secrets = [v for k, v in {**env, **options}.items() if isinstance(v, str) and len(v) >= 6
               and any(word in k.lower() for word in ("secret", "key", "password", "connection", "sas"))]
    state = (tmp_path / "state.sqlite3").read_bytes().decode("latin-1")
    for secret in secrets:
        assert secret not in state and secret not in first.stdout + first.stderr


@pytest.mark.parametrize("service_name", SERVICES)
def test_check_against_each_store(request, service_name, tmp_path, ls_db):
    service = get_service(request, service_name)
    bucket = service.new_bucket()
    url, options, env = service.target(bucket, "labels")
    good = run_syncd("check", "--config", write_config(tmp_path, service_name, url, options, f"sqlite:///{ls_db}"),
                     env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "reachable and writable" in good.stdout
    assert service.raw_keys(bucket) == [], "the probe object must be removed"

    url, options, env = service.missing_target()
    bad = run_syncd("check", "--config", write_config(tmp_path, service_name, url, options, f"sqlite:///{ls_db}"),
                    env=env)
    assert bad.returncode == 1
    fail = [line for line in bad.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fail) == 1 and "target" in fail[0], bad.stdout
    assert "Traceback" not in bad.stderr
