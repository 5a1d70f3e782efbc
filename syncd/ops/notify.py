"""Notifications: events POSTed to webhooks, and a heartbeat while syncd is in step.

Each event (``syncd.ops.events``) a webhook asked for becomes one JSON POST:

    {"event": "bundle.published", "time": "2026-11-30T22:41:07.123Z", "delivery": "<uuid>",
     "syncd": {"version": "0.1.0", "process": "host:1234", "target": "s3://labels/ls"},
     "data": {...the event's data...}}

with the headers ``X-Syncd-Event``, ``X-Syncd-Delivery`` and, when the webhook has a
``secret``, ``X-Syncd-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` (GitHub's scheme:
compare it in constant time with your own HMAC of the raw body).

Delivery never holds up syncing: events are queued (at most ``MAX_QUEUED``; beyond that the
oldest are dropped, counted and logged once) and sent by a thread of their own, each tried
``attempts`` times with capped, jittered backoff (``syncd.retry.delay``, honouring
``Retry-After``) on network errors, 408, 429 and 5xx; other answers are final. A delivery that
fails for good is one warning line naming the webhook (its host: paths often hold a token).

``syncd run`` sends at most one ``sync.completed`` per ``min_interval`` seconds per webhook:
batches in between are summed into the next one (``batches`` says how many). The heartbeat is a
GET of its URL every ``interval`` seconds, only while ``ready()`` says syncd is in step (a dead-man
switch: healthchecks.io and the like alert when the pings stop); ``syncd resync`` pings it once
after a run that synced everything.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from urllib.parse import urlsplit

from syncd import __version__
from syncd.ops.events import Event, Events
from syncd.ops.notify_config import NotifyConfig, Webhook
from syncd.retry import delay

log = logging.getLogger("syncd")

MAX_QUEUED = 1000  # deliveries waiting; a receiver that is down for long loses the oldest
SIGNATURE_HEADER = "X-Syncd-Signature-256"
_COUNTS = ("scanned", "written", "unchanged", "deleted", "orphaned", "failed")


def signature(secret: str, body: bytes) -> str:
    """The ``X-Syncd-Signature-256`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def where(url: str) -> str:
    """A URL as it may be logged: scheme and host only (a webhook's path is often its secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/..."


class Notifications:
    """Deliveries of one process; ``close`` sends what is queued (up to ``drain`` seconds)."""

    def __init__(self, config: NotifyConfig, events: Events, *, process: Callable[[], str], target: str,
                 ready: Callable[[], bool] = lambda: True, coalesce: bool = True):
        self.config = config
        self.process = process
        self.target = target
        self.ready = ready
        self.coalesce = coalesce  # syncd run: sync.completed at most once per min_interval
        self.failed = 0  # deliveries that failed for good (for tests and the status page)
        self.delivered = 0
        self._queue: collections.deque[tuple[Webhook, Event]] = collections.deque()
        self._pending: dict[int, tuple[Event, int]] = {}  # webhook index -> summed sync.completed, batches
        self._last_completed: dict[int, float] = {}  # webhook index -> monotonic time of the last one sent
        self._dropped = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._closing = False
        self._events = events
        events.subscribe(self._on_event)
        self._sender = threading.Thread(target=self._send_loop, name="syncd-notify", daemon=True)
        self._sender.start()
        self._beat: threading.Thread | None = None
        if config.heartbeat is not None and coalesce:
            self._beat = threading.Thread(target=self._beat_loop, name="syncd-heartbeat", daemon=True)
            self._beat.start()

    # ---------------------------------------------------------------- the publishing side

    def _on_event(self, event: Event) -> None:
        with self._cond:
            for index, hook in enumerate(self.config.webhooks):
                if not hook.wants(event.name):
                    continue
                if event.name == "sync.completed" and self.coalesce:
                    pending = self._pending.get(index)
                    self._pending[index] = (_summed(pending[0], event), pending[1] + 1) if pending else (event, 1)
                    continue
                if len(self._queue) >= MAX_QUEUED:
                    self._queue.popleft()
                    self._dropped += 1
                    if self._dropped == 1:
                        log.warning("notify: more than %d deliveries waiting; dropping the oldest", MAX_QUEUED)
                self._queue.append((hook, event))
            self._cond.notify()

    # ---------------------------------------------------------------- the sending side

    def _due_completed(self, now: float, flush: bool) -> list[tuple[Webhook, Event]]:
        due = []
        for index, (event, batches) in list(self._pending.items()):
            if flush or now - self._last_completed.get(index, -1e18) >= self.config.min_interval:
                del self._pending[index]
                self._last_completed[index] = now
                data = dict(event.data, batches=batches) if self.coalesce else event.data
                due.append((self.config.webhooks[index], Event(event.name, data, event.time)))
        return due

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    batch = self._due_completed(now, flush=self._closing)
                    if self._queue:
                        batch.append(self._queue.popleft())
                    if batch or self._closing:
                        break
                    waits = [self._last_completed.get(i, now) + self.config.min_interval - now for i in self._pending]
                    self._cond.wait(timeout=max(0.05, min(waits)) if waits else None)
            for hook, event in batch:
                self._deliver(hook, event)
            with self._cond:
                if self._closing and not self._queue and not self._pending:
                    return

    def _deliver(self, hook: Webhook, event: Event) -> bool:
        delivery = str(uuid.uuid4())
        body = json.dumps({
            "event": event.name, "time": _iso(event.time), "delivery": delivery,
            "syncd": {"version": __version__, "process": self.process(), "target": self.target},
            "data": event.data,
        }, ensure_ascii=False, default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"syncd/{__version__}",
                   "X-Syncd-Event": event.name, "X-Syncd-Delivery": delivery}
        if hook.secret:
            headers[SIGNATURE_HEADER] = signature(hook.secret, body)
        error = self._request(hook.url, body, headers)
        if error is None:
            self.delivered += 1
            return True
        self.failed += 1
        log.warning("notify: %s of %s to %s not delivered: %s", event.name, _iso(event.time), where(hook.url), error)
        return False

    def _request(self, url: str, body: bytes | None, headers: dict[str, str]) -> str | None:
        """POST ``body`` (GET when None), retried; None when delivered, else the last error."""
        error = "not tried"
        for attempt in range(1, self.config.attempts + 1):
            retry_after = None
            try:
                request = urllib.request.Request(url, data=body, headers=headers,
                                                 method="POST" if body is not None else "GET")
                with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                    response.read(65536)
                return None
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code} {exc.reason}"
                if exc.code not in (408, 429) and exc.code < 500:
                    return error  # the receiver refused it: trying again gives the same answer
                retry_after = _retry_after(exc.headers.get("Retry-After"))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                error = str(getattr(reason, "strerror", None) or reason)
            if attempt < self.config.attempts and self._stop.wait(delay(attempt, retry_after, base=1.0, cap=60.0)):
                return f"{error} (stopped before try {attempt + 1})"
        return f"{error} (after {self.config.attempts} tries)"

    # ---------------------------------------------------------------- heartbeat

    def _beat_loop(self) -> None:
        interval = self.config.heartbeat.interval
        while not self._stop.wait(interval):
            if self.ready():
                self.ping()

    def ping(self) -> bool:
        """Hit the heartbeat URL once (also ``syncd resync`` after a clean run)."""
        hb = self.config.heartbeat
        if hb is None:
            return False
        error = self._request(hb.url, None, {"User-Agent": f"syncd/{__version__}"})
        if error is not None:
            log.warning("notify: heartbeat %s failed: %s", where(hb.url), error)
        return error is None

    def close(self, drain: float = 10.0) -> None:
        """Send what is waiting (sync.completed at once), for at most ``drain`` seconds."""
        self._events.unsubscribe(self._on_event)
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._sender.join(drain)
        self._stop.set()  # ends retry waits and the heartbeat
        self._sender.join(1.0)
        if self._sender.is_alive():
            with self._cond:
                left = len(self._queue) + len(self._pending)
            log.warning("notify: %d notification(s) not sent before exiting", left)


def _summed(first: Event, later: Event) -> Event:
    """Two ``sync.completed`` of ``syncd run`` as one: counts added, the later one's time."""
    a, b = first.data, later.data
    data = {name: a.get(name, 0) + b.get(name, 0) for name in _COUNTS}
    data["seconds"] = round(a.get("seconds", 0) + b.get("seconds", 0), 3)
    data["full"] = a.get("full", False) or b.get("full", False)
    projects = {int(k): dict(v) for k, v in a.get("projects", {}).items()}
    for pid, tally in b.get("projects", {}).items():
        mine = projects.setdefault(int(pid), {"written": 0, "deleted": 0, "failed": 0, "last_error": None})
        for name in ("written", "deleted", "failed"):
            mine[name] += tally.get(name, 0)
        mine["last_error"] = tally.get("last_error") or mine.get("last_error")
    data["projects"] = projects
    data["failures"] = (a.get("failures", []) + b.get("failures", []))[:100]
    return Event(later.name, data, later.time)


def _retry_after(value: str | None) -> float | None:
    try:
        return min(float(value), 300.0) if value else None
    except ValueError:
        return None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def open_notifications(config: NotifyConfig | None, events: Events, *, process: Callable[[], str], target: str,
                       ready: Callable[[], bool] = lambda: True, one_shot: bool = False) -> Notifications | None:
    """Notifications for ``config`` (None when there is nothing to notify)."""
    if config is None:
        return None
    return Notifications(config, events, process=process, target=target, ready=ready, coalesce=not one_shot)

