"""SIGKILL a real ``syncd resync`` at several points; a restart converges to the exact target."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.bigdb import multiply
from tests.conftest import EXAMPLE_DB, REPO, run_syncd


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("*.json")}


def start(db: Path, out: Path, state: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "syncd", "resync", "--db", f"sqlite:///{db}",
                             "--target", str(out), "--state", str(state)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, out: Path, at_least: int, deadline: float = 60) -> bool:
    """SIGKILL ``proc`` as soon as the target holds ``at_least`` objects. False if it finished first."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        count = sum(1 for _ in os.scandir(out)) if out.exists() else 0
        if count >= at_least:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("syncd did not make progress")


def test_sigkill_at_several_points_then_restart_converges(tmp_path):
    db = tmp_path / "big.sqlite3"
    labeled = multiply(EXAMPLE_DB, db, copies=40)

    # The reference: one uninterrupted run into a fresh target.
    reference_out = tmp_path / "reference"
    clean = run_syncd("resync", "--db", f"sqlite:///{db}", "--target", str(reference_out),
                      "--state", str(tmp_path / "reference.sqlite3"))
    assert clean.returncode == 0, clean.stderr
    reference = files(reference_out)
    assert len(reference) == labeled

    out, state = tmp_path / "out", tmp_path / "state.sqlite3"
    killed = 0
    for point in (1, 40, labeled // 3, (2 * labeled) // 3, labeled - 5):
        # Each restart continues from what the last one left, and is killed again further on.
        if kill_when(start(db, out, state), out, point):
            killed += 1
            # Whatever is there is whole: every object present is byte-identical to the reference.
            for name, body in files(out).items():
                assert body == reference[name], f"{name} is corrupt after SIGKILL"
    assert killed >= 3, "the kills came too late to test anything"

    final = run_syncd("resync", "--db", f"sqlite:///{db}", "--target", str(out), "--state", str(state))
    assert final.returncode == 0, final.stderr
    assert files(out) == reference
    assert not any((out / ".syncd-tmp").iterdir()), "temporary files of killed runs were left behind"

    # The checkpoint agrees with the target: nothing left to write.
    again = run_syncd("resync", "--db", f"sqlite:///{db}", "--target", str(out), "--state", str(state))
    assert "nothing to write" in again.stderr, again.stdout
