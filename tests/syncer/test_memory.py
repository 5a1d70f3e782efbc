"""Memory stays flat in the number of tasks: the peak RSS of a real ``syncd resync`` (full, then
no-op, then ``--verify-remote``) into a local directory, at two sizes of a generated Label
Studio database, compared as a ratio (never as an absolute figure)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SMALL, LARGE = 4_000, 40_000  # ten times the tasks; the two take about 20 s together

# Runs the real command line in-process and reports its own peak RSS (VmHWM of /proc/self/status):
# the child's ru_maxrss would not do, as Linux carries the parent's (pytest's) high-water mark
# into it through fork and exec.
RUNNER = """\
import sys
from syncd.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print(f"peak-rss-kib {peak}", file=sys.stderr)
sys.exit(code)
"""


def generate(path: Path, tasks: int) -> None:
    subprocess.run([sys.executable, str(REPO / "bench" / "gen_db.py"), str(path), "--tasks", str(tasks),
                    "--predictions", "0.3"], check=True, capture_output=True, cwd=REPO, timeout=120)


def peaks(db: Path, work: Path) -> dict[str, int]:
    """Peak RSS (KiB) of each step: a full resync into a new directory, a no-op one, one that
    rebuilds the checkpoint from the target (``--verify-remote``)."""
    found = {}
    base = ["resync", "--db", f"sqlite:///{db}", "--target", str(work / "out"), "--state", str(work / "s.sqlite3")]
    for step, extra in (("full", []), ("no-op", []), ("verify-remote", ["--verify-remote"])):
        run = subprocess.run([sys.executable, "-c", RUNNER, *base, *extra], capture_output=True, text=True,
                             cwd=REPO, timeout=300)
        assert run.returncode == 0, run.stderr
        if step != "full":
            assert "nothing to write" in run.stderr, run.stderr
        found[step] = int(run.stderr.rsplit("peak-rss-kib ", 1)[1].split()[0])
    return found


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc (Linux)")
def test_peak_memory_does_not_grow_with_the_number_of_tasks(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    for work, tasks in ((small, SMALL), (large, LARGE)):
        work.mkdir()
        generate(work / "ls.sqlite3", tasks)
    at_small, at_large = peaks(small / "ls.sqlite3", small), peaks(large / "ls.sqlite3", large)
    assert len(list((large / "out").glob("*.json"))) == LARGE
    for step in at_small:
        # Ten times the tasks may cost 20% more (allocator noise, caches warming up) plus 8 MiB:
        # SQLite's page caches (2 MiB each for the source and the checkpoint), the removals' spool
        # (1 MiB in memory at most), and one sorted run of a folder's names when listing the
        # target (up to 50,000 names). Anything kept per task (the 36,000 more here) shows above
        # that: a set of the keys seen alone is about 4 MiB, the checkpoint's entries in a list 15.
        assert at_large[step] <= 1.2 * at_small[step] + 8 * 1024, (step, at_small, at_large)
