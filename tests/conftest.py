"""Shared test fixtures: the Label Studio fixture set, a real PostgreSQL, helpers."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "labelstudio-1.23.2"  # Label Studio 1.23.2's own output
EXAMPLE_DB = REPO / "examples" / "label_studio.sqlite3"
PG_ADMIN_URL = os.environ.get("SYNCD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def skip_or_fail(reason: str) -> None:
    """Skip a test that needs a missing service, or fail when CI demands every service
    (``SYNCD_REQUIRE_SERVICES=1``): CI must never pass by skipping."""
    if os.environ.get("SYNCD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        skip_or_fail(f"Label Studio fixture set not found at {FIXTURES}")
    return FIXTURES


def fixture_projects(fixtures: Path) -> list[str]:
    return sorted(p.name for p in (fixtures / "exports").iterdir() if p.is_dir())


def exported_tasks(path: Path) -> dict[int, dict]:
    return {t["id"]: t for t in json.loads(path.read_text(encoding="utf-8"))}


@pytest.fixture
def ls_db(tmp_path: Path) -> Path:
    """A private copy of the Label Studio SQLite database (tests may change it)."""
    path = tmp_path / "label_studio.sqlite3"
    shutil.copyfile(EXAMPLE_DB, path)
    return path


def child_env(env: dict | None) -> dict[str, str]:
    """This process's environment with ``env`` applied; a value of None unsets a variable."""
    full_env = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            full_env.pop(name, None)
        else:
            full_env[name] = value
    return full_env


def run_syncd(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real ``syncd`` command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "syncd", *args], capture_output=True, text=True,
                          env=child_env(env), timeout=timeout, cwd=REPO)


# ------------------------------------------------------------------ PostgreSQL


def _pg_available() -> str | None:
    if shutil.which("psql") is None:
        return "psql (PostgreSQL client) is not installed"
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'labelstudio-syncd[postgres]')"
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        return f"no PostgreSQL server at {PG_ADMIN_URL} ({str(exc).strip().splitlines()[0]})"
    return None


@pytest.fixture(scope="session")
def pg_server() -> str:
    problem = _pg_available()
    if problem:
        skip_or_fail(problem)
    return PG_ADMIN_URL


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def pg_label_studio(pg_server: str, fixtures_dir: Path):
    """A fresh temporary PostgreSQL database loaded from the fixture's ``postgres.sql`` (kept gzipped)."""
    import psycopg

    name = f"syncd_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(pg_server, name)
    try:
        dump = gzip.decompress((fixtures_dir / "postgres.sql.gz").read_bytes())
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-"], input=dump,
                       check=True, capture_output=True, timeout=120)
        yield url
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
