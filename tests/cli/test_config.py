"""The configuration file, its documentation, and finding Label Studio's database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from syncd import config
from syncd.keys import UnsafeKey, check_key, render_key, slugify
from syncd.sources.labelstudio.database import default_db_url, sqlite_path
from tests.conftest import REPO, run_syncd


def test_example_config_loads_and_documents_every_key():
    cfg = config.load(str(REPO / "config.example.yaml"))
    assert cfg.target == "./syncd-out"
    assert cfg == config.from_mapping({"target": "./syncd-out"}, cfg.source_file), \
        "config.example.yaml must show the defaults"
    text = (REPO / "config.example.yaml").read_text()
    documented = set(re.findall(r"^#?\s*([a-z_]+):", text, re.M))
    assert set(config.KEYS) - {"s3", "gcs", "azure"} <= documented


@pytest.mark.parametrize("env, expected", [
    ({"DJANGO_DB": "default", "POSTGRE_NAME": "ls", "POSTGRE_USER": "u", "POSTGRE_PASSWORD": "p@ss",
      "POSTGRE_HOST": "db", "POSTGRE_PORT": "6543"}, "postgresql://u:p%40ss@db:6543/ls"),
    ({"LABEL_STUDIO_BASE_DATA_DIR": "/data/ls"}, "sqlite:////data/ls/label_studio.sqlite3"),
    ({"DATABASE_NAME": "/srv/ls.sqlite3"}, "sqlite:////srv/ls.sqlite3"),
    ({"HOME": "/home/ann"}, "sqlite:////home/ann/.local/share/label-studio/label_studio.sqlite3"),
])
def test_default_database_follows_label_studio_env(monkeypatch, env, expected):
    for name in ("DJANGO_DB", "POSTGRE_NAME", "POSTGRE_USER", "POSTGRE_PASSWORD", "POSTGRE_HOST",
                 "POSTGRE_PORT", "LABEL_STUDIO_BASE_DATA_DIR", "DATABASE_NAME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"LABEL_STUDIO_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_db_url() == expected


def test_sqlite_urls(tmp_path, monkeypatch):
    assert sqlite_path("sqlite:////abs/label_studio.sqlite3") == Path("/abs/label_studio.sqlite3")
    assert sqlite_path("sqlite:///abs/label_studio.sqlite3") == Path("/abs/label_studio.sqlite3")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "ls.sqlite3").write_bytes(b"")
    assert sqlite_path("sqlite:///rel/ls.sqlite3") == Path("rel/ls.sqlite3")


def test_password_never_printed(tmp_path):
    result = run_syncd("resync", "--db", "postgresql://user:hunter2secret@127.0.0.1:1/db",
                       "--target", str(tmp_path / "o"), "--state", str(tmp_path / "s.sqlite3"))
    assert result.returncode == 2
    assert "hunter2secret" not in result.stderr + result.stdout
    assert "user:***@127.0.0.1" in result.stderr


@pytest.mark.parametrize("title, slug", [
    ("Street scenes — object detection", "street-scenes-object-detection"),
    ("../../etc/passwd", "etc-passwd"),
    ("Café Noir / Ölbryggeri", "cafe-noir-olbryggeri"),
    ("价格", "project-7"),
    ("", "project-7"),
])
def test_project_slugs_are_safe(title, slug):
    assert slugify(title, 7) == slug
    check_key(render_key("{project_slug}/{task_id}.json", 1, 7, slugify(title, 7)))


@pytest.mark.parametrize("key", ["../x.json", "/abs.json", "a//b.json", "a/./b.json", "a\\b.json",
                                 "a\nb.json", "a\x7fb.json", "a\x85b.json", "", "x" * 1025])
def test_unsafe_keys_are_rejected(key):
    with pytest.raises(UnsafeKey):
        check_key(key)


def test_unicode_and_spaces_are_fine_in_keys():
    assert check_key("Straße Nr 12/7.json") == "Straße Nr 12/7.json"
    assert check_key("\xa0\u200b\u2028/7.json")  # no-break space, zero width space, line separator: not Cc


def _syncd_in(cwd: Path, *args: str, env: dict | None = None):
    import subprocess
    import sys

    from tests.conftest import child_env

    return subprocess.run([sys.executable, "-m", "syncd", *args], capture_output=True, text=True, cwd=cwd,
                          env=child_env({"PYTHONPATH": str(REPO), "SYNCD_CONFIG": None, **(env or {})}), timeout=60)


def test_config_files_are_found_where_users_put_them_and_the_one_used_is_named(tmp_path):
    """Without --config: $SYNCD_CONFIG, ./syncd.yaml, $XDG_CONFIG_HOME/syncd/config.yaml, in this order."""
    work, xdg = tmp_path / "work", tmp_path / "xdg"
    work.mkdir()
    (xdg / "syncd").mkdir(parents=True)
    (xdg / "syncd" / "config.yaml").write_text("transfers: 5\n")
    env = {"XDG_CONFIG_HOME": str(xdg)}

    def effective(*args: str, extra: dict | None = None) -> tuple[dict, str]:
        result = _syncd_in(work, "config", *args, env={**env, **(extra or {})})
        assert result.returncode == 0, result.stderr
        return yaml.safe_load(result.stdout), result.stderr

    values, log = effective()
    assert values["transfers"] == 5 and str(xdg / "syncd" / "config.yaml") in log
    (work / "syncd.yaml").write_text("transfers: 6\n")
    values, log = effective()
    assert values["transfers"] == 6 and "config: syncd.yaml" in log
    named = tmp_path / "named.yaml"
    named.write_text("transfers: 7\n")
    assert effective(extra={"SYNCD_CONFIG": str(named)})[0]["transfers"] == 7
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("transfers: 8\n")
    values, log = effective("--config", str(explicit))
    assert values["transfers"] == 8 and "config:" not in log


def test_config_prints_the_effective_configuration_with_secrets_masked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"db": "postgresql://syncd:hunter2secret@db.internal:5432/ls",
                                    "target": "s3://labels/prod", "transfers": 9,
                                    "s3": {"endpoint_url": "http://minio:9000",
                                           "aws_secret_access_key": "hunter2secret"},
                                    "azure": {"connection_string": "AccountKey=hunter2secret"}}))
    result = run_syncd("config", "--config", str(path), "--target", "s3://labels/other")
    assert result.returncode == 0, result.stderr
    assert "hunter2secret" not in result.stdout + result.stderr
    values = yaml.safe_load(result.stdout)
    assert values["db"] == "postgresql://syncd:***@db.internal:5432/ls"
    assert values["target"] == "s3://labels/other" and values["transfers"] == 9  # flags over the file
    assert values["s3"]["aws_secret_access_key"] == "***" and values["azure"]["connection_string"] == "***"
    assert values["s3"]["endpoint_url"] == "http://minio:9000"
    assert list(values) == config.KEYS
