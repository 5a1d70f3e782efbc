"""The README's Formats examples run as written, from a copy of the repository's ``examples/``, and
give what Label Studio's own exports hold; the example files are what Label Studio wrote."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO, child_env
from tests.converters_helpers import EXPORTS, csv_rows, needs_fixtures

pytestmark = needs_fixtures

MANIFEST = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8")) if FIXTURES.is_dir() else {}
SLUGS = {p["id"]: slug for slug, p in MANIFEST.get("projects", {}).items()}
TITLES = {p["id"]: p["title"] for p in MANIFEST.get("projects", {}).values()}


def readme_formats_block() -> str:
    """The first ``sh`` code block of the README's "## Formats" section, as the README has it."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Formats\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README's Formats section has no sh code block"
    return match.group(1)


def commands(block: str) -> list[list[str]]:
    """Each command of the block as its words, the way sh reads them (continuations, comments)."""
    words = (shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines())
    return [w for w in words if w]


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def project_of(argv: list[str]) -> int:
    """The fixture project a command is about: ``--project``, else the ``<id>-<slug>`` file it names."""
    if option(argv, "--project"):
        return int(option(argv, "--project"))
    for word in argv:
        match = re.match(r"(\d+)-", Path(word).name)
        if match:
            return int(match.group(1))
    raise AssertionError(f"no project in {shlex.join(argv)}")


def offered(slug: str) -> set[str]:
    return {f["name"] for f in json.loads((EXPORTS / slug / "formats.json").read_text(encoding="utf-8"))
            if not f.get("disabled")}


def check_formats(argv: list[str], stdout: str) -> None:
    project = project_of(argv)
    lines = stdout.splitlines()
    if "--project" in argv:
        assert lines[0] == f"project {project}: {TITLES[project]}"
        lines = lines[1:]
    yes = {line.split()[0] for line in lines if line.split()[1] == "yes"}
    names = {line.split()[0] for line in lines}
    assert yes == offered(SLUGS[project]) & names


def check_convert(argv: list[str], out: Path) -> None:
    """The output equals Label Studio's export of the same project in that format (its labeled
    tasks when the input is a database or synced documents, which hold only those)."""
    export = EXPORTS / SLUGS[project_of(argv)]
    fmt = option(argv, "--format").upper()
    if "--zip" in argv:
        unpacked = out.with_suffix(".unzipped")
        with zipfile.ZipFile(out) as zf:
            zf.extractall(unpacked)
        out = unpacked
    from_export_file = Path(argv[2]).suffix == ".json"
    if fmt == "JSON":
        theirs = export / ("JSON.json" if from_export_file else "JSON.annotated-only.json")
        assert json.loads((out / "result.json").read_text(encoding="utf-8")) == json.loads(
            theirs.read_text(encoding="utf-8"))
    elif fmt == "CSV":
        assert from_export_file, "CSV of labeled tasks only: no Label Studio export to compare with"
        assert csv_rows(out / "result.csv", ",") == csv_rows(export / "CSV.csv", ",")
    elif fmt in ("YOLO", "YOLO_OBB"):
        labeled = json.loads((export / "JSON.annotated-only.json").read_text(encoding="utf-8"))
        ours = {p.name: p.read_bytes() for p in (out / "labels").iterdir()}
        assert len(ours) == len(labeled)  # one label file per labeled task
        assert ours == {name: (export / fmt / "labels" / name).read_bytes() for name in ours}
        assert (out / "classes.txt").read_bytes() == (export / fmt / "classes.txt").read_bytes()
    else:
        raise AssertionError(f"no comparison for {fmt} yet: add one here for the README's example")


def test_readme_formats_examples_run_as_written(tmp_path):
    cwd = tmp_path / "repo"
    cwd.mkdir()
    shutil.copytree(REPO / "examples", cwd / "examples")
    # no config file found, the checkpoint under tmp_path, this worktree's syncd
    env = child_env({"SYNCD_CONFIG": None, "XDG_CONFIG_HOME": str(tmp_path / "config"),
                     "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(REPO)})
    ran = commands(readme_formats_block())
    assert {argv[1] for argv in ran} >= {"formats", "convert"}
    for argv in ran:
        assert argv[0] == "syncd", argv
        proc = subprocess.run([sys.executable, "-m", "syncd", *argv[1:]], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, f"{shlex.join(argv)}: {proc.stderr}"
        if argv[1] == "formats":
            check_formats(argv, proc.stdout)
        elif argv[1] == "convert":
            assert proc.stderr == "", proc.stderr
            check_convert(argv, cwd / option(argv, "--out"))
    # what the commands wrote stayed in the working directory
    assert sorted(p.name for p in (cwd / "examples").rglob("*")) == sorted(
        p.name for p in (REPO / "examples").rglob("*"))


def test_example_label_configs_are_the_databases():
    with sqlite3.connect(f"file:{REPO / 'examples' / 'label_studio.sqlite3'}?mode=ro", uri=True) as con:
        configs = dict(con.execute("SELECT id, label_config FROM project"))
    shipped = {int(p.name.split("-", 1)[0]): p for p in (REPO / "examples" / "label_configs").iterdir()}
    assert sorted(shipped) == sorted(configs)
    for project_id, path in shipped.items():
        assert path.name == f"{project_id}-{SLUGS[project_id]}.xml"
        assert path.read_text(encoding="utf-8") == configs[project_id]
        # and what Label Studio's API returned for the project
        assert path.read_bytes() == (EXPORTS / SLUGS[project_id] / "label_config.xml").read_bytes()


def test_example_export_is_label_studios():
    for path in (REPO / "examples" / "exports").iterdir():
        slug = SLUGS[int(path.name.split("-", 1)[0])]
        assert path.read_bytes() == (EXPORTS / slug / "JSON.json").read_bytes(), path.name


@pytest.mark.parametrize("text,expected", [
    ("syncd a --b c  # note\n# only a comment\n\nsyncd d \\\n  --e 'f g'\n",
     [["syncd", "a", "--b", "c"], ["syncd", "d", "--e", "f g"]]),
])
def test_commands_are_read_as_sh_reads_them(text, expected):
    assert commands(text) == expected
