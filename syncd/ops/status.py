"""The status page of ``syncd run``: ``/`` (HTML) and ``/status.json`` (the same data).

What it shows, per project: title, labeled tasks, objects in the target, lag, when it was last in
step, failing tasks with the last error line, the last bundle of each format, and which process
holds it when several share the target; per process: version, uptime, source, target, state.

The ``StatusBoard`` is fed by the sync loop (``record`` after each pass or batch, ``refresh``
for the counts, which cost a grouped query each and run on the loop's own connections) and by
the events bus (bundles, readiness, audits). The HTTP threads only read a snapshot under a lock.

The page is one server-rendered document: no JavaScript at all (a Content-Security-Policy
forbids it), no external resource (it works air-gapped), a meta refresh every
``REFRESH_SECONDS``, a layout that turns the table into cards on a narrow screen, and every
string from the database escaped. It offers no action: GET and HEAD only.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from syncd import __version__
from syncd.ops.events import Event, Events

REFRESH_SECONDS = 5
COUNTS_EVERY = 5.0  # seconds: after a batch, counts are refreshed at most this often
MAX_FAILING = 10_000  # failing task ids remembered per project (the count stays right beyond)


@dataclass
class BundleStatus:
    format: str
    status: str  # "published" or "failed"
    build_id: str | None
    key: str | None  # the build's folder in the target
    latest_key: str | None
    url: str | None  # key under the target's URL
    created_at: str | None
    tasks: int
    error: str | None
    at: float  # when syncd published (or failed to publish) it


@dataclass
class ProjectStatus:
    id: int
    title: str = ""
    labeled: int | None = None  # labeled tasks in Label Studio
    objects: int | None = None  # objects syncd recorded in the target
    holder: str | None = None  # replicas: the process that holds it
    written: int = 0  # since this process started
    deleted: int = 0
    failures: int = 0  # failed task writes since start
    failing: set[int] = field(default_factory=set)  # tasks failing now (retried)
    failing_since: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_synced: float | None = None  # the last pass or batch that left it in step
    bundles: dict[str, BundleStatus] = field(default_factory=dict)


class StatusBoard:
    def __init__(self, events: Events, *, process: Callable[[], str], lag: Callable[[], float],
                 ready: Callable[[], tuple[bool, str]]):
        self.process = process
        self.lag = lag  # seconds the process as a whole is behind (an outage)
        self.ready = ready
        self.started = time.time()
        self.source = self.target = self.state = ""
        self.last_full: float | None = None
        self.last_error: tuple[float, str] | None = None  # the last outage's line
        self.last_audit: tuple[float, dict[str, Any]] | None = None
        self.projects: dict[int, ProjectStatus] = {}
        self._scope: set[int] | None = None  # the projects this process syncs (None: all)
        self._counted = 0.0
        self._lock = threading.Lock()
        events.subscribe(self._on_event)

    # ---------------------------------------------------------------- fed by the sync loop

    def describe(self, *, source: str, target: str, state: str) -> None:
        with self._lock:
            self.source, self.target, self.state = source, target, state

    def record(self, summary: Any, *, full: bool = False, tasks: Iterable[int] = ()) -> None:
        """A pass (``full``: it covered every task in scope) or a batch of ``tasks`` ended."""
        now = time.time()
        synced = set(tasks) - summary.failed_tasks
        with self._lock:
            if full:
                self.last_full = now
            for pid, tally in summary.projects.items():
                project = self._project(pid)
                project.written += tally.written
                project.deleted += tally.deleted
                project.failures += tally.failed
                if tally.last_error:
                    project.last_error, project.last_error_at = tally.last_error, now
            for project in self.projects.values():
                tally = summary.projects.get(project.id)
                failed = set(getattr(tally, "failed_tasks", ())) if tally else set()
                if full and (self._scope is None or project.id in self._scope):
                    project.failing = failed  # a full pass saw every task: its failures are the truth
                else:
                    project.failing = (project.failing - synced) | failed
                if len(project.failing) > MAX_FAILING:
                    project.failing = set(sorted(project.failing)[:MAX_FAILING])
                if project.failing:
                    project.failing_since = project.failing_since or now
                else:
                    project.failing_since = None
                    if full or tally is not None:
                        project.last_synced = now

    def due(self) -> bool:
        """Whether counts are worth refreshing after a batch."""
        return time.monotonic() - self._counted >= COUNTS_EVERY

    def refresh(self, source: Any, checkpoint: Any, *, shown: list[int] | None = None,
                synced: list[int] | None = None, holders: dict[int, str] | None = None) -> None:
        """Titles, labeled tasks and objects of the ``shown`` projects (None: all), one grouped
        query each. ``synced``: the projects this process syncs, when it shares the target
        (None: every shown one); ``holders``: which process holds each project."""
        projects = source.projects()
        wanted = [p for p in projects if not shown or p in shown]
        labeled = source.count_labeled_by_project(shown or ())
        objects = checkpoint.count_by_project()
        self._counted = time.monotonic()
        with self._lock:
            self._scope = set(synced) if synced is not None else (set(shown) if shown else None)
            for pid in list(self.projects):
                if pid not in wanted:
                    del self.projects[pid]  # deleted in Label Studio, or no longer configured
            for pid in wanted:
                project = self._project(pid)
                project.title = projects[pid].title
                project.labeled = labeled.get(pid, 0)
                project.objects = objects.get(pid, 0)
                project.holder = (holders or {}).get(pid)

    def _project(self, pid: int) -> ProjectStatus:
        project = self.projects.get(pid)
        if project is None:
            project = self.projects[pid] = ProjectStatus(pid)
        return project

    # ---------------------------------------------------------------- fed by events

    def _on_event(self, event: Event) -> None:
        data = event.data
        with self._lock:
            if event.name in ("bundle.published", "bundle.failed"):
                project = self._project(data["project_id"])
                previous = project.bundles.get(data["format"])
                status = event.name.split(".")[1]
                if status == "failed" and previous is not None and previous.status == "published":
                    # latest.json still names the previous build: show it, with the error.
                    previous.error, previous.at = data.get("error"), event.time
                    return
                key = data.get("latest_key") or data.get("key")
                project.bundles[data["format"]] = BundleStatus(
                    data["format"], status, data.get("build_id"), data.get("key"), data.get("latest_key"),
                    f"{self.target.rstrip('/')}/{key}" if key and self.target else key, data.get("created_at"),
                    data.get("tasks") or 0, data.get("error"), event.time)
            elif event.name == "sync.failed":
                self.last_error = (event.time, data.get("error", ""))
            elif event.name == "target.audit_mismatch":
                self.last_audit = (event.time, dict(data))

    # ---------------------------------------------------------------- read by the HTTP threads

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        ready, reason = self.ready()
        outage = self.lag()
        with self._lock:
            projects = []
            for project in sorted(self.projects.values(), key=lambda p: p.id):
                lag = max(outage, now - project.failing_since if project.failing_since else 0.0)
                projects.append({
                    "id": project.id, "title": project.title, "labeled_tasks": project.labeled,
                    "objects": project.objects, "holder": project.holder, "lag_seconds": round(lag, 1),
                    "last_synced": _iso(project.last_synced), "written": project.written, "deleted": project.deleted,
                    "failing_tasks": len(project.failing), "failures": project.failures,
                    "last_error": project.last_error, "last_error_at": _iso(project.last_error_at),
                    "bundles": [{"format": b.format, "status": b.status, "build_id": b.build_id, "key": b.key,
                                 "latest_key": b.latest_key, "url": b.url, "created_at": b.created_at,
                                 "tasks": b.tasks, "error": b.error, "at": _iso(b.at)}
                                for _, b in sorted(project.bundles.items())],
                })
            return {
                "process": {"name": self.process(), "version": __version__, "started": _iso(self.started),
                            "uptime_seconds": round(now - self.started), "source": self.source,
                            "target": self.target, "state": self.state, "ready": ready, "reason": reason,
                            "lag_seconds": round(outage, 1), "last_full_pass": _iso(self.last_full),
                            "last_outage": ({"at": _iso(self.last_error[0]), "error": self.last_error[1]}
                                            if self.last_error else None),
                            "last_audit_mismatch": ({"at": _iso(self.last_audit[0]), **self.last_audit[1]}
                                                    if self.last_audit else None)},
                "projects": projects,
                "generated": _iso(now),
            }


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------ HTML

_CSS = """
body{font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1rem;color:#1b1f24;
background:#f6f8fa}h1{font-size:1.3rem;margin:0 0 .5rem}h2{font-size:1.1rem;margin:1.2rem 0 .5rem}
.state{display:inline-block;padding:.1rem .6rem;border-radius:1rem;font-weight:600}
.ok{background:#d1f0d9;color:#0b5d1e}.bad{background:#ffd8d3;color:#8a1c0f}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}dt{color:#57606a}
dd{margin:0;overflow-wrap:anywhere}table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #d0d7de;vertical-align:top}
th{background:#eaeef2;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.err{color:#8a1c0f;overflow-wrap:anywhere}.muted{color:#57606a}code{overflow-wrap:anywhere;font-size:.85em}
ul{margin:0;padding-left:1rem}
@media (max-width:760px){table,thead,tbody,tr,td{display:block;width:auto}thead{display:none}
tr{margin:0 0 .8rem;border:1px solid #d0d7de;border-radius:.4rem;background:#fff}
td{border:0;border-bottom:1px solid #eaeef2;text-align:left}td.n{text-align:left}
td::before{content:attr(data-label);display:block;font-size:.8rem;color:#57606a}}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _ago(iso: str | None, now: datetime) -> str:
    if iso is None:
        return '<span class="muted">never</span>'
    seconds = (now - datetime.fromisoformat(iso.replace("Z", "+00:00"))).total_seconds()
    return f'<time datetime="{_e(iso)}" title="{_e(iso)}">{_e(_duration(seconds))} ago</time>'


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def render_html(status: dict[str, Any]) -> str:
    """The page for a ``StatusBoard.snapshot()``."""
    process = status["process"]
    now = datetime.fromisoformat(status["generated"].replace("Z", "+00:00"))
    replicas = any(p["holder"] for p in status["projects"])
    state = ('<span class="state ok">in step</span>' if process["ready"]
             else f'<span class="state bad">not ready</span> <span class="err">{_e(process["reason"])}</span>')
    facts = [("process", process["name"]), ("version", process["version"]),
             ("up for", _duration(process["uptime_seconds"])), ("source", process["source"]),
             ("target", process["target"]), ("state", process["state"])]
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    if process["last_outage"]:
        rows += (f'<dt>last outage</dt><dd>{_ago(process["last_outage"]["at"], now)}: '
                 f'<span class="err">{_e(process["last_outage"]["error"])}</span></dd>')
    head = ["Project", "Labeled tasks", "Objects in target", "Lag", "Last in step", "Failures", "Bundles"]
    if replicas:
        head.append("Held by")
    body = []
    for p in status["projects"]:
        failures = '<span class="muted">none</span>'
        if p["failing_tasks"] or p["last_error"]:
            failures = (f'{p["failing_tasks"]} failing now, {p["failures"]} since start'
                        + (f'<br><span class="err">{_e(p["last_error"])}</span> {_ago(p["last_error_at"], now)}'
                           if p["last_error"] else ""))
        bundles = '<span class="muted">none</span>'
        if p["bundles"]:
            items = []
            for b in p["bundles"]:
                line = f'<b>{_e(b["format"])}</b> '
                if b["build_id"]:
                    line += f'<code>{_e(b["url"])}</code> built {_ago(b["created_at"], now)}, {b["tasks"]} tasks'
                if b["error"]:
                    line += f' <span class="err">{_e(b["error"])}</span>'
                items.append(f"<li>{line}</li>")
            bundles = f"<ul>{''.join(items)}</ul>"
        cells = [
            ("Project", f'{p["id"]}: {_e(p["title"])}', ""),
            ("Labeled tasks", _e(p["labeled_tasks"]), "n"),
            ("Objects in target", _e(p["objects"]), "n"),
            ("Lag", _e(_duration(p["lag_seconds"])), "n"),
            ("Last in step", _ago(p["last_synced"], now), ""),
            ("Failures", failures, ""),
            ("Bundles", bundles, ""),
        ]
        if replicas:
            cells.append(("Held by", _e(p["holder"] or "nobody"), ""))
        body.append("<tr>" + "".join(f'<td data-label="{_e(label)}"{f" class={cls}" if cls else ""}>{value}</td>'
                                     for label, value, cls in cells) + "</tr>")
    table = (f"<table><thead><tr>{''.join(f'<th>{_e(h)}</th>' for h in head)}</tr></thead>"
             f"<tbody>{''.join(body)}</tbody></table>") if body else '<p class="muted">no projects yet</p>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>syncd: {"in step" if process["ready"] else "not ready"}</title>
<style>{_CSS}</style></head>
<body><h1>syncd {state}</h1>
<dl>{rows}</dl>
<h2>Projects</h2>
{table}
<p class="muted">Generated {_e(status["generated"])}; refreshes every {REFRESH_SECONDS} s.
The same data: <a href="status.json">status.json</a>; also <a href="metrics">metrics</a>,
<a href="readyz">readyz</a>.</p>
</body></html>
"""
