"""``syncd formats`` and ``syncd convert`` on what the user has: a project of Label Studio's
database (``--db URL --project ID``, or ``db:`` of the config file) and a synced directory of
several projects' documents (``--project ID`` with ``--label-config`` or ``--db``). Outputs are
compared with Label Studio's own exports; bad input is one line and exit 2."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_DB, run_syncd
from tests.converters_helpers import EXPORTS, PROJECTS, needs_fixtures, run

pytestmark = needs_fixtures


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "label_studio.sqlite3"
    shutil.copyfile(EXAMPLE_DB, path)
    return path


@pytest.fixture
def synced(tmp_path: Path) -> Path:
    """A synced target copied locally: every project's labeled tasks as ``<task_id>.json``, each
    one Label Studio's own exported task."""
    root = tmp_path / "synced"
    root.mkdir()
    for slug in PROJECTS:
        for task in json.loads((EXPORTS / slug / "JSON.annotated-only.json").read_text(encoding="utf-8")):
            (root / f"{task['id']}.json").write_text(json.dumps(task, ensure_ascii=False), encoding="utf-8")
    (root / ".syncd").mkdir()
    (root / ".syncd" / "target.json").write_text('{"target_id": "x"}', encoding="utf-8")
    return root


def offered(slug: str) -> set[str]:
    return {f["name"] for f in json.loads((EXPORTS / slug / "formats.json").read_text(encoding="utf-8"))
            if not f.get("disabled")}


def one_error_line(err: str, *parts: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for part in parts:
        assert part in err, err


def yolo_labels(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (out / "labels").iterdir()}


def assert_labeled_yolo_of_label_studio(out: Path, slug: str) -> None:
    ours = yolo_labels(out)
    assert len(ours) == len(json.loads((EXPORTS / slug / "JSON.annotated-only.json").read_text(encoding="utf-8")))
    assert ours == {name: (EXPORTS / slug / "YOLO" / "labels" / name).read_bytes() for name in ours}
    assert (out / "classes.txt").read_bytes() == (EXPORTS / slug / "YOLO" / "classes.txt").read_bytes()


# ------------------------------------------------------------------ formats


@pytest.mark.parametrize("project_id,slug", [(2, "image-bbox"), (6, "text-ner"), (7, "image-brush")])
def test_formats_of_a_database_project(project_id, slug, db, capsys):
    assert run(["formats", "--db", f"sqlite:///{db}", "--project", str(project_id)]) == 0
    first, *lines = capsys.readouterr().out.splitlines()
    title = next(p["title"] for p in json.loads((EXPORTS.parent / "manifest.json").read_text())["projects"].values()
                 if p["id"] == project_id)
    assert first == f"project {project_id}: {title}"
    yes = {line.split()[0] for line in lines if line.split()[1] == "yes"}
    assert yes == offered(slug) & {line.split()[0] for line in lines}


def test_formats_reads_db_from_the_config_file(db, tmp_path, capsys):
    config = tmp_path / "syncd.yaml"
    config.write_text(f"db: sqlite:///{db}\n", encoding="utf-8")
    assert run(["formats", "--config", str(config), "--project", "6"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("project 6: ")
    assert next(line for line in out if line.startswith("CONLL2003 ")).split()[1] == "yes"


def test_formats_of_a_config_file_is_unchanged(capsys):
    assert run(["formats", "--label-config", str(EXPORTS / "text-ner" / "label_config.xml")]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("JSON ")  # no project line


@pytest.mark.parametrize("case,parts", [
    ("unknown-project", ["no project 99; projects: 1 (Aerial tiles — polygons), 2 (Street scenes", ", 7 ("]),
    ("no-label-config", ["project 3 (Face landmarks — key points) has no labeling config",
                         "pass --label-config FILE"]),
    ("missing-db", ["nope.sqlite3", "does not exist"]),
    ("not-label-studio", ["is not a Label Studio database"]),
    ("both", ["pass either --label-config FILE or --project ID"]),
    ("neither", ["pass --label-config FILE, or --project ID"]),
    ("directory-as-db", ["a directory of task files has no projects or labeling configs"]),
])
def test_formats_errors_are_one_line_exit_2(case, parts, db, tmp_path, capsys):
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    if case == "no-label-config":
        with sqlite3.connect(db) as con:
            con.execute("UPDATE project SET label_config = '' WHERE id = 3")
        con.close()
    argv = {
        "unknown-project": ["--db", f"sqlite:///{db}", "--project", "99"],
        "no-label-config": ["--db", f"sqlite:///{db}", "--project", "3"],
        "missing-db": ["--db", f"sqlite:///{tmp_path / 'nope.sqlite3'}", "--project", "2"],
        "not-label-studio": ["--db", f"sqlite:///{other}", "--project", "2"],
        "both": ["--db", f"sqlite:///{db}", "--project", "2", "--label-config",
                 str(EXPORTS / "text-ner" / "label_config.xml")],
        "neither": [],
        "directory-as-db": ["--db", f"dir://{tmp_path}", "--project", "2"],
    }[case]
    assert run(["formats", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    one_error_line(captured.err, *parts)


def test_formats_errors_have_no_traceback(tmp_path):
    result = run_syncd("formats", "--db", "postgresql://u:secretpw@127.0.0.1:1/db", "--project", "2")
    assert result.returncode == 2
    one_error_line(result.stderr)
    assert "secretpw" not in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------ convert --db, no INPUT


def test_convert_db_option_without_input(db, tmp_path, capsys):
    assert run(["convert", "--db", f"sqlite:///{db}", "--project", "2", "--format", "YOLO",
                "--out", str(tmp_path / "yolo")]) == 0
    assert capsys.readouterr().err == ""
    assert_labeled_yolo_of_label_studio(tmp_path / "yolo", "image-bbox")


def test_convert_db_from_the_config_file(db, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"db: sqlite:///{db}\n", encoding="utf-8")
    assert run(["convert", "--config", str(config), "--project", "4", "--format", "JSON",
                "--out", str(tmp_path / "json")]) == 0
    assert json.loads((tmp_path / "json" / "result.json").read_text(encoding="utf-8")) == json.loads(
        (EXPORTS / "text-classification" / "JSON.annotated-only.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case,parts", [
    ("db-twice", ["the database is given twice (INPUT and --db)"]),
    ("no-project", ["--project ID is required to convert from a database"]),
    ("unknown-project", ["no project 42; projects: 1 (Aerial tiles"]),
])
def test_convert_db_option_errors(case, parts, db, tmp_path, capsys):
    argv = {
        "db-twice": [str(db), "--db", f"sqlite:///{db}", "--project", "2"],
        "no-project": ["--db", f"sqlite:///{db}"],
        "unknown-project": ["--db", f"sqlite:///{db}", "--project", "42"],
    }[case]
    assert run(["convert", *argv, "--format", "JSON", "--out", str(tmp_path / "o")]) == 2
    one_error_line(capsys.readouterr().err, *parts)
    assert not (tmp_path / "o").exists()


def test_convert_with_nothing_to_convert_says_what_to_give(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.chdir(tmp_path)
    assert run(["convert", "--format", "JSON", "--out", str(tmp_path / "o")]) == 2
    one_error_line(capsys.readouterr().err, "nothing to convert: give INPUT", "or --db URL --project ID")


# ------------------------------------------------------------------ convert DIR --project


def test_directory_project_with_label_config(synced, tmp_path, capsys):
    assert run(["convert", str(synced), "--project", "2", "--format", "YOLO", "--label-config",
                str(EXPORTS / "image-bbox" / "label_config.xml"), "--out", str(tmp_path / "yolo")]) == 0
    assert capsys.readouterr().err == ""
    assert_labeled_yolo_of_label_studio(tmp_path / "yolo", "image-bbox")


@pytest.mark.parametrize("slug", ["text-classification", "text-ner"])
def test_directory_project_takes_only_its_tasks(slug, synced, db, tmp_path):
    project_id = json.loads((EXPORTS.parent / "manifest.json").read_text())["projects"][slug]["id"]
    assert run(["convert", str(synced), "--project", str(project_id), "--db", f"sqlite:///{db}",
                "--format", "JSON", "--out", str(tmp_path / "json")]) == 0
    assert json.loads((tmp_path / "json" / "result.json").read_text(encoding="utf-8")) == json.loads(
        (EXPORTS / slug / "JSON.annotated-only.json").read_text(encoding="utf-8"))


def test_directory_project_label_config_from_db(synced, db, tmp_path, capsys):
    # the project's config is read from the database: CONLL2003 needs its Labels
    assert run(["convert", str(synced), "--project", "6", "--db", f"sqlite:///{db}", "--format", "CONLL2003",
                "--out", str(tmp_path / "db")]) == 0
    assert run(["convert", str(synced), "--project", "6", "--label-config",
                str(EXPORTS / "text-ner" / "label_config.xml"), "--format", "CONLL2003",
                "--out", str(tmp_path / "file")]) == 0
    assert capsys.readouterr().err == ""
    ours = (tmp_path / "db" / "result.conll").read_text(encoding="utf-8")
    assert ours == (tmp_path / "file" / "result.conll").read_text(encoding="utf-8")
    # every block of ours is one of Label Studio's (theirs also has the unlabeled tasks')
    theirs = (EXPORTS / "text-ner" / "CONLL2003.conll").read_text(encoding="utf-8")
    blocks = [b for b in ours.split("\n\n") if b.strip() and not b.startswith("-DOCSTART-")]
    assert blocks and all(b.strip() in theirs for b in blocks)


def test_directory_project_without_a_label_config_says_what_to_pass(synced, tmp_path, capsys):
    rc = run(["convert", str(synced), "--project", "2", "--format", "YOLO", "--out", str(tmp_path / "o")])
    assert rc == 2
    one_error_line(capsys.readouterr().err, str(synced), "no labeling config", "--label-config FILE",
                   "--db URL")
    assert not (tmp_path / "o").exists()


def test_directory_project_db_from_the_config_file(synced, db, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"db: sqlite:///{db}\n", encoding="utf-8")
    assert run(["convert", str(synced), "--project", "2", "--config", str(config), "--format", "YOLO",
                "--out", str(tmp_path / "yolo")]) == 0
    assert_labeled_yolo_of_label_studio(tmp_path / "yolo", "image-bbox")


def test_directory_project_unknown_in_db(synced, db, tmp_path, capsys):
    assert run(["convert", str(synced), "--project", "99", "--db", f"sqlite:///{db}", "--format", "JSON",
                "--out", str(tmp_path / "o")]) == 2
    one_error_line(capsys.readouterr().err, "no project 99; projects: 1 (")


def test_directory_without_that_project_warns_and_exits_1(synced, tmp_path, capsys):
    assert run(["convert", str(synced), "--project", "99", "--format", "JSON", "--label-config",
                str(EXPORTS / "text-ner" / "label_config.xml"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err == f"warning: {synced}: no task of project 99 (projects found: 1, 2, 3, 4, 5, 6, 7)\n"
    assert json.loads((tmp_path / "o" / "result.json").read_text(encoding="utf-8")) == []


def test_directory_documents_without_a_project_are_named(synced, tmp_path, capsys):
    task = json.loads((synced / "7.json").read_text(encoding="utf-8"))
    del task["project"]
    (synced / "7.json").write_text(json.dumps(task), encoding="utf-8")
    assert run(["convert", str(synced), "--project", "2", "--format", "YOLO", "--label-config",
                str(EXPORTS / "image-bbox" / "label_config.xml"), "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == f"warning: {synced}: 1 document(s) name no project; left out\n"
    ours = yolo_labels(tmp_path / "o")
    labeled = json.loads((EXPORTS / "image-bbox" / "JSON.annotated-only.json").read_text(encoding="utf-8"))
    assert len(ours) == len(labeled) - 1


def test_directory_db_without_project_is_an_error(synced, db, tmp_path, capsys):
    assert run(["convert", str(synced), "--db", f"sqlite:///{db}", "--format", "JSON",
                "--out", str(tmp_path / "o")]) == 2
    one_error_line(capsys.readouterr().err, "--db applies when converting one project (--project ID)")


def test_synced_target_written_by_resync_converts_per_project(db, tmp_path):
    """The real thing: what ``syncd resync`` wrote, then one project of it (subprocess: no traceback)."""
    target = tmp_path / "target"
    sync = run_syncd("resync", "--db", f"sqlite:///{db}", "--target", str(target), "--state",
                     str(tmp_path / "state.sqlite3"))
    assert sync.returncode == 0, sync.stderr
    out = tmp_path / "yolo"
    result = run_syncd("convert", str(target), "--project", "2", "--db", f"sqlite:///{db}", "--format", "YOLO",
                       "--out", str(out))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert_labeled_yolo_of_label_studio(out, "image-bbox")
    missing = run_syncd("convert", str(target), "--project", "2", "--format", "YOLO", "--out", str(tmp_path / "x"),
                        env={"SYNCD_CONFIG": None, "XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert missing.returncode == 2
    one_error_line(missing.stderr, "--label-config FILE", "--db URL")
