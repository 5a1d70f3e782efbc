"""Operations: health and metrics over HTTP, and the systemd notify protocol.

``/healthz`` answers 200 while the process runs, ``/readyz`` 200 once the initial reconcile is
done and the database and target were reachable on the last cycle (503 with the reason
otherwise), ``/metrics`` serves Prometheus text.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, write_to_textfile
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from syncd.errors import ConfigError

log = logging.getLogger("syncd")


class Metrics:
    """The daemon's (and a one-shot resync's) Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.synced = Counter("syncd_objects_written", "Documents written to the target", registry=r)
        self.deleted = Counter("syncd_objects_deleted", "Objects deleted from the target", registry=r)
        self.failures = Counter("syncd_failures", "Failures by reason", ["reason"], registry=r)
        self.lag = Gauge("syncd_seconds_behind", "Seconds since the oldest change not yet in the target "
                         "(0 when in step)", registry=r)
        self.queue = Gauge("syncd_queue_depth", "Tasks waiting to be synced or retried", registry=r)
        self.last_success = Gauge("syncd_last_success_timestamp_seconds",
                                  "Unix time of the last sync cycle that completed without errors", registry=r)
        self.tasks = Gauge("syncd_tasks_tracked", "Objects recorded in the checkpoint", registry=r)
        self.ready = Gauge("syncd_ready", "1 when the initial reconcile is done and source and target "
                           "are reachable", registry=r)

    def record(self, summary) -> None:
        self.synced.inc(summary.written)
        self.deleted.inc(summary.deleted)
        if summary.failed:
            self.failures.labels("write" if summary.failed_tasks else "other").inc(summary.failed)

    def write_textfile(self, path: str) -> None:
        # temp file + rename, so node exporter's textfile collector never reads half a file
        write_to_textfile(path, self.registry)


class Health:
    def __init__(self) -> None:
        self.ready = False
        self.reason = "initial reconcile not done yet"
        self._lock = threading.Lock()

    def set(self, ready: bool, reason: str = "") -> None:
        with self._lock:
            self.ready, self.reason = ready, reason

    def get(self) -> tuple[bool, str]:
        with self._lock:
            return self.ready, self.reason


def serve(listen: str, health: Health, metrics: Metrics) -> ThreadingHTTPServer:
    """Start the HTTP endpoints on ``host:port`` in a daemon thread."""
    host, _, port = listen.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            elif path == "/readyz":
                ready, reason = health.get()
                self._send(200 if ready else 503, (b"ready\n" if ready else f"not ready: {reason}\n".encode()),
                           "text/plain")
            elif path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes every few seconds: not worth a log line
            pass

    try:
        server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), Handler)
    except OSError as exc:
        raise ConfigError(f"listen: cannot serve on {listen} ({exc.strerror}); choose a free address "
                          "or set listen: to empty to turn the endpoints off") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="syncd-http", daemon=True).start()
    return server


class Notifier:
    """systemd's notify protocol (sd_notify) over ``$NOTIFY_SOCKET``; a no-op without it."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET")
        self.address = ("\0" + address[1:]) if address and address.startswith("@") else address
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        watchdog = bool(usec and usec.isdigit() and (not pid or pid == str(os.getpid())))
        self.watchdog_interval = int(usec) / 2e6 if watchdog else None
        self._last_ping = 0.0

    def send(self, message: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode())
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", message, exc)

    def ready(self) -> None:
        self.send("READY=1\nSTATUS=in step")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def beat(self) -> None:
        """Call often from the main loop: pings the watchdog at half of ``WATCHDOG_USEC``."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")
