"""The ``convert`` / ``formats`` subcommands, through a parser built like syncd's CLI will."""

from __future__ import annotations

import json
import shutil
import sqlite3
import zipfile
from pathlib import Path

import pytest

from converters import inputs
from syncd.cli.convert import is_database_url
from tests.conftest import REPO
from tests.converters_helpers import EXPORTS, PROJECTS, files_under, needs_fixtures, run

pytestmark = needs_fixtures


def test_convert_export_file_to_yolo(tmp_path, capsys):
    export = EXPORTS / "image-bbox"
    rc = run(["convert", str(export / "JSON.json"), "--format", "YOLO",
              "--label-config", str(export / "label_config.xml"), "--out", str(tmp_path / "out")])
    assert rc == 0
    assert files_under(tmp_path / "out") == files_under(export / "YOLO")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("slug", PROJECTS)
def test_json_of_a_label_studio_export_is_that_export_byte_for_byte(slug, tmp_path, capsys):
    """JSON is Label Studio's own format: its export comes out as it went in, as label-studio-sdk's
    JSON "conversion" (a copy of the file) gives it, "\\/" escapes included."""
    export = EXPORTS / slug / "JSON.json"
    assert run(["convert", str(export), "--format", "JSON", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "result.json").read_bytes() == export.read_bytes()
    assert capsys.readouterr() == (f"JSON: 1 file -> {tmp_path / 'out'}\n", "")


def test_convert_to_zip(tmp_path):
    export = EXPORTS / "image-polygon"
    rc = run(["convert", str(export / "JSON.json"), "-f", "coco", "--label-config",
              str(export / "label_config.xml"), "--out", str(tmp_path / "coco"), "--zip"])
    assert rc == 0
    with zipfile.ZipFile(tmp_path / "coco.zip") as zf:
        assert sorted(zf.namelist()) == ["images/", "result.json"]
        assert len(json.loads(zf.read("result.json"))["images"]) == 7
    assert [p.name for p in tmp_path.iterdir()] == ["coco.zip"]


def test_convert_directory_of_task_documents_with_a_bad_file(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    for task in json.loads((EXPORTS / "text-ner" / "JSON.json").read_text(encoding="utf-8")):
        (docs / f"{task['id']}.json").write_text(json.dumps(task), encoding="utf-8")
    (docs / "999.json").write_text("{not json", encoding="utf-8")
    (docs / "1000.json").write_text(json.dumps({"id": 1000, "data": {"text": "x"}, "annotations": [
        {"id": 1, "completed_by": 1, "result": [{"from_name": "label", "value": 7}]}]}), encoding="utf-8")
    rc = run(["convert", str(docs), "--format", "CONLL2003", "--label-config",
              str(EXPORTS / "text-ner" / "label_config.xml"), "--out", str(tmp_path / "out")])
    assert rc == 1  # some tasks were skipped
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("warning: task 999 skipped: 999.json:")
    assert err[1].startswith("warning: task 1000 skipped:")
    # tasks are read in id order, so the output equals Label Studio's
    assert (tmp_path / "out" / "result.conll").read_text(encoding="utf-8") == (
        EXPORTS / "text-ner" / "CONLL2003.conll").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--format", "PDF"], "error: unknown format 'PDF'"),
        (["--format", "YOLO"], "error: YOLO needs RectangleLabels, PolygonLabels or KeyPointLabels on an Image; "
                               "this config has Labels"),
    ],
)
def test_convert_errors_exit_2_with_one_line(argv, message, tmp_path, capsys):
    rc = run(["convert", str(EXPORTS / "text-ner" / "JSON.json"), "--label-config",
              str(EXPORTS / "text-ner" / "label_config.xml"), "--out", str(tmp_path / "o"), *argv])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message)


@pytest.mark.parametrize("content", [None, "", "[{]", "[{\"id\": 1, \"data\": {}, \"annotations\": []} {"])
def test_unreadable_input_exits_2(content, tmp_path, capsys):
    path = tmp_path / "in.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    rc = run(["convert", str(path), "--format", "JSON", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}")


def test_default_label_config_next_to_input(tmp_path):
    rc = run(["convert", str(EXPORTS / "image-brush" / "JSON.json"), "--format", "BRUSH_TO_NUMPY",
              "--out", str(tmp_path)])
    assert rc == 0
    assert files_under(tmp_path) == files_under(EXPORTS / "image-brush" / "BRUSH_TO_NUMPY")


def test_iter_input_tasks_streams_large_arrays(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "_CHUNK", 7)  # force many refills, values split across chunks
    tasks = json.loads((EXPORTS / "text-classification" / "JSON.json").read_text(encoding="utf-8"))
    path = tmp_path / "in.json"
    path.write_text(json.dumps(tasks, indent=3, ensure_ascii=False), encoding="utf-8")
    assert list(inputs.iter_input_tasks(path)) == tasks
    path.write_text("\n".join(json.dumps(t) for t in tasks), encoding="utf-8")  # JSON lines
    assert list(inputs.iter_input_tasks(path)) == tasks
    path.write_text(" [ ] ", encoding="utf-8")
    assert list(inputs.iter_input_tasks(path)) == []
    path.write_text('[1.5, 22]', encoding="utf-8")
    assert list(inputs.iter_input_tasks(path)) == [1.5, 22]


def test_formats_lists_applicability(capsys):
    rc = run(["formats", "--label-config", str(EXPORTS / "image-keypoints" / "label_config.xml")])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    status = {line.split()[0]: line.split()[1] for line in lines}
    offered = {f["name"] for f in json.loads((EXPORTS / "image-keypoints" / "formats.json").read_text())
               if not f.get("disabled")}
    assert {name for name, s in status.items() if s == "yes"} == offered & set(status)
    yolo = next(line for line in lines if line.startswith("YOLO "))
    assert "needs RectangleLabels next to KeyPointLabels" in yolo


def test_formats_with_missing_config_exits_2(tmp_path, capsys):
    assert run(["formats", "--label-config", str(tmp_path / "nope.xml")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_python_dash_m(tmp_path):
    import subprocess
    import sys

    repo = REPO
    proc = subprocess.run([sys.executable, "-m", "syncd", "formats", "--label-config",
                           str(EXPORTS / "text-ner" / "label_config.xml")], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0 and "CONLL2003       yes" in proc.stdout


# ------------------------------------------------------------------ database input

EXAMPLE_DB = REPO / "examples" / "label_studio.sqlite3"


def _label_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "labels").iterdir()}


def test_convert_database_project_to_yolo(tmp_path, capsys):
    db = tmp_path / "label_studio.sqlite3"
    shutil.copyfile(EXAMPLE_DB, db)
    export = EXPORTS / "image-bbox"
    assert run(["convert", f"sqlite:///{db}", "--project", "2", "--format", "YOLO", "--out", str(tmp_path / "db")]) == 0
    assert capsys.readouterr().err == ""
    assert run(["convert", str(export / "JSON.annotated-only.json"), "--format", "YOLO",
                "--label-config", str(export / "label_config.xml"), "--out", str(tmp_path / "file")]) == 0
    ours = _label_files(tmp_path / "db")
    assert ours == _label_files(tmp_path / "file")
    annotated = json.loads((export / "JSON.annotated-only.json").read_text(encoding="utf-8"))
    assert len(ours) == len(annotated)  # one label file per labeled task
    # the same as Label Studio's own YOLO export of these tasks
    ls = _label_files(export / "YOLO")
    assert ours == {name: ls[name] for name in ours}
    for name in ("classes.txt",):
        assert (tmp_path / "db" / name).read_bytes() == (export / "YOLO" / name).read_bytes()


def test_convert_database_plain_path_label_config_override(tmp_path):
    db = tmp_path / "ls.sqlite3"
    shutil.copyfile(EXAMPLE_DB, db)
    text_ner = EXPORTS / "text-ner"
    # the project's own config, and an explicit --label-config, give the same CONLL
    assert run(["convert", str(db), "--project", "6", "-f", "CONLL2003", "--out", str(tmp_path / "a")]) == 0
    assert run(["convert", str(db), "--project", "6", "-f", "CONLL2003", "--out", str(tmp_path / "b"),
                "--label-config", str(text_ner / "label_config.xml")]) == 0
    assert run(["convert", str(text_ner / "JSON.annotated-only.json"), "-f", "CONLL2003",
                "--label-config", str(text_ner / "label_config.xml"), "--out", str(tmp_path / "c")]) == 0
    a, b, c = ((tmp_path / d / "result.conll").read_bytes() for d in "abc")
    assert a == b == c


@pytest.mark.parametrize(
    "case,message",
    [
        ("no-project", "--project ID is required to convert from a database"),
        ("unknown-project", "no project 99; projects: 1 (Aerial tiles"),
        ("missing-file", "does not exist"),
        ("not-label-studio", "is not a Label Studio database"),
        ("project-with-file", "--project applies to a database or a directory"),
    ],
)
def test_convert_database_errors_exit_2_with_one_line(case, message, tmp_path, capsys):
    db = tmp_path / "ls.sqlite3"
    shutil.copyfile(EXAMPLE_DB, db)
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    argv = {
        "no-project": [f"sqlite:///{db}"],
        "unknown-project": [f"sqlite:///{db}", "--project", "99"],
        "missing-file": [str(tmp_path / "nope.sqlite3"), "--project", "2"],
        "not-label-studio": [f"sqlite:///{other}", "--project", "2"],
        "project-with-file": [str(EXPORTS / "image-bbox" / "JSON.json"), "--project", "2"],
    }[case]
    rc = run(["convert", *argv, "--format", "YOLO", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_is_database_url(tmp_path):
    (tmp_path / "dir.sqlite3").mkdir()
    assert is_database_url("sqlite:///x/label_studio.sqlite3")
    assert is_database_url("postgresql://u:p@h:5432/db")
    assert is_database_url("label_studio.sqlite3")
    assert not is_database_url("export.json")
    assert not is_database_url(str(tmp_path / "dir.sqlite3"))


# ------------------------------------------------------------------ --download-images

@pytest.fixture
def image_server():
    """The fixture's uploaded images over HTTP on 127.0.0.1 (anything else: 404)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(EXPORTS / "image-bbox" / "COCO_WITH_IMAGES" / "images"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_aws(monkeypatch):
    """AWS with no credentials and a closed local endpoint: the fixture's s3:// image fails at once,
    offline, through syncd's S3 store."""
    import os
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")


def _served_export(base: str, path: Path) -> list[dict]:
    """image-bbox tasks with their images on the local server (external ones: 404 there)."""
    tasks = json.loads((EXPORTS / "image-bbox" / "JSON.json").read_text(encoding="utf-8"))
    for task in tasks:
        url = task["data"]["image"]
        if url.startswith("/data/upload/"):
            task["data"]["image"] = f"{base}/{url.rsplit('/', 1)[1]}"
        elif url.startswith("http"):
            task["data"]["image"] = f"{base}/missing/{url.rsplit('/', 1)[1]}"
    path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    return tasks


def test_download_images_coco_sizes_from_the_files(tmp_path, capsys, image_server, no_aws):
    tasks = _served_export(image_server, tmp_path / "in.json")
    export = EXPORTS / "image-bbox"
    rc = run(["convert", str(tmp_path / "in.json"), "-f", "COCO", "--label-config", str(export / "label_config.xml"),
              "--out", str(tmp_path / "out"), "--download-images"])
    assert rc == 0
    err = capsys.readouterr().err.splitlines()
    # one line per image that failed: the percent-encoded upload and the external URLs (404), the s3 image
    failed = {12, 15, 16, 17}
    assert len(err) == len(failed), err
    assert all(line.startswith("warning: task ") and " not downloaded: " in line for line in err)
    assert {int(line.split()[2].rstrip(":")) for line in err} == failed
    assert any("s3://" in line and "no usable AWS credentials" in line for line in err)
    assert any("HTTP 404" in line for line in err)
    from converters.media import label_basename

    downloaded = {label_basename(t["data"]["image"]) for t in tasks if t["id"] not in failed}
    assert {p.name for p in (tmp_path / "out" / "images").iterdir()} == downloaded
    ours = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))["images"]
    theirs = json.loads((export / "COCO_WITH_IMAGES" / "result.json").read_text(encoding="utf-8"))["images"]
    # Label Studio read the uploaded files too: the same sizes, also for tasks without annotations
    for mine, ls in zip(ours[:9], theirs[:9], strict=True):
        assert (mine["width"], mine["height"]) == (ls["width"], ls["height"])
    # every downloaded image is named in result.json by its place in images/
    existing = {m["file_name"] for m in ours if (tmp_path / "out" / m["file_name"]).is_file()}
    assert existing == {"images/" + name for name in downloaded}


def test_download_images_voc_depth_and_yolo_images(tmp_path, capsys, image_server, no_aws):
    _served_export(image_server, tmp_path / "in.json")
    config = str(EXPORTS / "image-bbox" / "label_config.xml")
    assert run(["convert", str(tmp_path / "in.json"), "-f", "VOC", "--label-config", config,
                "--out", str(tmp_path / "voc"), "--download-images", "--download-workers", "2"]) == 0
    depths = {}
    for xml in (tmp_path / "voc" / "Annotations").iterdir():
        text = xml.read_text(encoding="utf-8")
        depths[xml.stem.split("__", 1)[-1]] = int(text.split("<depth>")[1].split("<")[0])
    assert depths["50edc874-street_003"] == 1  # the grayscale image, as in Label Studio's VOC
    assert depths["62f8e6ba-street_000"] == 3
    assert len(list((tmp_path / "voc" / "images").iterdir())) == 7
    capsys.readouterr()
    assert run(["convert", str(tmp_path / "in.json"), "-f", "YOLO", "--label-config", config,
                "--out", str(tmp_path / "yolo"), "--download-images", "--zip"]) == 0
    with zipfile.ZipFile(tmp_path / "yolo.zip") as zf:
        images = [n for n in zf.namelist() if n.startswith("images/") and n != "images/"]
        labels = [n for n in zf.namelist() if n.startswith("labels/") and n != "labels/"]
    assert len(images) == 7 and len(labels) == 11
    # every downloaded image pairs with its label file
    assert {Path(n).stem for n in images} <= {Path(n).stem for n in labels}


def test_download_images_only_for_image_formats(tmp_path, capsys):
    rc = run(["convert", str(EXPORTS / "image-bbox" / "JSON.json"), "-f", "CSV", "--out", str(tmp_path / "o"),
              "--download-images"])
    assert rc == 2
    assert capsys.readouterr().err.startswith("error: --download-images applies to COCO, VOC, YOLO, YOLO_OBB")
