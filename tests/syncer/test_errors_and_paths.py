"""One clear line and the right exit code for every expected failure, and a local target that
syncd never writes, renames or cleans through a symbolic link."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest

from syncd.errors import StoreError
from syncd.keys import TMP_DIR
from syncd.sources.labelstudio.database import mask_url
from syncd.stores.local import LocalStore
from tests.conftest import REPO, child_env, run_syncd
from tests.servers import free_port


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line or line.startswith("error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def config_file(tmp_path, **values) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(values))
    return str(path)


# ------------------------------------------------------------------ configuration errors at load


@pytest.mark.parametrize(("template", "words"), [
    ("{task_id:q}.json", "does not format"),
    ("x" * 300 + "/{task_id}.json", "longer than 255 bytes"),
    (".syncd-tmp/{task_id}.json", "reserved for syncd"),
    (".syncd/{task_id}.json", "reserved for syncd"),
])
def test_a_key_template_that_cannot_work_is_a_config_error(ls_db, tmp_path, template, words):
    result = run_syncd("resync", "--config", config_file(tmp_path, key_template=template),
                       "--db", f"sqlite:///{ls_db}", "--target", str(tmp_path / "out"))
    assert result.returncode == 2
    assert words in one_error_line(result) and "key_template" in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"target: /tmp/caf\xe9\n")
    result = run_syncd("resync", "--config", str(path))
    assert result.returncode == 2 and "not UTF-8" in one_error_line(result)


def test_a_password_with_an_unencoded_at_sign_is_masked():
    assert mask_url("postgresql://ls:p@ss:w/rd@db.example.com:5432/labels") == \
        "postgresql://ls:***@db.example.com:5432/labels"


# ------------------------------------------------------------------ targets that cannot be used


def test_an_unreachable_target_is_exit_2_in_one_line(ls_db, tmp_path):
    result = run_syncd("resync", "--config", config_file(tmp_path, s3={"endpoint_url": f"http://127.0.0.1:{free_port()}",
                                                                      "max_attempts": 1}),
                       "--db", f"sqlite:///{ls_db}", "--target", "s3://labels/ls",
                       env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"})
    assert result.returncode == 2
    line = one_error_line(result)
    assert "s3://labels" in line and "network error" in line and "retried" not in line


def test_run_exits_non_zero_on_a_fatal_store_error(ls_db, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the target directory should be")
    result = run_syncd("run", "--db", f"sqlite:///{ls_db}", "--target", str(blocker / "out"), "--state",
                       str(tmp_path / "s.sqlite3"), "--config", config_file(tmp_path, listen=""), timeout=60)
    assert result.returncode == 1
    assert "cannot be created" in result.stderr and "exiting" in result.stderr and "Traceback" not in result.stderr


def test_run_fails_fast_on_a_database_that_never_existed(tmp_path):
    result = run_syncd("run", "--db", f"sqlite:///{tmp_path}/nope.sqlite3", "--target", str(tmp_path / "out"),
                       "--config", config_file(tmp_path, listen=""), timeout=60)
    assert result.returncode == 2 and "does not exist" in one_error_line(result)


# ------------------------------------------------------------------ the local target and links


def data() -> tuple[bytes, str]:
    body = b'{"id": 1}'
    return body, hashlib.sha256(body).hexdigest()


def precious_and_target(tmp_path):
    """A folder outside the target holding a file that must survive, and an empty target."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    target = tmp_path / "target"
    target.mkdir()
    return outside, target


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_syncd_tmp_that_is_not_a_directory_is_refused(tmp_path, kind):
    outside, target = precious_and_target(tmp_path)
    if kind == "symlink":
        (target / TMP_DIR).symlink_to(outside)
    else:
        (target / TMP_DIR).write_text("not a folder")
    store = LocalStore(target)
    with pytest.raises(StoreError) as err:
        store.check_writable()
    assert err.value.fatal and TMP_DIR in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(StoreError):
        store.put("1.json", *data())
    assert (outside / "precious.txt").read_text() == "keep me" and len(list(outside.iterdir())) == 1


def test_resync_and_check_refuse_a_linked_syncd_tmp_in_one_line(ls_db, tmp_path):
    outside, target = precious_and_target(tmp_path)
    (target / TMP_DIR).symlink_to(outside)
    for command in ("resync", "check"):
        result = run_syncd(command, "--db", f"sqlite:///{ls_db}", "--target", str(target), "--state",
                           str(tmp_path / "s.sqlite3"))
        assert result.returncode in (1, 2) and "Traceback" not in result.stderr
        assert "symbolic link" in result.stdout + result.stderr
    assert [p.name for p in outside.iterdir()] == ["precious.txt"]


def test_a_key_through_a_linked_folder_is_not_written(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "exports").symlink_to(outside)
    store = LocalStore(target)
    store.check_writable()
    with pytest.raises(StoreError) as err:
        store.put("exports/1.json", *data())
    assert "link" in str(err.value)
    (outside / "1.json").write_text("not syncd's")
    with pytest.raises(StoreError):
        store.delete("exports/1.json")  # nothing is deleted through the link either
    assert [p.name for p in outside.iterdir()] == ["1.json"]


def test_another_syncd_on_the_same_directory_leaves_this_ones_writes_alone(tmp_path):
    target = tmp_path / "target"
    first, second = LocalStore(target), LocalStore(target)
    first.check_writable()
    first.put("1.json", *data())
    work = target / TMP_DIR / first._tmp_folder()
    (work / "in-progress.tmp").write_bytes(b"half a document")  # a write of the first, under way
    crashed = target / TMP_DIR / "0123abcd"  # a folder a killed syncd left, its lock held by nobody
    crashed.mkdir()
    (crashed / ".lock").touch()
    (crashed / "left.tmp").write_bytes(b"x")

    second.check_writable()  # e.g. a resync with its own state file
    assert (work / "in-progress.tmp").exists()
    assert not crashed.exists()
    first.put("2.json", *data())
    first.close()
    second.close()
    assert sorted(p.name for p in target.iterdir()) == sorted(["1.json", "2.json", TMP_DIR])
    assert list((target / TMP_DIR).iterdir()) == []


def test_state_lock_metrics_and_objects_have_fixed_modes_whatever_the_umask(ls_db, tmp_path):
    prom, state, out = tmp_path / "syncd.prom", tmp_path / "state.sqlite3", tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "syncd", "resync", "--db", f"sqlite:///{ls_db}", "--target",
                             str(out), "--state", str(state), "--metrics-file", str(prom)], cwd=REPO,
                            capture_output=True, text=True, env=child_env({}), timeout=120,
                            preexec_fn=lambda: os.umask(0o077))
    assert result.returncode == 0, result.stderr

    def mode(path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(state.with_name(state.name + ".lock")) == 0o600
    assert mode(prom) == 0o644
    assert mode(out / "1.json") == 0o644
