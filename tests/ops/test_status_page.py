"""The status page of ``syncd run`` (``/`` and ``/status.json``), the page in a real headless
browser: Debian's ``chromium`` driven by Selenium through Debian's ``chromium-driver``.

Screenshots are kept in ``$SYNCD_TEST_ARTIFACTS`` (default: ``test-artifacts/`` in the repo).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, skip_or_fail
from tests.daemon_helpers import RunningSyncd, add_annotation, wait_for

ARTIFACTS = Path(os.environ.get("SYNCD_TEST_ARTIFACTS") or REPO / "test-artifacts")
HOSTILE_TITLE = '<script>document.title="owned"</script> & <b>bold</b>'
DEEP = "[" * 1500 + "]" * 1500  # valid JSON for SQLite, past Python's decoder: the task fails


def db_facts(db: Path) -> tuple[dict[int, str], dict[int, int]]:
    """Project titles and labeled tasks per project, as Label Studio's tables say."""
    conn = sqlite3.connect(db)
    try:
        titles = dict(conn.execute("SELECT id, title FROM project"))
        labeled = dict(conn.execute("SELECT t.project_id, COUNT(*) FROM task t WHERE EXISTS "
                                    "(SELECT 1 FROM task_completion c WHERE c.task_id = t.id) GROUP BY t.project_id"))
    finally:
        conn.close()
    return titles, labeled


def objects_in(out: Path) -> dict[int, int]:
    """Task objects in the target per project, read from the objects themselves."""
    counts: dict[int, int] = {}
    for path in out.glob("*.json"):
        project = json.loads(path.read_bytes())["project"]
        counts[project] = counts.get(project, 0) + 1
    return counts


def status_json(daemon: RunningSyncd) -> dict:
    code, body = daemon.get("/status.json")
    assert code == 200, body
    return json.loads(body)


def read(browser, what):
    """``what(browser)``, done again when the page's own reload (every few seconds) interrupted it."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(10):
        try:
            return what(browser)
        except StaleElementReferenceException:
            continue
    raise AssertionError("the page kept reloading while it was read")


def table(browser) -> dict[int, list[str]]:
    """The projects table as shown: project id -> the text of each cell."""
    from selenium.webdriver.common.by import By

    def cells(b) -> dict[int, list[str]]:
        rows = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
                for row in b.find_elements(By.CSS_SELECTOR, "tbody tr")]
        return {int(texts[0].split(":")[0]): texts for texts in rows}

    return read(browser, cells)


@pytest.fixture
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        skip_or_fail("Chromium is not installed: apt-get install chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed: pip install selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_every_project_escapes_titles_and_refreshes_itself(ls_db, tmp_path, browser):
    from selenium.webdriver.common.by import By

    conn = sqlite3.connect(ls_db)
    with conn:
        conn.execute("UPDATE project SET title = ? WHERE id = 4", (HOSTILE_TITLE,))
    conn.close()
    titles, labeled = db_facts(ls_db)
    out = tmp_path / "out"
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(out), {"bundles": {"formats": ["JSON"], "debounce": 0.5}})
    try:
        daemon.wait_ready()
        wait_for(lambda: all(p["bundles"] for p in status_json(daemon)["projects"]), 20, "every project's bundle")
        browser.get(f"http://127.0.0.1:{daemon.port}/")
        page = read(browser, lambda b: b.find_element(By.TAG_NAME, "body").text)
        for pid, title in titles.items():
            assert f"{pid}: {title}" in page, title  # the hostile title too, as text
        assert browser.title != "owned" and not browser.find_elements(By.TAG_NAME, "script")
        assert not browser.find_elements(By.CSS_SELECTOR, "td > b")  # the title's <b> stayed text
        rows = table(browser)
        assert set(rows) == set(titles)
        for pid, cells in rows.items():
            assert int(cells[1]) == labeled.get(pid, 0)
            assert int(cells[2]) == objects_in(out).get(pid, 0)
            assert f"exports/{pid}/JSON/latest/" in cells[6]
        # Nothing is loaded from elsewhere (air-gapped), and nothing can be submitted.
        source = browser.page_source
        assert "src=" not in source and "<form" not in source and "https://" not in source
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "status-page.png"))

        # A change in Label Studio shows up without anyone reloading the page (meta refresh).
        project = 2
        before = int(rows[project][1])
        conn = sqlite3.connect(ls_db)
        task = conn.execute("SELECT id FROM task t WHERE project_id = ? AND NOT EXISTS (SELECT 1 FROM "
                            "task_completion c WHERE c.task_id = t.id) LIMIT 1", (project,)).fetchone()[0]
        add_annotation(conn, task, [])
        conn.close()

        def labeled_cell() -> int:
            return int(table(browser)[project][1])

        wait_for(lambda: labeled_cell() == before + 1, 30, "the page to show the new labeled task")
        assert (out / f"{task}.json").exists()

        # On a phone: no sideways scrolling, the table laid out as cards.
        browser.set_window_size(390, 844)
        browser.get(f"http://127.0.0.1:{daemon.port}/")
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1
        browser.save_screenshot(str(ARTIFACTS / "status-page-phone.png"))
    finally:
        assert daemon.stop() == 0, daemon.logs()


def test_status_json_matches_the_database_and_names_failures(ls_db, tmp_path):
    titles, labeled = db_facts(ls_db)
    out = tmp_path / "out"
    conn = sqlite3.connect(ls_db)
    bad_task, bad_project = conn.execute("SELECT t.id, t.project_id FROM task t WHERE EXISTS (SELECT 1 FROM "
                                         "task_completion c WHERE c.task_id = t.id) ORDER BY t.id LIMIT 1").fetchone()
    with conn:
        conn.execute("UPDATE task SET data = ? WHERE id = ?", ('{"image": "x", "deep": ' + DEEP + "}", bad_task))
    conn.close()
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(out))
    try:
        daemon.wait_ready()
        status = status_json(daemon)
        process = status["process"]
        assert process["ready"] is True and process["target"] == str(out)
        assert process["state"] == f"SQLite file {tmp_path / 'state.sqlite3'}"
        assert process["source"] == f"sqlite:///{ls_db}"
        projects = {p["id"]: p for p in status["projects"]}
        assert {pid: p["title"] for pid, p in projects.items()} == titles
        assert {pid: p["labeled_tasks"] for pid, p in projects.items() if p["labeled_tasks"]} == labeled
        assert {pid: p["objects"] for pid, p in projects.items() if p["objects"]} == objects_in(out)
        bad = projects[bad_project]
        assert bad["failing_tasks"] == 1 and str(bad_task) in bad["last_error"]
        assert bad["last_synced"] is None  # never in step while one of its tasks fails
        assert all(p["failing_tasks"] == 0 and p["last_synced"] for pid, p in projects.items() if pid != bad_project)
        lag = bad["lag_seconds"]
        wait_for(lambda: status_json(daemon)["projects"][0]["lag_seconds"] >= 0 and
                 {p["id"]: p for p in status_json(daemon)["projects"]}[bad_project]["lag_seconds"] > lag, 10,
                 "the failing project's lag to grow")

        # Fixed in Label Studio: the task is synced on a retry or the next reconcile, the project is in step.
        conn = sqlite3.connect(ls_db)
        with conn:
            conn.execute("UPDATE task SET data = '{\"image\": \"x\"}', updated_at = '2030-01-01 00:00:00' "
                         "WHERE id = ?", (bad_task,))
        conn.close()
        fixed = wait_for(lambda: (p := {p["id"]: p for p in status_json(daemon)["projects"]}[bad_project])
                         ["failing_tasks"] == 0 and p, 20, "the project to be in step again")
        assert fixed["lag_seconds"] == 0 and fixed["last_synced"] and fixed["failures"] >= 1
        assert (out / f"{bad_task}.json").exists()

        # Read-only: nothing but GET and HEAD.
        request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 405
    finally:
        assert daemon.stop() == 0, daemon.logs()
