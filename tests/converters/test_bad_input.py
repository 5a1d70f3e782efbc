"""``syncd convert`` on bad input: one warning naming the task and what was skipped, valid output
for every other task, exit 1 when anything was skipped; never a traceback."""

from __future__ import annotations

import copy
import json
import re
import resource
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.converters_helpers import EXPORTS, load_tasks, needs_fixtures

pytestmark = needs_fixtures

BBOX_CONFIG = str(EXPORTS / "image-bbox" / "label_config.xml")


def convert(source, fmt: str, out, config: str = BBOX_CONFIG, **run) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncd", "convert", str(source), "--format", fmt, "--label-config",
                           config, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120, **run)


def labeled(slug: str) -> list[dict]:
    return [t for t in load_tasks(slug) if t["annotations"]]


def broken(slug: str, damage) -> tuple[list[dict], int]:
    """The project's export plus one copy of a labeled task with ``damage`` done to its first region."""
    tasks = load_tasks(slug)
    bad = copy.deepcopy(labeled(slug)[0])
    bad["id"] = 9999
    damage(bad["annotations"][0]["result"][0]["value"])
    return tasks + [bad], 9999


def dumped(tasks: list[dict]) -> str:
    return json.dumps(tasks)  # (NaN is written as NaN, as some tools do)


CASES = {
    "label-string": (lambda v: v.__setitem__("rectanglelabels", "Boat"), "rectanglelabels is str 'Boat'"),
    "nan-coordinate": (lambda v: v.__setitem__("x", float("nan")), "NaN"),
    "rectangle-without-height": (lambda v: v.pop("height"), "height is missing"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fmt", ["COCO", "YOLO", "YOLO_OBB", "VOC", "CSV", "JSON_MIN", "JSON"])
def test_a_bad_region_skips_its_task_only(tmp_path, case, fmt):
    damage, words = CASES[case]
    tasks, bad_id = broken("image-bbox", damage)
    source = tmp_path / "in.json"
    source.write_text(dumped(tasks))
    clean = convert(EXPORTS / "image-bbox" / "JSON.json", fmt, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    result = convert(source, fmt, tmp_path / "out")
    if fmt == "JSON" and case != "nan-coordinate":  # the JSON format writes tasks as they are
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [warning] = result.stderr.splitlines()
    assert warning.startswith(f"warning: task {bad_id} skipped:") and words in warning
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            assert "NaN" not in text and "nan" not in text.split()
            clean_copy = tmp_path / "clean" / path.relative_to(tmp_path / "out")
            if fmt == "JSON":  # (the input's own bytes where a task is not changed: here, written otherwise)
                assert json.loads(path.read_bytes()) == json.loads(clean_copy.read_bytes())
            elif clean_copy.exists() and fmt not in ("COCO", "YOLO", "YOLO_OBB"):  # (COCO/YOLO: a dated info)
                assert path.read_bytes() == clean_copy.read_bytes(), path.name
    if fmt.startswith("YOLO"):
        assert (tmp_path / "out" / "classes.txt").read_text() == (tmp_path / "clean" / "classes.txt").read_text()


def test_corrupt_brush_rle_skips_its_region_with_a_warning(tmp_path):
    tasks, bad_id = broken("image-brush", lambda v: v.__setitem__("rle", [255, 1, 2]))
    source = tmp_path / "in.json"
    source.write_text(dumped(tasks))
    result = convert(source, "BRUSH_TO_PNG", tmp_path / "out", str(EXPORTS / "image-brush" / "label_config.xml"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"warning: task {bad_id}")
    assert list((tmp_path / "out").glob("*.png"))


def test_bytes_after_the_array_are_reported(tmp_path):
    source = tmp_path / "in.json"
    source.write_text(json.dumps(load_tasks("image-bbox")) + "\n{oops")
    result = convert(source, "YOLO", tmp_path / "out")
    assert result.returncode == 1
    assert re.fullmatch(r"warning: bytes after the task array \(from byte \d+\) were ignored\n", result.stderr)
    assert len(list((tmp_path / "out" / "labels").iterdir())) > 0


def test_a_task_nested_200000_deep_is_skipped(tmp_path):
    source = tmp_path / "in.json"
    deep = "[" * 200_000 + "]" * 200_000
    tasks = load_tasks("image-bbox")
    text = json.dumps(tasks)
    source.write_text(text[:-1] + ', {"id": 7777, "data": {"image": ' + deep + '}, "annotations": []}]')
    result = convert(source, "COCO", tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr == "warning: task 7777 skipped: nests deeper than 1000 levels\n"
    coco = json.loads((tmp_path / "out" / "result.json").read_text())
    assert len(coco["images"]) >= len(labeled("image-bbox"))


def test_a_value_larger_than_memory_allows_is_one_line(tmp_path):
    source = tmp_path / "huge.json"
    with open(source, "w") as f:
        f.write('[{"id": 1, "data": {"text": "')
        for _ in range(300):
            f.write("x" * (1 << 20))
        f.write('"}, "annotations": []}]')
    # The address space of a process that imported what `syncd convert` imports, plus room to
    # run, but not to read a 300 MB string (measured in such a process: this one's depends on
    # what the tests before loaded and started)
    probe = subprocess.run([sys.executable, "-c", "import re, syncd.cli.convert, converters.json_export; "
                            "print(re.search(r'VmSize:\\s+(\\d+) kB', open('/proc/self/status').read())[1])"],
                           cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    limit = (int(probe.stdout) << 10) + (200 << 20)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = convert(source, "JSON", tmp_path / "out", preexec_fn=cap)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "too large to read into" in result.stderr


@pytest.mark.parametrize(("fmt", "slug", "damage"), [
    ("BRUSH_TO_NUMPY", "image-brush", lambda t: t.__setitem__("id", "../../escape")),
    ("YOLO", "image-bbox", lambda t: t["data"].__setitem__("image", "/data/upload/1/a\x00b.png")),
    ("VOC", "image-bbox", lambda t: t["data"].__setitem__("image", "/data/upload/1/a\x00b.png")),
    ("VOC", "image-bbox", lambda t: t["data"].__setitem__("image", "/data/upload/1/" + "é" * 200 + ".png")),
])
def test_output_names_from_task_data_stay_inside_out(tmp_path, fmt, slug, damage):
    tasks = load_tasks(slug)
    bad = copy.deepcopy(labeled(slug)[0])
    damage(bad)
    source = tmp_path / "in" / "in.json"
    source.parent.mkdir()
    source.write_text(json.dumps(tasks + [bad]))
    out = tmp_path / "in" / "out"
    result = convert(source, fmt, out, str(EXPORTS / slug / "label_config.xml"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [warning] = result.stderr.splitlines()
    assert warning.startswith(f"warning: task {bad['id']}") and "cannot be a file name" in warning
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"] and sorted(p.name for p in out.parent.iterdir()) \
        == ["in.json", "out"]  # nothing written beside or above --out
